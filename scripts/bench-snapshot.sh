#!/usr/bin/env bash
# Benchmark: the snapshot of a 10-column table (default 5,000,000 rows) into the lake, against
# the database's own export of the same table, in the same run and each under the same write
# load (one session committing single-row updates of random rows, about 1,000 a second, for the
# whole run; the script prints the rate it reached):
#   MariaDB:    mariadb-dump --tab (the server writes the table as a tab-separated file)
#   PostgreSQL: COPY items TO STDOUT, received by psql into a file
# Prints rows/s for both, the ratio, and Headwater's peak RSS.
#
#   scripts/bench-snapshot.sh [mariadb|postgres|both] [ROWS]     (default: both 5000000)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
which=${1:-both}
rows=${2:-5000000}
chunk=${HEADWATER_BENCH_CHUNK:-20000}

work=$repo/.bench/snapshot
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_MARIADB_PORT=${HEADWATER_MARIADB_PORT:-33091}
export HEADWATER_POSTGRES_PORT=${HEADWATER_POSTGRES_PORT:-54351}
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
load_pid=
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  # HEADWATER_BENCH_KEEP=1 leaves the servers and tables up for repeated runs by hand
  [ -n "${HEADWATER_BENCH_KEEP:-}" ] || scripts/services.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

cargo build --release --locked --quiet
bin=$repo/target/release/headwater

timed() { # timed OUTFILE COMMAND... : wall seconds and peak RSS (KiB) of the command
  local out=$1; shift
  if [ -n "${HEADWATER_BENCH_PERF:-}" ] && [ "$1" = "$bin" ]; then
    set -- perf record -g -o "$out.perf" "$@"  # a CPU profile instead of a clean timing
  fi
  /usr/bin/time -f '%e %M %P' -o "$out" "$@"
}

report() { # report NAME NATIVE_LABEL NATIVE_TIMEFILE HEADWATER_TIMEFILE
  local ref_s ref_kb ref_cpu hw_s hw_kb hw_cpu
  read -r ref_s ref_kb ref_cpu <"$3"
  read -r hw_s hw_kb hw_cpu <"$4"
  awk -v rows="$rows" -v ref="$ref_s" -v hw="$hw_s" -v hwkb="$hw_kb" -v hwcpu="$hw_cpu" -v name="$1" -v label="$2" 'BEGIN {
    printf "%-10s %-28s: %8.2f s  %10.0f rows/s\n", name, label, ref, rows / ref
    printf "%-10s %-28s: %8.2f s  %10.0f rows/s  peak RSS %6.1f MiB  CPU %s\n", name, "headwater snapshot -> lake", hw, rows / hw, hwkb / 1024, hwcpu
    printf "%-10s ratio headwater/native (rows/s): %.2f\n", name, ref / hw
  }'
}

copied() { # copied LAKE: records committed in the lake
  grep -o '"total_records": [0-9]*' "$1/_headwater/manifest.json" | grep -o '[0-9]*$'
}

bench_mariadb() {
  scripts/services.sh start mariadb >/dev/null
  sql() { mariadb --no-defaults -uroot --socket="$HEADWATER_SERVICES_DIR/mariadb/sock" "$@"; }
  echo "mariadb: loading $rows rows..." >&2
  sql -e "CREATE DATABASE bench; CREATE TABLE bench.items (
    id BIGINT PRIMARY KEY, sku VARCHAR(32) NOT NULL, name VARCHAR(100) NOT NULL, price DECIMAL(10,2) NOT NULL,
    qty INT NOT NULL, weight DOUBLE, created DATETIME(6) NOT NULL, updated TIMESTAMP(6) NULL, active TINYINT NOT NULL,
    note TEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
  for ((low = 1; low <= rows; low += 100000)); do
    high=$((low + 99999)); [ $high -gt "$rows" ] && high=$rows
    sql -e "INSERT INTO bench.items SELECT seq, CONCAT('SKU-', seq), CONCAT('item number ', seq), seq % 100000 / 100, seq % 1000, seq / 7,
      '2024-01-01 00:00:00' + INTERVAL seq SECOND, '2024-06-01 00:00:00' + INTERVAL seq MICROSECOND, seq % 2,
      IF(seq % 10 = 0, NULL, 'a short note') FROM bench.seq_${low}_to_${high}"
  done
  # the write load: one session, one committed single-row update per millisecond or so
  sql <<SQL
DELIMITER //
CREATE PROCEDURE bench.write_load() BEGIN DECLARE k BIGINT; LOOP
  SET k = 1 + FLOOR(RAND() * $rows); UPDATE bench.items SET qty = qty + 1 WHERE id = k; DO SLEEP(0.001); END LOOP; END //
DELIMITER ;
SQL
  sql -e "CALL bench.write_load()" 2>/dev/null &
  load_pid=$!
  load_start=$(date +%s.%N)
  mkdir -p "$work/tab" && chmod 777 "$work/tab"
  timed "$work/mariadb-native.time" mariadb-dump --no-defaults -uroot --socket="$HEADWATER_SERVICES_DIR/mariadb/sock" \
    --tab="$work/tab" bench items
  cat >"$work/mariadb.toml" <<TOML
[source]
kind = "mysql"
url = "mysql://headwater:headwater@127.0.0.1:$HEADWATER_MARIADB_PORT"
name = "bench"
server_id = 9101
include = ["bench.items"]
snapshot = "initial"
snapshot_chunk_size = $chunk
[sink]
kind = "lake"
path = "$work/lake-mariadb"
commit_interval = "10s"
[state]
path = "$work/state-mariadb"
TOML
  HEADWATER_LOG=${HEADWATER_BENCH_LOG:-warn} timed "$work/mariadb-hw.time" "$bin" run --catch-up --config "$work/mariadb.toml"
  updates=$(sql -N -e "SELECT SUM(qty) - SUM(id % 1000) FROM bench.items")
  awk -v n="$updates" -v s="$load_start" -v e="$(date +%s.%N)" 'BEGIN { printf "mariadb    write load: %.0f updates/s during the run\n", n / (e - s) }'
  for id in $(sql -N -e "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'CALL bench.write_load%'"); do
    sql -e "KILL $id" 2>/dev/null || true
  done
  kill "$load_pid" 2>/dev/null || true; wait "$load_pid" 2>/dev/null || true; load_pid=
  landed=$(copied "$work/lake-mariadb")
  [ "$landed" -ge "$rows" ] || { echo "only $landed of $rows records landed" >&2; exit 1; }
  report mariadb "mariadb-dump --tab" "$work/mariadb-native.time" "$work/mariadb-hw.time"
}

bench_postgres() {
  scripts/services.sh start postgres >/dev/null
  export PGPASSWORD=postgres
  sql() { psql -q -h 127.0.0.1 -p "$HEADWATER_POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
  echo "postgres: loading $rows rows..." >&2
  sql -c "CREATE TABLE items (id bigint PRIMARY KEY, sku text NOT NULL, name text NOT NULL, price numeric(10,2) NOT NULL,
    qty int NOT NULL, weight double precision, created timestamp NOT NULL, updated timestamptz, active boolean NOT NULL, note text);
    GRANT SELECT ON items TO headwater;
    INSERT INTO items SELECT g, 'SKU-' || g, 'item number ' || g, (g % 100000) / 100.0, g % 1000, g / 7.0,
      timestamp '2024-01-01' + g * interval '1 second', timestamptz '2024-06-01 00:00:00+00' + g * interval '1 microsecond',
      g % 2 = 0, CASE WHEN g % 10 = 0 THEN NULL ELSE 'a short note' END FROM generate_series(1, $rows) g;" >/dev/null
  sql -c "VACUUM ANALYZE items" >/dev/null
  # the write load: one session, one committed single-row update per millisecond or so
  sql -c "DO \$\$ DECLARE k bigint; BEGIN LOOP
      k := 1 + floor(random() * $rows)::bigint; UPDATE items SET qty = qty + 1 WHERE id = k; COMMIT; PERFORM pg_sleep(0.001);
    END LOOP; END \$\$" 2>/dev/null &
  load_pid=$!
  load_start=$(date +%s.%N)
  timed "$work/postgres-native.time" sh -c "PGPASSWORD=postgres psql -q -h 127.0.0.1 -p $HEADWATER_POSTGRES_PORT -U postgres -d postgres -c 'COPY items TO STDOUT' >'$work/items.copy'"
  cat >"$work/postgres.toml" <<TOML
[source]
kind = "postgres"
url = "postgres://postgres:postgres@127.0.0.1:$HEADWATER_POSTGRES_PORT/postgres"
name = "bench"
slot = "bench_snapshot"
publication = "bench_snapshot"
include = ["public.items"]
snapshot = "initial"
snapshot_chunk_size = $chunk
[sink]
kind = "lake"
path = "$work/lake-postgres"
commit_interval = "10s"
[state]
path = "$work/state-postgres"
TOML
  HEADWATER_LOG=${HEADWATER_BENCH_LOG:-warn} timed "$work/postgres-hw.time" "$bin" run --catch-up --config "$work/postgres.toml"
  updates=$(sql -tA -c "SELECT sum(qty) - sum(id % 1000) FROM items")
  awk -v n="$updates" -v s="$load_start" -v e="$(date +%s.%N)" 'BEGIN { printf "postgres   write load: %.0f updates/s during the run\n", n / (e - s) }'
  sql -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'DO %write%' OR query LIKE 'DO \$\$ DECLARE k%'" >/dev/null 2>&1 || true
  kill "$load_pid" 2>/dev/null || true; wait "$load_pid" 2>/dev/null || true; load_pid=
  landed=$(copied "$work/lake-postgres")
  [ "$landed" -ge "$rows" ] || { echo "only $landed of $rows records landed" >&2; exit 1; }
  report postgres "COPY items TO STDOUT (psql)" "$work/postgres-native.time" "$work/postgres-hw.time"
}

case $which in
  mariadb) bench_mariadb ;;
  postgres) bench_postgres ;;
  both) bench_mariadb; bench_postgres ;;
  *) echo "usage: $0 [mariadb|postgres|both] [ROWS]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Benchmark: a steady trickle of changes from MariaDB into the Delta sink (mirror and changelog),
# as a pipeline at rest sees it: RATE changes/s (inserts, updates, deletes) for MINUTES minutes.
# Prints the live files per table (sampled every 30 s: the most seen and at the end), how many
# compactions ran, and bytes written per change: the Parquet files added (from the tables' logs),
# the logs themselves, and everything the process wrote (/proc/<pid>/io, checkpoint included).
#
#   scripts/bench-delta-trickle.sh [MINUTES] [RATE]        (default 10 minutes, 50 changes/s)
#   COMMIT_INTERVAL=1s scripts/bench-delta-trickle.sh      (default: the sink's default, 10s)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
minutes=${1:-10}
rate=${2:-50}
commit_interval=${COMMIT_INTERVAL:-10s}

work=$repo/.bench/trickle
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_MARIADB_PORT=${HEADWATER_MARIADB_PORT:-33082}
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  scripts/services.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

cargo build --release --locked --quiet
# shellcheck source=scripts/python-readers.sh
source scripts/python-readers.sh
install_python_readers
bin=$repo/target/release/headwater
scripts/services.sh start mariadb >/dev/null
sql() { mariadb --no-defaults -uroot --socket="$HEADWATER_SERVICES_DIR/mariadb/sock" "$@"; }
sql -e "CREATE DATABASE bench; USE bench; CREATE TABLE bench.items (
  id BIGINT PRIMARY KEY, sku VARCHAR(32) NOT NULL, name VARCHAR(100) NOT NULL, price DECIMAL(10,2) NOT NULL,
  qty INT NOT NULL, weight DOUBLE, created DATETIME(6) NOT NULL, updated TIMESTAMP(6) NULL, active TINYINT NOT NULL,
  note TEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
  INSERT INTO bench.items SELECT seq, CONCAT('SKU-', seq), CONCAT('item number ', seq), seq % 100000 / 100, seq % 1000,
    seq / 7, '2024-01-01 00:00:00' + INTERVAL seq SECOND, NULL, seq % 2, 'seed' FROM seq_1_to_10000;"

cat >"$work/headwater.toml" <<TOML
[source]
kind = "mysql"
url = "mysql://headwater:headwater@127.0.0.1:$HEADWATER_MARIADB_PORT"
name = "bench"
server_id = 9101
include = ["bench.*"]
snapshot = "initial"
[sink]
kind = "delta"
path = "$work/delta"
commit_interval = "$commit_interval"
[state]
path = "$work/state"
TOML
HEADWATER_LOG=info,headwater_lakehouse=debug,headwater_delta=debug "$bin" run --config "$work/headwater.toml" 2>"$work/headwater.log" &
hw_pid=$!
pids+=("$hw_pid")
mirror=$work/delta/mirror/bench.bench.items
changelog=$work/delta/changelog/bench.bench.items
count_rows() { # count_rows TABLE: rows in the Delta table, 0 before it exists
  python3 -c "
import deltalake, sys
try: print(deltalake.DeltaTable(sys.argv[1]).to_pyarrow_dataset().count_rows())
except Exception: print(0)" "$1"
}
live_files() {
  python3 -c "
import deltalake, sys
try: print(len(deltalake.DeltaTable(sys.argv[1]).file_uris()))
except Exception: print(0)" "$1"
}
wait_rows() { # wait_rows TABLE N WHAT: until the table holds N rows (the pipeline caught up)
  until [ "$(count_rows "$1")" -ge "$2" ]; do
    kill -0 "$hw_pid" 2>/dev/null || { echo "headwater exited; see $work/headwater.log" >&2; exit 1; }
    sleep 1
  done
}
wait_rows "$mirror" 10000 "the snapshot"
echo "snapshot of 10,000 rows in the mirror; trickle of $rate changes/s for $minutes min..." >&2

# one client, one change per statement (autocommit), paced by the server's SLEEP: 6 in 10 are
# inserts, 3 updates of a random live row, 1 a delete
python3 - "$minutes" "$rate" >"$work/load.sql" <<'PY'
import random, sys
minutes, rate = float(sys.argv[1]), float(sys.argv[2])
random.seed(7)
live, next_id = list(range(1, 10001)), 10001
print("USE bench;")
for _ in range(int(minutes * 60 * rate)):
    roll = random.random()
    if roll < 0.6 or len(live) < 100:
        print(f"INSERT INTO items VALUES ({next_id}, 'SKU-{next_id}', 'item number {next_id}', {next_id % 100000 / 100:.2f}, "
              f"{next_id % 1000}, {next_id / 7}, NOW(6), NULL, 1, 'a short note');")
        live.append(next_id); next_id += 1
    elif roll < 0.9:
        print(f"UPDATE items SET qty = qty + 1, updated = NOW(6) WHERE id = {random.choice(live)};")
    else:
        victim = live.pop(random.randrange(len(live)))
        print(f"DELETE FROM items WHERE id = {victim};")
    print(f"DO SLEEP({1 / rate:.4f});")
PY
changes=$(grep -c -v -e '^DO SLEEP' -e '^USE' "$work/load.sql")
sql <"$work/load.sql" &
load_pid=$!
pids+=("$load_pid")
started=$(date +%s)
most_mirror=0
most_changelog=0
while kill -0 "$load_pid" 2>/dev/null; do
  sleep 30
  m=$(live_files "$mirror")
  c=$(live_files "$changelog")
  [ "$m" -gt "$most_mirror" ] && most_mirror=$m
  [ "$c" -gt "$most_changelog" ] && most_changelog=$c
  echo "  after $(($(date +%s) - started)) s: live files mirror $m, changelog $c" >&2
done
wait "$load_pid"
elapsed=$(($(date +%s) - started))
# every change of the load in the changelog (the snapshot's 10,000 copied rows as well)
wait_rows "$changelog" $((10000 + changes)) "the last commit"
written=$(awk '/^wchar:/ { print $2 }' "/proc/$hw_pid/io")
kill -TERM "$hw_pid"
wait "$hw_pid" || true

python3 - "$mirror" "$changelog" <<'PY' >"$work/logs.txt"
import glob, json, os, sys
for table in sys.argv[1:]:
    added, log_bytes, compactions = 0, 0, 0
    for path in glob.glob(os.path.join(table, "_delta_log", "*.json")):
        log_bytes += os.path.getsize(path)
        for line in open(path):
            action = json.loads(line)
            if "add" in action:
                added += action["add"]["size"]
            if action.get("commitInfo", {}).get("operation") == "OPTIMIZE":
                compactions += 1
    log_bytes += sum(os.path.getsize(p) for p in glob.glob(os.path.join(table, "_delta_log", "*.parquet")))
    print(added, log_bytes, compactions)
PY
{ read -r mirror_added mirror_log mirror_compactions; read -r log_added log_log log_compactions; } <"$work/logs.txt"
final_mirror=$(live_files "$mirror")
final_changelog=$(live_files "$changelog")
awk -v n="$changes" -v s="$elapsed" -v mm="$most_mirror" -v mc="$most_changelog" -v fm="$final_mirror" -v fc="$final_changelog" \
  -v ma="$mirror_added" -v ml="$mirror_log" -v mx="$mirror_compactions" -v la="$log_added" -v ll="$log_log" -v lx="$log_compactions" \
  -v w="$written" -v ci="$commit_interval" 'BEGIN {
  printf "trickle: %d changes in %d s (%.1f/s), commit_interval %s\n", n, s, n / s, ci
  printf "live files, mirror   : at most %d, at the end %d (%d compactions)\n", mm, fm, mx
  printf "live files, changelog: at most %d, at the end %d (%d compactions)\n", mc, fc, lx
  printf "bytes per change: mirror Parquet %.0f + log %.0f; changelog Parquet %.0f + log %.0f; all the process wrote %.0f\n",
    ma / n, ml / n, la / n, ll / n, w / n
}'

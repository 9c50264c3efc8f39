#!/usr/bin/env bash
# Benchmark: commit-to-durable latency (p50, p99, max) of MariaDB changes through a running
# Headwater at a steady 1,000 and 10,000 changes/s (100 transactions a second), into Kafka (tansu,
# JSON), into the lake and into Delta tables (commit_interval = COMMIT_INTERVAL, default 1s). A
# change's latency is from the server's clock just after its COMMIT to the moment a reader sees it
# durable: a Kafka consumer receiving it, its lake file appearing under its final name, or the
# Delta commit adding its changelog file (scripts/bench_latency.py).
# Goals: Kafka p99 <= 100 ms; lake and Delta p99 <= commit_interval + 50 ms.
#
#   scripts/bench-latency.sh [SECONDS] [COMMIT_INTERVAL]        (default 20 1s)
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
seconds=${1:-20}
commit_interval=${2:-1s}

work=$repo/.bench/latency
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_MARIADB_PORT=${HEADWATER_MARIADB_PORT:-33101}
export HEADWATER_KAFKA_PORT=${HEADWATER_KAFKA_PORT:-19202}
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
# shellcheck source=scripts/python-readers.sh
source scripts/python-readers.sh
install_python_readers
bin=$repo/target/release/headwater
scripts/services.sh start mariadb kafka >/dev/null
socket=$HEADWATER_SERVICES_DIR/mariadb/sock
sql() { mariadb --no-defaults -uroot --socket="$socket" "$@"; }
brokers=127.0.0.1:$HEADWATER_KAFKA_PORT
sql -e "CREATE DATABASE bench"

metrics_port=19387
run_pipeline() { # SINK_KIND: starts Headwater in the background, waits until it is ready
  local kind=$1 sink
  case $kind in
    kafka) sink="kind = \"kafka\"
brokers = \"$brokers\"
topic_prefix = \"lat\"
format = \"json\"
partitions = 1" ;;
    lake) sink="kind = \"lake\"
path = \"$work/lake\"
commit_interval = \"$commit_interval\"" ;;
    delta) sink="kind = \"delta\"
path = \"$work/delta\"
commit_interval = \"$commit_interval\"" ;;
  esac
  cat >"$work/$kind.toml" <<TOML
[source]
kind = "mysql"
url = "mysql://headwater:headwater@127.0.0.1:$HEADWATER_MARIADB_PORT"
name = "lat"
server_id = 9201
include = ["bench.*"]
snapshot = "never"
[sink]
$sink
[state]
path = "$work/state-$kind"
[metrics]
listen = "127.0.0.1:$metrics_port"
TOML
  HEADWATER_LOG=warn "$bin" run --config "$work/$kind.toml" 2>"$work/$kind.log" &
  headwater_pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$metrics_port/ready" >/dev/null && return 0
    kill -0 "$headwater_pid" 2>/dev/null || { cat "$work/$kind.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "headwater did not become ready in 60 s" >&2; exit 1
}

results=$work/results.txt
: >"$results"
for kind in kafka lake delta; do
  run_pipeline "$kind"
  for rate in 1000 10000; do
    table=lat_${kind}_$rate
    sql -e "CREATE TABLE bench.$table (id BIGINT PRIMARY KEY, v VARCHAR(10))"
    case $kind in
      kafka) where=(kafka "$brokers" "lat.bench.$table") ;;
      lake) where=(lake "$work/lake/lat.bench.$table") ;;
      delta) where=(delta "$work/delta/changelog/lat.bench.$table") ;;
    esac
    python3 scripts/bench_latency.py "$socket" bench "$table" "$rate" "$seconds" "${where[@]}" | tee -a "$results"
  done
  kill "$headwater_pid"; wait "$headwater_pid" || true; headwater_pid=
done
echo
echo "commit-to-durable latency, MariaDB -> Headwater (lake and Delta commit_interval = $commit_interval):"
cat "$results"

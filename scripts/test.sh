#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts the real servers the tests use
# (scripts/services.sh), installs the independent Avro reader, checks formatting and lints,
# then runs every test.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# build and test prerequisites: OpenSSL headers for librdkafka, /usr/bin/time for RSS checks,
# openssl for the TLS tests' certificates, Prometheus (server and promtool) for the metrics tests
missing=()
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev pkg-config)
[ -x /usr/bin/time ] || missing+=(time)
command -v promtool >/dev/null || missing+=(prometheus)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

scripts/services.sh start mariadb postgres postgres18 kafka registry s3 >/dev/null
# shellcheck disable=SC1091
source .services/env.sh

# readers Headwater did not write (scripts/python-readers.sh names them)
# shellcheck source=scripts/python-readers.sh
source scripts/python-readers.sh
install_python_readers

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# The PostgreSQL tests once more against PostgreSQL 18 (the pass above ran them on Debian's
# 15): the whole PostgreSQL test binaries, and the PostgreSQL tests of the mixed ones.
# postgres_tls stays on 15 only: the PyPI build of 18 has no OpenSSL.
if [ $# -eq 0 ]; then
  echo "== the PostgreSQL tests against PostgreSQL 18 ($HEADWATER_POSTGRES18_URL)" | tee -a "$log"
  pg18=(env HEADWATER_POSTGRES_URL="$HEADWATER_POSTGRES18_URL" HEADWATER_POSTGRES_ADMIN_URL="$HEADWATER_POSTGRES18_ADMIN_URL")
  "${pg18[@]}" cargo test --locked --no-fail-fast --test postgres_source --test postgres_snapshot \
    --test postgres_crash --test postgres_recovery 2>&1 | tee -a "$log" || status=1
  "${pg18[@]}" cargo test --locked --no-fail-fast --test retention --test network_faults --test identifiers \
    --test metrics --test envelope_golden --test lakehouse_types --test delta_sink --test iceberg_sink --test kafka_sink \
    -- postgres 2>&1 | tee -a "$log" || status=1
fi
# One closing line over every test binary of both passes.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
# the fuzz targets keep compiling and their crash regressions stay fixed: a short,
# deterministic run of each (scripts/fuzz.sh for long runs)
fuzz_status=0
bash scripts/fuzz.sh --ci || fuzz_status=$?
if [ "$fuzz_status" -eq 0 ]; then echo "fuzz targets: all passed"; else echo "fuzz targets: FAILED"; status=$fuzz_status; fi
exit $status

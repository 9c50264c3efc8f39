#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of every decoder that reads bytes
# from outside: see fuzz/src/lib.rs for the targets.
#
#   scripts/fuzz.sh --ci                 # the test suite's run: the crash regressions, then
#                                        # 20,000 executions per target from a fixed seed
#                                        # (the same inputs every time: a failure repeats)
#   scripts/fuzz.sh 600                  # every target for 600 s each
#   scripts/fuzz.sh 0 binlog_rows 10000000   # one target for 10,000,000 executions
#
# Runs on stable Rust with `--sanitizer none` (Rust code needs no AddressSanitizer to find
# panics, overflows and hangs; the decoders have no unsafe code). Each target starts from the
# committed seeds (fuzz/seeds/<target>, cut from the test suite's real traffic by
# fuzz/seeds.py), every input that once crashed it (fuzz/regressions/<target>, read first),
# and its growing corpus in fuzz/corpus/<target>. A crash writes its input to
# fuzz/artifacts/<target>/ and fails the script: fix it, add a unit test where the bug was, and
# copy the input to fuzz/regressions/<target>/.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo/fuzz"
seconds=${1:-10}
only=${2:-}
runs=${3:-0}
fixed_seed=()
if [ "$seconds" = "--ci" ]; then
  seconds=0 runs=20000 fixed_seed=(-seed=1)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build --sanitizer none --release
targets=$(cargo fuzz list)
[ -n "$only" ] && targets=$only
for target in $targets; do
  mkdir -p "corpus/$target" "regressions/$target"
  limits=(-rss_limit_mb=1024 -timeout=10 -max_len=65536 -print_final_stats=1 "${fixed_seed[@]}")
  if [ "$runs" -gt 0 ]; then limits+=(-runs="$runs"); else limits+=(-max_total_time="$seconds"); fi
  echo "== fuzz $target"
  log="target/fuzz-$target.log"
  status=0
  cargo fuzz run --sanitizer none --release "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
    "${limits[@]}" >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|INFO: seed corpus|Done )' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed (exit $status): its input is in fuzz/artifacts/$target/, the log in fuzz/$log" >&2
    exit "$status"
  fi
done

#!/usr/bin/env bash
# Fuzz every parser storegate has (fuzz/fuzz_targets, one per parser) with
# cargo-fuzz / libFuzzer, each for SECONDS (default 600), growing the
# corpora in fuzz/corpus. A crash stops the script with the input saved in
# fuzz/artifacts/<target>/ and the command that reproduces it.
#
#   scripts/fuzz.sh            # 10 minutes per target, AddressSanitizer
#   scripts/fuzz.sh 15 --ci    # what CI runs: 15 s per target, quick build
#
# libFuzzer needs nightly-only compiler flags; RUSTC_BOOTSTRAP lets the
# stable toolchain accept them, so no second toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}
build=()
if [ "${2:-}" = "--ci" ]; then
  # No sanitizer and no optimisation: builds in a fraction of the time;
  # overflow checks and debug assertions stay on.
  build=(--dev --sanitizer none)
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
cargo fuzz build "${build[@]}"
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  log="target/fuzz-$target.log"
  if ! cargo fuzz run "${build[@]}" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added)|^Done' "$log" || true
done

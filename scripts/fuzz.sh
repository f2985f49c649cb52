#!/usr/bin/env bash
# Runs the property tests of tests/fuzz.rs (descriptor parser, server URL
# normalisation, hash-from-URL extraction, config loader) with many more
# inputs than the normal test run, and prints how many each tried.
#
#   scripts/fuzz.sh            # 100,000 inputs per property
#   CASES=1000000 scripts/fuzz.sh
#
# Not part of the test command: it takes minutes. A failure prints the
# smallest failing input, and proptest keeps it in
# tests/fuzz.proptest-regressions so the normal run tries it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${CASES:-100000}"
cargo test --locked --release --test fuzz --no-run --quiet
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test --locked --release --test fuzz -- --test-threads 2 2>&1 |
    grep -E '^test |test result|minimal failing|panicked'
properties=$(grep -c '^    fn ' tests/fuzz.rs)
echo "fuzz: $properties properties x $cases inputs in $(( $(date +%s) - start )) s"

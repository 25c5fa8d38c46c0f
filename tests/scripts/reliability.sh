#!/usr/bin/env bash
# make test-reliability: the R scenarios on every backend. RELIABILITY_SCALE=full (default)
# runs the sizes the issue asks for; any other value (CI uses "ci") a reduced size.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo=${CARGO:-cargo}
export RELIABILITY_SCALE=${RELIABILITY_SCALE:-full}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "==> reliability suite (scale: $RELIABILITY_SCALE)"
# One at a time: the scenarios measure memory, connections and timing.
$cargo test --workspace --test reliability -- --test-threads 1 --nocapture 2>&1 | tee "$log"
$cargo test --workspace --lib -- --ignored --test-threads 1 --nocapture r5_ 2>&1 | tee -a "$log"
echo
echo "==> figures"
grep -oE 'R[0-9]+[ :].*' "$log" || true

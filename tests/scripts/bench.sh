#!/usr/bin/env bash
# make bench: release build, then the load scenarios against the release binary.
# Usage: bench.sh [all|p1|p2|p3|p4|p5|p3-replicas] [extra arbor-bench flags, e.g. --quick --backends sqlite]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo=${CARGO:-cargo}
scenario=${1:-all}
shift || true
# P2 holds ~10,000 client, server and provider sockets at once.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
$cargo build --release --quiet -p arbor -p bench
exec target/release/arbor-bench "$scenario" --arbor-bin target/release/arbor "$@"

#!/usr/bin/env bash
# Builds herald-node and the baseline in release mode and runs the echo benchmark.
# Extra arguments go to echo-bench (e.g. --requests 500000 --rounds 7).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p herald-stdio -p herald-benches
exec target/release/echo-bench "$@"

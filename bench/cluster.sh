#!/usr/bin/env bash
# Cluster benchmark (issue 13): same-node vs cross-node signaling on a real redis-server; see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PEERCALL_BIN="${PEERCALL_BIN:-$PWD/target/release/peercall}"
exec timeout 300 node bench/cluster.mjs

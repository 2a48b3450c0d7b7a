#!/usr/bin/env bash
# Cluster benchmark (issue 13): one node without Redis vs two nodes on a real redis-server, side by side (median of
# RUNS=3 runs); see bench/cluster.mjs for what is measured and docs/benchmarks.md for the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export PEERCALL_BIN="${PEERCALL_BIN:-$PWD/target/release/peercall}"
exec timeout 900 node bench/cluster.mjs

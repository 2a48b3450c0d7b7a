#!/usr/bin/env bash
# Idle call cost, in one script: CPU of the whole browser (every Chromium process) while a peercall call sits idle
# (alone in a room; two in a call, per page) against a bare page that only shows its camera, same Chromium, same
# run. Details: bench/idle-cpu.mjs, bench/README.md.
#
# Environment knobs (defaults in brackets): WINDOWS [3] WINDOW_S [6] SETTLE_S [3] OUT [bench/results/idle-cpu-DATE]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

OUT=${OUT:-bench/results/idle-cpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p peercall
[ -d tests/node_modules/playwright-core ] || npm ci --prefix tests --no-audit --no-fund
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -1 || true)"
  echo "peercall: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- web crates || echo ' (modified)')"
  echo "settings: WINDOWS=${WINDOWS:-3} WINDOW_S=${WINDOW_S:-6} SETTLE_S=${SETTLE_S:-3}"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"
check_quiet | tee -a "$OUT/machine.txt"
PEERCALL_BIN="$TARGET/release/peercall" OUT="$OUT" timeout 600 node bench/idle-cpu.mjs | tee "$OUT/summary.md"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"

#!/usr/bin/env bash
# Call set-up benchmark, in one script: join → first remote video frame in peercall's room page (for the one who
# joins and for the one already in the room) against the in-page limit (two RTCPeerConnections in one page),
# same Chromium, same run, with the per-phase breakdown. Details: bench/call-setup.mjs, bench/README.md.
#
# Environment knobs (defaults in brackets): TRIALS [10] WARMUP [1] OUT [bench/results/call-setup-DATE]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

OUT=${OUT:-bench/results/call-setup-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p peercall
[ -d tests/node_modules/playwright-core ] || npm ci --prefix tests --no-audit --no-fund
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -1 || true)"
  echo "peercall: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- web crates || echo ' (modified)')"
  echo "settings: TRIALS=${TRIALS:-10} WARMUP=${WARMUP:-1}"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"
check_quiet | tee -a "$OUT/machine.txt"
PEERCALL_BIN="$TARGET/release/peercall" OUT="$OUT" timeout 900 node bench/call-setup.mjs | tee "$OUT/summary.md"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"

#!/usr/bin/env bash
# Idle call cost, in one script: CPU of the whole browser (every Chromium process) while a peercall call sits idle
# (alone in a room; two in a call, per page) against a bare page that only shows its camera, same Chromium, same
# run. Details: bench/idle-cpu.mjs, bench/README.md.
#
# Environment knobs (defaults in brackets): WINDOWS [3] WINDOW_S [6] SETTLE_S [3] OUT [bench/results/idle-cpu-DATE]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

run_browser_bench idle-cpu 600 "WINDOWS=${WINDOWS:-3} WINDOW_S=${WINDOW_S:-6} SETTLE_S=${SETTLE_S:-3}"

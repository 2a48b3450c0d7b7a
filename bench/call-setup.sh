#!/usr/bin/env bash
# Call set-up benchmark, in one script: join → first remote video frame in peercall's room page (for the one who
# joins and for the one already in the room) against the in-page limit (two RTCPeerConnections in one page),
# same Chromium, same run, with the per-phase breakdown. Details: bench/call-setup.mjs, bench/README.md.
#
# Environment knobs (defaults in brackets): TRIALS [10] WARMUP [1] OUT [bench/results/call-setup-DATE]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

run_browser_bench call-setup 900 "TRIALS=${TRIALS:-10} WARMUP=${WARMUP:-1}"

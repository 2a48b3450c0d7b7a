#!/usr/bin/env bash
# Side-by-side signaling benchmark on this machine, in one script:
#   - peercall signal (release build), per-connection and per-address limits raised (every client is 127.0.0.1),
#   - the PeerJS server (npm `peer`, bench/peerjs/server.mjs, Node),
# both driven by the same load generator (bench/loadgen signal) with the same message pattern: CLIENTS clients in
# rooms of two, each sending PAYLOAD-byte messages to its partner, relayed by the server.
#
# Reports (bench/summarize.py signal): the highest message rate each sustains with >= 99.9 % delivered and
# p99 <= 50 ms (a rate sweep; median of REPEAT sweeps), p50/p99 latency at LAT_RATE (a rate both sustain),
# server CPU per message, and HOLD_COUNT idle connections held HOLD_SECS: memory per connection above the idle
# process (VmRSS from /proc). Everything runs on 127.0.0.1; every step is bounded in count and time.
#
# Environment knobs (defaults in brackets): REPEAT [3] CLIENTS [200] PAYLOAD [200] STEP [3] (seconds per sweep
# step) START_RATE [5000] MAX_RATE [1000000] LAT_RATE [20000] HOLD_COUNT [10000] HOLD_SECS [20] THREADS [2]
# (generator threads) ONLY [peercall,peerjs] OUT [bench/results/signal-DATE]
# MODE [all]: all = rate sweep, then one memory run; rate = the sweep only; memory = REPEAT memory runs only (each a
# fresh server), summarized as the run with the median bytes per connection. The one command for the memory figure:
#   ONLY=peercall MODE=memory bash bench/signal.sh     (add peerjs to ONLY for the side-by-side)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

REPEAT=${REPEAT:-3}
CLIENTS=${CLIENTS:-200}
PAYLOAD=${PAYLOAD:-200}
STEP=${STEP:-3}
START_RATE=${START_RATE:-5000}
MAX_RATE=${MAX_RATE:-1000000}
LAT_RATE=${LAT_RATE:-20000}
HOLD_COUNT=${HOLD_COUNT:-10000}
HOLD_SECS=${HOLD_SECS:-20}
THREADS=${THREADS:-2}
ONLY=${ONLY:-peercall,peerjs}
MODE=${MODE:-all}
case $MODE in all | rate | memory) ;; *) echo "MODE must be all, rate or memory, not $MODE" >&2; exit 1 ;; esac
OUT=${OUT:-bench/results/signal-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p peercall -p peercall-loadgen
PEERCALL=$TARGET/release/peercall
LG=$TARGET/release/peercall-loadgen
[ -d bench/peerjs/node_modules/peer ] || npm ci --prefix bench/peerjs --no-audit --no-fund
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((HOLD_COUNT + 1000)) ]; then
  echo "open-file limit $(ulimit -n) is too low for HOLD_COUNT=$HOLD_COUNT (the generator and the server each need one per client)" >&2
  exit 1
fi

PID=""
cleanup() { stop_pid "$PID"; }
trap cleanup EXIT

start_server() { # name port
  local name=$1 port=$2
  case $name in
    peercall)
      # Limits raised for the benchmark: they protect against one abusive address, and here every client is
      # 127.0.0.1 sending far more than a browser would. Keepalive stays at its defaults.
      "$PEERCALL" signal --http "127.0.0.1:$port" --max-messages-per-sec 1000000 \
        --max-connections-per-ip 1000000 --max-joins-per-min 0 --max-new-rooms-per-min 0 --max-rooms 1000000 \
        --log-level warn >"$OUT/$name.server.log" 2>&1 &
      PID=$!
      ;;
    peerjs)
      node bench/peerjs/server.mjs "$port" >"$OUT/$name.server.log" 2>&1 &
      PID=$!
      ;;
  esac
  wait_listen tcp "$port"
  sleep 1 # let the process settle before its idle VmRSS is read
}

run_lg() { # output-name args...
  local name=$1
  shift
  echo "+ loadgen $*" >&2
  timeout 1200 "$LG" "$@" --json >"$OUT/$name.out" 2> >(tee "$OUT/$name.log" >&2)
  result_of "$OUT/$name.out" >"$OUT/$name.json"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "node: $(node --version), peer: $(node -p "require('./bench/peerjs/node_modules/peer/package.json').version")"
  echo "peercall: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates bench/loadgen || echo ' (modified)')"
  echo "settings: MODE=$MODE REPEAT=$REPEAT CLIENTS=$CLIENTS PAYLOAD=$PAYLOAD STEP=$STEP START_RATE=$START_RATE LAT_RATE=$LAT_RATE HOLD_COUNT=$HOLD_COUNT HOLD_SECS=$HOLD_SECS THREADS=$THREADS"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"
check_quiet | tee -a "$OUT/machine.txt"

for name in peercall peerjs; do
  case ",$ONLY," in *",$name,"*) ;; *) continue ;; esac
  echo "=== $name ===" >&2
  if [ "$MODE" != memory ]; then
    port=$(free_port)
    start_server "$name" "$port"
    run_lg "$name.rate" signal --protocol "$name" --server "127.0.0.1:$port" --clients "$CLIENTS" \
      --payload "$PAYLOAD" --duration "$STEP" --start-rate "$START_RATE" --max-rate "$MAX_RATE" \
      --latency-rate "$LAT_RATE" --repeat "$REPEAT" --threads "$THREADS" --pid "$PID"
    stop_pid "$PID"
    PID=""
  fi
  [ "$MODE" != rate ] || continue
  # Memory: a fresh server, HOLD_COUNT idle connections (joined, in rooms of two), held, then one message each.
  # MODE=memory repeats it REPEAT times (name.conns, name.conns.2, ...) so the summary can take a median.
  runs=1
  [ "$MODE" != memory ] || runs=$REPEAT
  for i in $(seq 1 "$runs"); do
    suffix=""
    [ "$i" = 1 ] || suffix=".$i"
    port=$(free_port)
    start_server "$name" "$port"
    run_lg "$name.conns$suffix" signal --protocol "$name" --server "127.0.0.1:$port" --clients "$HOLD_COUNT" \
      --payload "$PAYLOAD" --hold "$HOLD_SECS" --start-rate 0 --threads "$THREADS" --pid "$PID"
    stop_pid "$PID"
    PID=""
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"

python3 bench/summarize.py signal "$OUT" | tee "$OUT/summary.md"

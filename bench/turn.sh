#!/usr/bin/env bash
# Side-by-side TURN benchmark on this machine, in one script:
#   - the raw UDP forwarder (peercall-loadgen forwarder): the physical limit of batched UDP forwarding here,
#   - peercall turn (release build),
#   - coturn (Debian's turnserver) with the same listening/relay settings and loopback peers allowed,
# all driven by the same load generator (bench/loadgen) with the same allocation count and packet size.
#
# Reports: relayed packets/s at < 0.1 % loss (open loop: rate sweep, median of REPEAT sweeps), relayed packets/s
# in a closed loop (each allocation keeps WINDOWS packets in flight, median of REPEAT runs), server CPU per
# relayed packet next to each rate (from /proc/PID/stat), latency at a fixed
# rate every server sustains, server CPU at its best rate, STUN Binding answers/s, and memory per allocation
# with 10,000 allocations held. Everything runs on 127.0.0.1; every loop is bounded.
#
# Environment knobs (defaults in brackets): REPEAT [3] ALLOCS [64] SIZE [200] STEP [3] (seconds per sweep step)
# WINDOWS [1,4,16] (closed loop; empty: skip) LAT_RATE [10000] HOLD_COUNT [10000] HOLD_SECS [30] THREADS [2] (server threads) PIN [0] (1: server on CPU 1,
# generator on CPU 0) ONLY [raw,ours,coturn] OUT [bench/results/turn-DATE]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

REPEAT=${REPEAT:-3}
ALLOCS=${ALLOCS:-64}
SIZE=${SIZE:-200}
STEP=${STEP:-3}
WINDOWS=${WINDOWS-1,4,16}
LAT_RATE=${LAT_RATE:-10000}
HOLD_COUNT=${HOLD_COUNT:-10000}
HOLD_SECS=${HOLD_SECS:-30}
THREADS=${THREADS:-2}
PIN=${PIN:-0}
ONLY=${ONLY:-raw,ours,coturn}
OUT=${OUT:-bench/results/turn-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

cargo build --release -q -p peercall -p peercall-loadgen
TARGET=${CARGO_TARGET_DIR:-target}
PEERCALL=$TARGET/release/peercall
LG=$TARGET/release/peercall-loadgen
WINDOW_ARGS=()
for w in ${WINDOWS//,/ }; do WINDOW_ARGS+=(--window "$w"); done
ulimit -n "$(ulimit -Hn)"

SERVER_CPUS=()
GEN_CPUS=()
if [ "$PIN" = 1 ]; then
  SERVER_CPUS=(taskset -c 1)
  GEN_CPUS=(taskset -c 0)
fi

PID=""
cleanup() { stop_pid "$PID"; }
trap cleanup EXIT

start_server() { # name port
  local name=$1 port=$2
  case $name in
    raw)
      "${SERVER_CPUS[@]}" "$LG" forwarder --listen "127.0.0.1:$port" --threads "$THREADS" --duration 3600 \
        >"$OUT/$name.server.log" 2>&1 &
      PID=$!
      ;;
    ours)
      # Limits raised for the benchmark (they are per-user/per-source protections, not capacity limits):
      # one user holds every allocation, and every Binding request comes from 127.0.0.1.
      "${SERVER_CPUS[@]}" "$PEERCALL" turn --listen "127.0.0.1:$port" --relay-ip 127.0.0.1 --realm test --user u:p \
        --relay-threads "$THREADS" \
        --allow-loopback-peers --user-quota 20000 --total-quota 20000 --unauth-rate 100000000 \
        --log-level warn >"$OUT/$name.server.log" 2>&1 &
      PID=$!
      ;;
    coturn)
      # Same settings; coturn has no per-user quota or unauthenticated rate limit by default.
      # --relay-threads defaults to the number of CPUs ($(nproc)); set explicitly to THREADS like the others.
      "${SERVER_CPUS[@]}" turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$port" \
        --lt-cred-mech --user=u:p --realm=test --allow-loopback-peers --no-cli --no-tls --no-dtls \
        --relay-threads="$THREADS" --userdb="$OUT/coturn.db" --log-file=stdout --simple-log \
        >"$OUT/$name.server.log" 2>&1 &
      PID=$!
      ;;
  esac
  wait_listen udp "$port"
  sleep 0.5
}

run_lg() { # output-name args...
  local name=$1
  shift
  echo "+ loadgen $*" >&2
  "${GEN_CPUS[@]}" "$LG" "$@" --json >"$OUT/$name.out" 2> >(tee "$OUT/$name.log" >&2)
  result_of "$OUT/$name.out" >"$OUT/$name.json"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "coturn: $(turnserver --version 2>/dev/null | head -1 || true)"
  echo "peercall: $(git rev-parse --short HEAD)"
  echo "settings: REPEAT=$REPEAT ALLOCS=$ALLOCS SIZE=$SIZE STEP=$STEP WINDOWS=$WINDOWS LAT_RATE=$LAT_RATE HOLD_COUNT=$HOLD_COUNT THREADS=$THREADS PIN=$PIN"
} | tee "$OUT/machine.txt"
check_quiet | tee -a "$OUT/machine.txt"

SWEEP=(--size "$SIZE" --allocations "$ALLOCS" --duration "$STEP" --repeat "$REPEAT" --latency-rate "$LAT_RATE")

# Latency floor: the generator's packets straight to its peers (no server).
run_lg direct turn-relay --mode direct --size "$SIZE" --allocations "$ALLOCS" --duration "$STEP" --rate "$LAT_RATE"

for name in raw ours coturn; do
  case ",$ONLY," in *",$name,"*) ;; *) continue ;; esac
  port=$(free_port)
  echo "=== $name on 127.0.0.1:$port ===" >&2
  start_server "$name" "$port"
  if [ "$name" = raw ]; then
    run_lg "$name.relay" turn-relay --mode forwarder --server "127.0.0.1:$port" --pid "$PID" "${SWEEP[@]}"
    if [ ${#WINDOW_ARGS[@]} -gt 0 ]; then
      run_lg "$name.closed" turn-relay --mode forwarder --server "127.0.0.1:$port" --pid "$PID" "${WINDOW_ARGS[@]}" \
        --size "$SIZE" --allocations "$ALLOCS" --duration "$STEP" --repeat "$REPEAT"
    fi
  else
    run_lg "$name.relay" turn-relay --mode turn --server "127.0.0.1:$port" --user u:p --pid "$PID" "${SWEEP[@]}"
    if [ ${#WINDOW_ARGS[@]} -gt 0 ]; then
      run_lg "$name.closed" turn-relay --mode turn --server "127.0.0.1:$port" --user u:p --pid "$PID" \
        "${WINDOW_ARGS[@]}" --size "$SIZE" --allocations "$ALLOCS" --duration "$STEP" --repeat "$REPEAT"
    fi
    run_lg "$name.binding" stun-binding --server "127.0.0.1:$port" --clients 64 --duration "$STEP" \
      --repeat "$REPEAT" --pid "$PID"
  fi
  stop_pid "$PID"
  PID=""
  if [ "$name" != raw ]; then
    # Memory: a fresh server, HOLD_COUNT allocations with one channel each, held and refreshed.
    port=$(free_port)
    start_server "$name" "$port"
    run_lg "$name.hold" hold-allocations --server "127.0.0.1:$port" --user u:p --count "$HOLD_COUNT" --channel \
      --hold "$HOLD_SECS" --refresh-every 10 --pid "$PID"
    stop_pid "$PID"
    PID=""
  fi
done

python3 bench/summarize.py turn "$OUT" | tee "$OUT/summary.md"

#!/usr/bin/env bash
# How many native peers (`peercall join`) one machine holds in calls at once, each sending the embedded clip,
# receiving its partner's and recording it. Peers are paired in rooms of two on one `peercall serve`, all on
# loopback. For each count the script samples every peer's CPU time (utime+stime from /proc) and RSS over
# SAMPLE seconds after WARMUP seconds, and checks every peer exits 0 (connected, media both ways).
#
#   bash bench/native.sh                    # COUNTS="2 8 16 32" WARMUP=6 SAMPLE=10 (release build)
#   COUNTS="2 4" bash bench/native.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PEERCALL_BIN:-${CARGO_TARGET_DIR:-target}/release/peercall}
COUNTS=${COUNTS:-"2 8 16 32"}
WARMUP=${WARMUP:-6}
SAMPLE=${SAMPLE:-10}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p peercall (or set PEERCALL_BIN)" >&2; exit 1; }
TICK=$(getconf CLK_TCK)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$BIN" serve --http 127.0.0.1:0 --listen "127.0.0.1:$port" --relay-ip 127.0.0.1 --room-capacity 2 \
    --max-joins-per-min 0 --max-new-rooms-per-min 0 --max-connections-per-ip 1000 >"$work/serve.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 50); do grep -q "http://127.0.0.1:" "$work/serve.log" && break; sleep 0.1; done
base=$(grep -o "http://127.0.0.1:[0-9]*" "$work/serve.log" | head -1)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

printf '%6s %12s %12s %10s %8s\n' peers "cpu%/peer" "cpu%/total" "RSS MB/peer" "ok"
for n in $COUNTS; do
    run=$work/n$n
    mkdir -p "$run"
    joins=()
    duration=$((WARMUP + SAMPLE + 4))
    for i in $(seq 0 $((n - 1))); do
        room="bench-$n-$((i / 2))"
        "$BIN" join "$base/r/$room" --name "p$i" --duration "$duration" --expect-peers 1 --json \
            --record "$run/rec$i" >"$run/out$i.json" 2>"$run/err$i" &
        joins+=($!)
        pids+=($!)
    done
    sleep "$WARMUP"
    declare -A t0=()
    for p in "${joins[@]}"; do t0[$p]=$(cpu_ticks "$p"); done
    s0=$(cpu_ticks "$server")
    sleep "$SAMPLE"
    total=0; rss=0
    for p in "${joins[@]}"; do
        total=$((total + $(cpu_ticks "$p") - ${t0[$p]}))
        rss=$((rss + $(rss_kb "$p")))
    done
    s1=$(cpu_ticks "$server")
    ok=0
    for p in "${joins[@]}"; do wait "$p" && ok=$((ok + 1)) || true; done
    awk -v t="$total" -v n="$n" -v tick="$TICK" -v s="$SAMPLE" -v rss="$rss" -v ok="$ok" -v srv=$((s1 - s0)) 'BEGIN {
        printf "%6d %12.1f %12.1f %10.1f %5d/%d   (server %.1f%%)\n", n, 100*t/tick/s/n, 100*t/tick/s, rss/1024/n, ok, n, 100*srv/tick/s }'
    unset t0
done

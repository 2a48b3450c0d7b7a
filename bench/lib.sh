# Shared helpers of the bench/*.sh scripts (sourced, not run).

# A free loopback port (TCP and UDP both free at the time of the call).
free_port() {
  python3 - <<'EOF'
import socket
for _ in range(200):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    # Stay clear of the relay port range used by the TURN servers.
    if port < 49152:
        print(port)
        break
    t.close(); u.close()
EOF
}

# Waits (at most 20 s) until something listens on UDP or TCP 127.0.0.1:$2 ($1 = udp|tcp).
wait_listen() {
  local proto=$1 port=$2 flag=-uln
  [ "$proto" = tcp ] && flag=-tln
  for _ in $(seq 1 200); do
    if ss $flag 2>/dev/null | awk '{print $4" "$5}' | grep -q "127.0.0.1:$port "; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on $proto 127.0.0.1:$port after 20 s" >&2
  return 1
}

# Kills a process we started (by its PID) and waits for it, at most 10 s.
stop_pid() {
  local pid=$1
  [ -z "$pid" ] && return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# The RESULT json line of a loadgen run's output file.
result_of() {
  grep '^RESULT ' "$1" | tail -1 | sed 's/^RESULT //'
}

# Warns when the machine is busy (other processes would skew the figures).
check_quiet() {
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  if python3 -c "import sys; sys.exit(0 if float('$load') < 0.7 else 1)"; then
    echo "machine: $(nproc) cores, load average $load"
  else
    echo "WARNING: load average is $load: other processes are running, figures will be noisy" >&2
  fi
}

# A browser benchmark, one command: builds peercall (release), installs the test packages if missing, writes
# OUT/machine.txt (date, CPU, Chromium, commit, the settings given), runs bench/NAME.mjs against the build with
# at most TIMEOUT seconds, its summary to OUT/summary.md. OUT defaults to bench/results/NAME-DATE.
#   run_browser_bench NAME TIMEOUT "SETTINGS LINE"
run_browser_bench() {
  local name=$1 timeout_s=$2 settings=$3
  OUT=${OUT:-bench/results/$name-$(date +%Y%m%d-%H%M%S)}
  mkdir -p "$OUT"
  local target=${CARGO_TARGET_DIR:-target}
  cargo build --release -q -p peercall
  [ -d tests/node_modules/playwright-core ] || npm ci --prefix tests --no-audit --no-fund
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -1 || true)"
    echo "peercall: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- web crates || echo ' (modified)')"
    echo "settings: $settings"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  } | tee "$OUT/machine.txt"
  check_quiet | tee -a "$OUT/machine.txt"
  PEERCALL_BIN="$target/release/peercall" OUT="$OUT" timeout "$timeout_s" node "bench/$name.mjs" | tee "$OUT/summary.md"
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
}

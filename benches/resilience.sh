#!/usr/bin/env bash
# The cost of the resilience layers on the happy path: remora with no
# policies vs every policy configured (none of them firing), same upstream,
# alternated ROUNDS times in one run; prints medians as a Markdown table.
#
#   cargo build --release -p remora-proxy
#   ROUNDS=3 DURATION=10 benches/resilience.sh
#
# Pinned like ../shared/bench/peers.sh: wrk, oha and the upstream on CPU 0,
# the proxy alone on CPU 1 with one worker. Needs nginx, wrk and oha
# (../shared/bench/install-tools.sh installs them). Stops exactly the PIDs it
# starts.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${REMORA_BIN:-$PWD/target/release/remora-proxy}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
OHA=${OHA_BIN:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
RUN=$(mktemp -d)
UP_PORT=18190
PROXY_PORT=19190
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT

cat >"$RUN/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; location / { return 200 "ok\n"; } }
}
NGINX
taskset -c 0 nginx -c "$RUN/nginx.conf" -p "$RUN" &
pids+=($!)

common="admin: { address: 127.0.0.1:0 }
listeners:
  - name: edge
    address: 127.0.0.1:$PROXY_PORT"
cat >"$RUN/none.yaml" <<YAML
$common
    routes:
      - name: all
        backends: [{ name: up }]
backends:
  - name: up
    outlier_detection: { consecutive_failures: 0 }
    endpoints: [{ address: 127.0.0.1:$UP_PORT }]
YAML
cat >"$RUN/all.yaml" <<YAML
$common
    rate_limit: { requests_per_second: 10000000 }
    routes:
      - name: all
        backends: [{ name: up }]
        timeout: 10s
        idle_timeout: 10s
        retry: { attempts: 3, on: [5xx, reset, connect-failure, unavailable], per_try_timeout: 5s }
        rate_limit: { requests_per_second: 10000000, key_header: x-user }
        fault: { delay: { duration: 1ms, percent: 0 }, abort: { status: 503, percent: 0 } }
backends:
  - name: up
    outlier_detection: { consecutive_failures: 5 }
    circuit_breaker: { max_connections: 10000, max_pending_requests: 10000, max_requests: 10000 }
    health_check: { path: /, interval: 1s }
    endpoints: [{ address: 127.0.0.1:$UP_PORT }]
YAML

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # config -> "rps cpu_us_per_req p99_us"
  taskset -c 1 "$BIN" run --config "$1" --workers 1 >/dev/null 2>&1 &
  local pid=$!
  pids+=($pid)
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PROXY_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$PROXY_PORT/" >/dev/null
  local t0; t0=$(cpu_ticks $pid)
  local out; out=$(timeout $((DURATION + 10)) taskset -c 0 wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$PROXY_PORT/")
  local t1; t1=$(cpu_ticks $pid)
  local reqs; reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local cpu_us; cpu_us=$(awk -v t=$((t1 - t0)) -v n="$reqs" 'BEGIN {printf "%.2f", t * 10000 / n}')
  local p99; p99=$(timeout $((DURATION + 10)) taskset -c 0 "$OHA" -q "$RATE" -c 32 -z "${DURATION}s" --latency-correction --no-tui --output-format json "http://127.0.0.1:$PROXY_PORT/" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["latencyPercentiles"]["p99"]*1e6))')
  kill $pid; wait $pid 2>/dev/null || true
  echo "$rps $cpu_us $p99"
}

: >"$RUN/none.txt"; : >"$RUN/all.txt"
for r in $(seq "$ROUNDS"); do
  measure "$RUN/none.yaml" >>"$RUN/none.txt"
  measure "$RUN/all.yaml" >>"$RUN/all.txt"
  echo "round $r done" >&2
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
col() { awk -v c="$2" '{print $c}' "$1" | median; }
echo "| config | req/s (median of $ROUNDS) | proxy CPU µs/req | p99 µs at $RATE req/s |"
echo "|---|---:|---:|---:|"
for c in none all; do
  echo "| $c | $(col "$RUN/$c.txt" 1) | $(col "$RUN/$c.txt" 2) | $(col "$RUN/$c.txt" 3) |"
done
n=$(col "$RUN/none.txt" 1); a=$(col "$RUN/all.txt" 1)
awk -v n="$n" -v a="$a" 'BEGIN {printf "\nthroughput with every policy: %.1f%% of none (loss %.1f%%)\n", 100 * a / n, 100 - 100 * a / n}'
echo "raw rows (rps cpu_us p99_us):"; echo "none:"; cat "$RUN/none.txt"; echo "all:"; cat "$RUN/all.txt"

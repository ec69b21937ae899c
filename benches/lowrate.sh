#!/usr/bin/env bash
# lowrate.sh - one proxy hop at a fixed, low request rate: Remora beside
# nginx (the shared bench's proxy config), CPU per request split into user
# and kernel time, syscalls and context switches per request, p50/p99.
#
#   benches/lowrate.sh                 # 5 rounds, 1,000 req/s, 10 s each
#   ROUNDS=3 RATE=500 SECS=5 benches/lowrate.sh
#
# The proxy under test runs alone on CPU 1 with one worker; the upstream
# (nginx `return 200`) and the client (`oha -q RATE -c 1`, open loop, one
# connection) share CPU 0. Each round measures the client straight to the
# upstream first (the latency a hop adds is counted against it), then
# Remora and nginx, alternating their order, so that all see the same
# machine. Per run: `/proc/PID/stat` user and system
# ticks before/after (CLK_TCK resolution: at 10,000 requests, 1 µs), `perf
# stat -e raw_syscalls:sys_enter,context-switches` on the proxy's PID, and
# oha's latency percentiles. Prints each run, then the medians.
# Needs nginx, oha, perf, taskset. Stops only the PIDs it started.
# REMORA_BIN: the binary (default target/release/remora-proxy).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${LOWRATE_DIR:-/tmp/remora-lowrate}
rounds=${ROUNDS:-5} rate=${RATE:-1000} secs=${SECS:-10}
bin=${REMORA_BIN:-$here/../target/release/remora-proxy}
oha=${OHA_BIN:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
template=${NGINX_TEMPLATE:-$here/../../shared/bench/conf/nginx-proxy.conf.tmpl}
up_port=18960 remora_port=19960 nginx_port=19961
tick=$(getconf CLK_TCK)
mkdir -p "$out"

source "$here/lib.sh"   # pids, cleanup on exit, wait_port, start_upstream

start_upstream "$out" "$up_port" 0

# One run against PID listening on PORT; appends a JSON line to results.
measure() { # name pid port
  local name=$1 pid=$2 port=$3 u0 s0 u1 s1 sp
  timeout 30 "$oha" -z 2s -q "$rate" -c 1 --no-tui "http://127.0.0.1:$port/" > /dev/null
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" -o "$out/$name.stat" \
    -- sleep $((secs + 1)) &
  sp=$!
  timeout $((secs + 30)) taskset -c 0 "$oha" -z "${secs}s" -q "$rate" -c 1 --no-tui \
    --output-format json "http://127.0.0.1:$port/" > "$out/$name.json"
  wait "$sp"
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  python3 - "$name" "$out/$name.json" "$out/$name.stat" "$u0" "$s0" "$u1" "$s1" "$tick" \
    >> "$out/results.jsonl" <<'PY'
import json, sys
name, js, st, u0, s0, u1, s1, tick = sys.argv[1:]
j = json.load(open(js))
n = j["statusCodeDistribution"].get("200", 0)
if n == 0 or n != sum(j["statusCodeDistribution"].values()):
    sys.exit(f"lowrate.sh: {name}: not every answer was 200: {j['statusCodeDistribution']}")
calls = switches = 0
for line in open(st):
    f = line.split(",")
    if "sys_enter" in line: calls = int(f[0])
    if "context-switches" in line: switches = int(f[0])
us = lambda a, b: (int(b) - int(a)) / int(tick) * 1e6 / n
p = j["latencyPercentiles"]
print(json.dumps({"proxy": name, "requests": n, "user": us(u0, u1), "sys": us(s0, s1),
                  "syscalls": calls / n, "switches": switches / n,
                  "p50": p["p50"] * 1e6, "p99": p["p99"] * 1e6}))
PY
  tail -1 "$out/results.jsonl"
}

# The client straight to the upstream: the latency a hop adds is measured
# against this.
run_direct() {
  timeout 30 "$oha" -z 2s -q "$rate" -c 1 --no-tui "http://127.0.0.1:$up_port/" > /dev/null
  timeout $((secs + 30)) taskset -c 0 "$oha" -z "${secs}s" -q "$rate" -c 1 --no-tui \
    --output-format json "http://127.0.0.1:$up_port/" > "$out/direct.json"
  python3 - "$out/direct.json" >> "$out/results.jsonl" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
p = j["latencyPercentiles"]
print(json.dumps({"proxy": "direct", "requests": j["statusCodeDistribution"].get("200", 0),
                  "p50": p["p50"] * 1e6, "p99": p["p99"] * 1e6}))
PY
  tail -1 "$out/results.jsonl"
}

run_remora() {
  LAB_PORT=$remora_port LAB_TLS_PORT=- LAB_UPSTREAM=127.0.0.1:$up_port LAB_WORKERS=1 \
    LAB_RUN=$out REMORA_BIN=$bin taskset -c 1 "$here/remora-peer.sh" > "$out/remora.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port "$remora_port"
  measure remora "$pid" "$remora_port"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
}

run_nginx() {
  mkdir -p "$out/nginx-tmp"
  chmod 777 "$out" "$out/nginx-tmp"
  sed -e "s/@WORKERS@/1/; s#@RUN@#$out#g; s/@PORT@/$nginx_port/; /@TLS_PORT@/d; /ssl_/d" \
    -e "s/@NGINX_SERVERS@/        server 127.0.0.1:$up_port;/" "$template" > "$out/nginx-proxy.conf"
  taskset -c 1 nginx -p "$out" -c "$out/nginx-proxy.conf" -e "$out/nginx-proxy.error.log" &
  local master=$! worker=
  pids+=("$master")
  wait_port "$nginx_port"
  for _ in $(seq 50); do
    worker=$(pgrep -P "$master" | head -1 || true)
    [[ -n $worker ]] && break
    sleep 0.1
  done
  [[ -n $worker ]] || { echo "lowrate.sh: nginx started no worker" >&2; exit 1; }
  measure nginx "$worker" "$nginx_port"
  kill -TERM "$master"
  wait "$master" 2>/dev/null || true
}

: > "$out/results.jsonl"
for i in $(seq "$rounds"); do
  run_direct
  if (( i % 2 )); then run_remora; run_nginx; else run_nginx; run_remora; fi
done

python3 - "$out/results.jsonl" "$rate" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\nmedians of {len(rows) // 3} rounds at {sys.argv[2]} req/s, one connection "
      "(+p50/+p99: the median over rounds of the hop's percentile minus direct's):\n")
print("| path | CPU µs/req | user | kernel | syscalls/req | switches/req | p50 µs | p99 µs | +p50 | +p99 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
direct = [x for x in rows if x["proxy"] == "direct"]
md = lambda k: statistics.median(x[k] for x in direct)
print(f"| direct | | | | | | {md('p50'):.0f} | {md('p99'):.0f} | | |")
for name in ("remora", "nginx"):
    r = [x for x in rows if x["proxy"] == name]
    m = lambda k: statistics.median(x[k] for x in r)
    total = statistics.median(x["user"] + x["sys"] for x in r)
    added = lambda k: statistics.median(x[k] - d[k] for x, d in zip(r, direct))
    print(f"| {name} | {total:.0f} | {m('user'):.0f} | {m('sys'):.0f} | {m('syscalls'):.2f} "
          f"| {m('switches'):.2f} | {m('p50'):.0f} | {m('p99'):.0f} | +{added('p50'):.0f} "
          f"| +{added('p99'):.0f} |")
PY

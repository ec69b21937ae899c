#!/usr/bin/env bash
# pair-profile.sh - where Remora's CPU per request differs from haproxy's:
# both proxies profiled under the same load, symbol by symbol, in
# nanoseconds per request.
#
#   benches/pair-profile.sh [SECONDS]      # default 8
#
# The layout of cpu-split.sh: an nginx `return 200 "ok"` upstream and wrk
# (-t1 -c64) on CPU 0, each proxy alone on CPU 1 with one worker (Remora
# through benches/remora-peer.sh, REMORA_BIN as there). For each proxy in
# turn: 2 s of warm-up, then `perf record -e cpu-clock -F 4000 -g` on its
# PID while wrk runs SECONDS. Prints kernel and user time per request from
# the samples, then the symbols whose cost per request differs most (self
# time, `perf report --no-children`). The proxy is busy the whole window,
# so samples × (1 / 4000 s) / requests is its time per request. Needs
# nginx, haproxy, wrk, perf and python3. Stops only the PIDs it started.
set -euo pipefail

secs=${1:-8}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${PAIR_DIR:-/tmp/remora-pair-profile}
up_port=18990 remora_port=19990 haproxy_port=19991
mkdir -p "$out/tmp"
chmod 777 "$out" "$out/tmp"

source "$here/lib.sh"   # pids, cleanup on exit, wait_port, start_upstream

start_upstream "$out" "$up_port" 0
start_pair "$out" "$up_port" "$remora_port" "$haproxy_port"

for target in "remora $remora_port $remora" "haproxy $haproxy_port $haproxy"; do
  read -r name port pid <<<"$target"
  taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" > /dev/null 2>&1
  perf record -q -e cpu-clock -F 4000 -g -p "$pid" -o "$out/$name.data" -- \
    taskset -c 0 wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$port/" > "$out/$name.wrk" 2>&1
  perf report -i "$out/$name.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null \
    > "$out/$name.report"
done

python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def load(name):
    wrk = open(f"{out}/{name}.wrk").read()
    n, secs = re.search(r"(\d+) requests in ([\d.]+)s", wrk).groups()
    n, secs = int(n), float(secs)
    text = open(f"{out}/{name}.report").read()
    samples = int(re.search(r"# Samples: (\d+)([KM]?)", text).group(1))
    mult = {"": 1, "K": 1e3, "M": 1e6}[re.search(r"# Samples: \d+([KM]?)", text).group(1)]
    ns_per_req = samples * mult / 4000 / n * 1e9
    syms = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+)", line)
        if m:
            pct, dso, kind, sym = m.groups()
            key = ("kernel " if kind == "k" else "") + sym.strip()
            syms[key] = syms.get(key, 0) + float(pct) / 100 * ns_per_req
    kernel = sum(v for k, v in syms.items() if k.startswith("kernel "))
    return n / secs, ns_per_req, kernel, syms
r, h = load("remora"), load("haproxy")
for name, (rate, total, kernel, _) in (("remora", r), ("haproxy", h)):
    print(f"{name:8} {rate:9.0f} req/s  {total/1000:6.2f} µs/req  kernel {kernel/1000:5.2f}  user {(total-kernel)/1000:5.2f}")
print("\nns/request by symbol (self), largest differences first:")
print(f"{'remora':>8} {'haproxy':>8} {'diff':>8}  symbol")
keys = set(r[3]) | set(h[3])
for k in sorted(keys, key=lambda k: -abs(r[3].get(k, 0) - h[3].get(k, 0)))[:30]:
    a, b = r[3].get(k, 0), h[3].get(k, 0)
    print(f"{a:8.0f} {b:8.0f} {a-b:+8.0f}  {k[:110]}")
PY

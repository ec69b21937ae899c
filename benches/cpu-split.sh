#!/usr/bin/env bash
# cpu-split.sh - Remora and haproxy back to back: CPU per request split into
# user and kernel time, and syscalls per request.
#
#   benches/cpu-split.sh [ROUNDS]       # default 3; ~25 s per round
#
# Same topology as peers.sh in pinned mode: an nginx `return 200 "ok"`
# upstream and wrk (-t1 -c64) on CPU 0, the proxy alone on CPU 1 with one
# worker. Each round measures Remora, then haproxy (2 s warm-up, 8 s
# measured), so slow drifts of the machine hit both alike. Syscalls are
# counted with `perf stat -e raw_syscalls:sys_enter` (a little overhead, the
# same for both); TCP segments per request with `nstat` (every segment the
# machine sent in the window: client, proxy and upstream, loopback both
# ways; each one's receive path runs in its sender's syscall). Needs nginx,
# haproxy, wrk, perf, nstat (iproute2) and the release binary. Stops only
# the PIDs it started.
set -euo pipefail

rounds=${1:-3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${SPLIT_DIR:-/tmp/remora-cpu-split}
up_port=18970 remora_port=19970 haproxy_port=19971
mkdir -p "$out/tmp"
chmod 777 "$out" "$out/tmp"

source "$here/lib.sh"   # pids, cleanup on exit, wait_port

start_upstream "$out" "$up_port" 0
start_pair "$out" "$up_port" "$remora_port" "$haproxy_port"

hz=$(getconf CLK_TCK)
times() { awk '{print $14, $15}' "/proc/$1/stat"; }   # utime stime, in ticks

for r in $(seq "$rounds"); do
  for target in "remora $remora_port $remora" "haproxy $haproxy_port $haproxy"; do
    read -r name port pid <<<"$target"
    taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" > /dev/null 2>&1
    read -r u0 s0 < <(times "$pid")
    nstat -n   # zero nstat's history: the next read is what this window sent
    perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$out/$name.stat" -- \
      taskset -c 0 wrk -t1 -c64 -d8s "http://127.0.0.1:$port/" > "$out/$name.wrk" 2>&1
    read -r u1 s1 < <(times "$pid")
    segs=$(nstat -z TcpOutSegs | awk '/TcpOutSegs/ {print $2}')
    n=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$out/$name.wrk")
    calls=$(grep sys_enter "$out/$name.stat" | cut -d, -f1)
    awk -v r="$r" -v name="$name" -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v c="$calls" -v g="$segs" 'BEGIN {
      printf "round %d  %-8s %7.0f req/s  user %5.2f  sys %5.2f  total %5.2f µs/req  %.2f syscalls/req  %.2f segments/req\n",
        r, name, n / 8, u / hz / n * 1e6, s / hz / n * 1e6, (u + s) / hz / n * 1e6, c / n, g / n }'
  done
done

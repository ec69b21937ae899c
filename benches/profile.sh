#!/usr/bin/env bash
# profile.sh - perf profile of Remora under the peers lab's max-throughput load.
#
#   benches/profile.sh [SECONDS]        # default 10; writes /tmp/remora-profile/
#
# Same topology as peers.sh in pinned mode: an nginx `return 200 "ok"`
# upstream and wrk (-t1 -c64) on CPU 0, Remora with one worker on CPU 1
# (started through benches/remora-peer.sh, plain HTTP only). Samples the proxy
# with `perf record --call-graph dwarf` for SECONDS while wrk runs, then prints
# the flat profile (self time by symbol) and the top of the caller view.
# Needs nginx, wrk and perf (apt-get install linux-perf), and the release
# binary (cargo build --release -p remora-proxy). Stops only the PIDs it started.
set -euo pipefail

secs=${1:-10}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${PROFILE_DIR:-/tmp/remora-profile}
up_port=${UP_PORT:-18980}
port=${PORT:-19980}
mkdir -p "$out/tmp"
chmod 777 "$out" "$out/tmp"

source "$here/lib.sh"   # pids, cleanup on exit, wait_port

start_upstream "$out" "$up_port" 0

LAB_PORT=$port LAB_TLS_PORT=- LAB_UPSTREAM=127.0.0.1:$up_port LAB_WORKERS=1 LAB_RUN=$out \
  taskset -c 1 "$here/remora-peer.sh" > "$out/remora.log" 2>&1 &
proxy=$!
pids+=("$proxy")
wait_port "$port"
curl -sf "http://127.0.0.1:$port/" >/dev/null

taskset -c 0 wrk -t1 -c64 -d"$((secs + 4))s" "http://127.0.0.1:$port/" > "$out/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
sleep 2
perf record -F 999 --call-graph dwarf,32768 -p "$proxy" -o "$out/perf.data" -- sleep "$secs" 2> "$out/perf-record.log"
wait "$wrk_pid" || true
cat "$out/wrk.txt"

perf report -i "$out/perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio -g none \
  > "$out/flat.txt" 2>/dev/null
perf report -i "$out/perf.data" --children --sort symbol --percent-limit 3 --stdio -g none \
  > "$out/children.txt" 2>/dev/null
echo "== self time by symbol ($out/flat.txt)"
grep -v '^#' "$out/flat.txt" | grep -v '^$' | head -40
echo "== inclusive time by symbol ($out/children.txt)"
grep -v '^#' "$out/children.txt" | grep -v '^$' | head -40

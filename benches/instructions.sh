#!/usr/bin/env bash
# instructions.sh - user-space instructions per proxied request, counted by
# valgrind (callgrind): a measure that does not move with the machine's
# noise, for A/B of builds when timings swing (this VM exposes no hardware
# counters to perf).
#
#   benches/instructions.sh BIN [BIN...]     # e.g. /tmp/ab/remora-before target/release/remora-proxy
#
# Per build: an nginx `return 200 "ok"` upstream, the proxy (one worker,
# benches/remora-peer.sh) under `valgrind --tool=callgrind`; WARMUP requests
# (default 500), counters zeroed, then REQUESTS (default 5,000) with `oha
# -c 1` (one at a time: no batching, so the count per request is stable),
# counters dumped. Prints instructions per request (all of the proxy's
# threads; kernel work is not counted) and keeps each build's dump as
# $INSTR_DIR/<binary name>.callgrind (read it with callgrind_annotate).
# Needs valgrind, nginx, oha. Stops only the PIDs it started.
set -euo pipefail

[[ $# -ge 1 ]] || { sed -n '2,16p' "$0"; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${INSTR_DIR:-/tmp/remora-instructions}
warmup=${WARMUP:-500}
requests=${REQUESTS:-5000}
oha=${OHA_BIN:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
up_port=18950 port=19950

source "$here/lib.sh"   # pids, cleanup on exit, wait_port, start_upstream

start_upstream "$out" "$up_port"

echo "| build | instructions per request | requests |"
echo "|---|---:|---:|"
for bin in "$@"; do
  rm -f "$out"/cg.*
  LAB_PORT=$port LAB_TLS_PORT=- LAB_UPSTREAM=127.0.0.1:$up_port LAB_WORKERS=1 LAB_RUN=$out REMORA_BIN=$bin \
    REMORA_WRAP="valgrind --tool=callgrind --callgrind-out-file=$out/cg.%p" \
    "$here/remora-peer.sh" > "$out/remora.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do   # valgrind starts slowly: up to 60 s
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  timeout 300 "$oha" -n "$warmup" -c 1 --no-tui "http://127.0.0.1:$port/" > /dev/null
  callgrind_control -z "$pid" > /dev/null 2>&1
  timeout 600 "$oha" -n "$requests" -c 1 --no-tui --output-format json "http://127.0.0.1:$port/" > "$out/oha.json"
  callgrind_control -d "$pid" > /dev/null 2>&1
  ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["statusCodeDistribution"].get("200", 0))' "$out/oha.json")
  [[ $ok == "$requests" ]] || { echo "instructions.sh: $bin answered $ok of $requests with 200" >&2; exit 1; }
  # The dump after the zeroing is the last file written; its summary is Ir.
  dump=$(ls -t "$out"/cg.* | head -1)
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  cp "$dump" "$out/$(basename "$bin").callgrind"   # for callgrind_annotate
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  awk -v b="$bin" -v ir="$ir" -v n="$requests" 'BEGIN {printf "| %s | %.0f | %d |\n", b, ir / n, n}'
done

#!/usr/bin/env bash
# Chaos bench (issue 11): does the proxy drop requests while things around it
# change or die? Loopback only; each scenario prints a one-line summary (and
# some detail before it). Nothing is written to RESULTS.md by the script.
#
#   benches/chaos.sh swap        # 2k req/s for 60 s while the config file is rewritten 10×/s
#   benches/chaos.sh kill        # 3 endpoints, retries on, 1 killed (SIGKILL) under 2k req/s
#   benches/chaos.sh cp-down     # sidecar under load; control plane SIGKILLed for 60 s, restarted
#   benches/chaos.sh soak        # 1 h at 500 req/s; RSS and open fds of the proxy every 60 s
#   benches/chaos.sh all         # swap, kill, cp-down (not soak)
#   NO_BUILD=1 benches/chaos.sh swap    # skip the release build (binaries already built)
#
# First it builds the release binaries (`nice cargo build --release -p
# remora-proxy -p remora-control-plane`; several minutes cold) and copies them
# to a temporary directory, so a later rebuild cannot change a running
# scenario's binary. Upstreams are nginx (`return 200 "ok\n"`), each a
# single process (`master_process off`) so that SIGKILL of its PID kills the
# endpoint. The load generator is h2load (Debian nghttp2-client) over
# HTTP/1.1, open loop at a fixed rate (`--rps` per connection × connections);
# it reports per-status counts and failed/errored/timed-out requests.
# "bad" below = requests h2load finished without a 2xx: responses with
# another status, and requests that failed (connection errors, resets,
# timeouts).
#
# Scenarios:
#   swap     proxy on a file config. Every 100 ms a writer renames one of two
#            valid configs (A, B) into place and sends SIGHUP (so every write
#            is a reload, not only the ones the 500 ms poll sees). A and B
#            differ in routes (names, order, an extra prefix route) and in
#            backends: the catch-all route goes to backend `up-a` in A and
#            to `up-c` and `up-b` (weights 1:1) in B, so each swap removes
#            one backend and adds another (the same nginx behind both). The
#            load cycles through `/`, `/x/1` and `/y/1`. Applied reloads are read from the
#            proxy's /metrics.
#   kill     one backend of three endpoints (three nginx processes), round
#            robin, retry { attempts: 3, on: [reset, connect-failure,
#            unavailable, 5xx] }, outlier detection 3 consecutive failures.
#            At KILL_AT s the second endpoint is SIGKILLed.
#   cp-down  a control plane (mesh file: service `api` → nginx, workload
#            `web`) and a proxy in sidecar mode for `web`; load through the
#            sidecar with `Host: api` (h2load `-H ':authority: api'`). CP_CYCLES times: SIGKILL the control
#            plane, wait CP_DOWN s, start it again on the same addresses and
#            time from its spawn until its /status lists the proxy in sync
#            (subscribed and ACKed): the reconnect time, an upper bound (each
#            poll, curl + python, takes tens of ms). Also from the control
#            plane's log: its listener bound → `proxy subscribed`.
#   soak     proxy on a file config, SOAK_RATE req/s for SOAK_SECONDS over
#            SOAK_CONNS keep-alive connections, plus every sample a burst of
#            CHURN_REQUESTS on 50 fresh connections (connection churn), and
#            the upstream closes each keep-alive connection after 1000
#            requests (pool churn). VmRSS and the fd count from /proc/PID
#            every SAMPLE s from 30 s after the load starts (the load runs
#            SOAK_SECONDS + 60 s).
#
# Knobs: RATE [2000], DURATION [60] (swap, kill), CONNS [32], SWAPS_PER_S
# [10], KILL_AT [20], CP_DOWN [60], CP_CYCLES [3], CP_RATE [2000],
# SOAK_RATE [500], SOAK_SECONDS [3600], SOAK_CONNS [16], SAMPLE [60],
# CHURN_REQUESTS [1000], WORKERS [2] proxy worker threads, PORT_OFFSET [0],
# NO_BUILD, REMORA_BIN and REMORA_CP_BIN (other binaries; with NO_BUILD).
# Needs nginx, h2load, curl, python3. Stops exactly the PIDs it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${1:-}
RATE=${RATE:-2000}
DURATION=${DURATION:-60}
CONNS=${CONNS:-32}
SWAPS_PER_S=${SWAPS_PER_S:-10}
KILL_AT=${KILL_AT:-20}
CP_DOWN=${CP_DOWN:-60}
CP_CYCLES=${CP_CYCLES:-3}
CP_RATE=${CP_RATE:-2000}
SOAK_RATE=${SOAK_RATE:-500}
SOAK_SECONDS=${SOAK_SECONDS:-3600}
SOAK_CONNS=${SOAK_CONNS:-16}
SAMPLE=${SAMPLE:-60}
CHURN_REQUESTS=${CHURN_REQUESTS:-1000}
WORKERS=${WORKERS:-2}

case "$SCENARIO" in
  swap | kill | cp-down | soak | all) ;;
  *) echo "usage: $0 swap|kill|cp-down|soak|all" >&2; exit 2 ;;
esac

# Ports: upstreams, proxy, proxy admin, control plane stream and admin;
# PORT_OFFSET moves them all (to run the soak beside another scenario).
OFF=${PORT_OFFSET:-0}
UP1=$((18290 + OFF)) UP2=$((18291 + OFF)) UP3=$((18292 + OFF))
PROXY=$((19290 + OFF)) PROXY_ADMIN=$((19291 + OFF)) CP=$((19295 + OFF)) CP_ADMIN=$((19296 + OFF))
RUN=$(mktemp -d /tmp/remora-chaos.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
log() { echo "chaos.sh: $(date -u +%H:%M:%S) $*" >&2; }
die() { log "$*"; exit 1; }
now() { date +%s.%N; }

for port in $UP1 $UP2 $UP3 $PROXY $PROXY_ADMIN $CP $CP_ADMIN; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is taken: another run?"; fi
done
for tool in nginx h2load curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (../shared/bench/install-tools.sh installs it)"
done

if [[ -z "${NO_BUILD:-}" ]]; then
  log "cargo build --release (nice)"
  nice -n 10 cargo build --release --locked -p remora-proxy -p remora-control-plane >&2
fi
cp "${REMORA_BIN:-target/release/remora-proxy}" "$RUN/remora-proxy"
case "$SCENARIO" in
  cp-down | all) cp "${REMORA_CP_BIN:-target/release/remora-control-plane}" "$RUN/remora-control-plane" ;;
esac
BIN=$RUN/remora-proxy
CP_BIN=$RUN/remora-control-plane

# --- pieces -------------------------------------------------------------------

# nginx_up NAME KEEPALIVE_REQUESTS PORT...: one process serving 200 "ok" on
# the ports; sets NGINX_PID.
nginx_up() {
  local name=$1 keep=$2; shift 2
  local listens="" port
  for port in "$@"; do listens+="listen 127.0.0.1:$port; "; done
  mkdir -p "$RUN/$name.tmp"
  cat >"$RUN/$name.conf" <<NGINX
master_process off;
worker_processes 1;
daemon off;
pid $RUN/$name.pid;
error_log $RUN/$name-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests $keep;
  client_body_temp_path $RUN/$name.tmp/body;
  proxy_temp_path $RUN/$name.tmp/proxy;
  fastcgi_temp_path $RUN/$name.tmp/fastcgi;
  uwsgi_temp_path $RUN/$name.tmp/uwsgi;
  scgi_temp_path $RUN/$name.tmp/scgi;
  server { $listens location / { return 200 "ok\n"; } }
}
NGINX
  nginx -c "$RUN/$name.conf" -p "$RUN" &
  NGINX_PID=$!
  pids+=("$NGINX_PID")
  for port in "$@"; do wait_http "http://127.0.0.1:$port/" || die "nginx $name: no answer on $port"; done
}

# wait_http URL [HOST]: until it answers 200 (10 s at most).
wait_http() {
  local i
  for i in $(seq 100); do
    curl -fs -o /dev/null -H "Host: ${2:-localhost}" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# proxy_file CONFIG: remora-proxy on a config file; sets PROXY_PID.
proxy_file() {
  RUST_LOG=warn "$BIN" run --config "$1" --workers "$WORKERS" >>"$RUN/proxy.log" 2>&1 &
  PROXY_PID=$!
  pids+=("$PROXY_PID")
  wait_http "http://127.0.0.1:$PROXY/" || die "proxy: no 200 through it (see $RUN/proxy.log)"
}

# load RATE SECONDS CONNS OUT [h2load args or more URLs...]: open-loop
# HTTP/1.1 load on the proxy; the h2load report goes to OUT.
load() {
  local rate=$1 secs=$2 conns=$3 out=$4; shift 4
  local per=$(( (rate + conns - 1) / conns ))
  timeout $((secs + 30)) h2load --h1 -c "$conns" --rps "$per" -D "$secs" "$@" \
    "http://127.0.0.1:$PROXY/" >"$out" 2>&1 || true
}

# counts OUT -> "done 2xx non2xx failed errored timeout rps": done = requests
# that finished either way (a response, or an error).
counts() {
  awk '
    /^requests:/ { done=$6; failed=$10; errored=$12; timeout=$14 }
    /^status codes:/ { ok=$3; other=$5+$7+$9 }
    /^finished in/ { rps=$4 }
    END { printf "%d %d %d %d %d %d %s\n", done, ok, other, failed, errored, timeout, rps }' "$1"
}

# summary NAME OUT [extra text]: the one-line result.
summary() {
  local name=$1 out=$2; shift 2
  local total ok other failed errored timeout rps
  read -r total ok other failed errored timeout rps < <(counts "$out")
  local bad=$((total - ok))
  local pct; pct=$(awk -v b="$bad" -v t="$total" 'BEGIN { printf "%.4f", t ? 100 * b / t : 0 }')
  echo "$name: requests=$total 2xx=$ok non2xx=$other failed=$failed (errored=$errored timeout=$timeout) bad=$bad (${pct}%) achieved=${rps} req/s $*"
}

metric() { # NAME-regex: sum of matching samples on the proxy's /metrics
  curl -fs "http://127.0.0.1:$PROXY_ADMIN/metrics" | awk -v re="$1" '$1 ~ re { s += $2 } END { print s + 0 }'
}

# --- swap -----------------------------------------------------------------------
scenario_swap() {
  nginx_up swap-up 1000000 $UP1 $UP2
  local up=$NGINX_PID
  local head="admin: { address: 127.0.0.1:$PROXY_ADMIN }
listeners:
  - name: edge
    address: 127.0.0.1:$PROXY"
  cat >"$RUN/a.yaml" <<YAML
$head
    routes:
      - { name: a-extra, match: { path: { prefix: /x } }, backends: [{ name: up-b }] }
      - { name: a-main, backends: [{ name: up-a }] }
backends:
  - { name: up-a, endpoints: [{ address: 127.0.0.1:$UP1 }] }
  - { name: up-b, endpoints: [{ address: 127.0.0.1:$UP2 }] }
YAML
  cat >"$RUN/b.yaml" <<YAML
$head
    routes:
      - { name: b-other, match: { path: { prefix: /y } }, backends: [{ name: up-b }] }
      - { name: b-extra, match: { path: { prefix: /x } }, backends: [{ name: up-c }] }
      - { name: b-main, backends: [{ name: up-c, weight: 1 }, { name: up-b, weight: 1 }] }
backends:
  - { name: up-b, endpoints: [{ address: 127.0.0.1:$UP2 }] }
  - { name: up-c, balancer: least_request, endpoints: [{ address: 127.0.0.1:$UP1 }, { address: 127.0.0.1:$UP2 }] }
YAML
  "$BIN" check "$RUN/a.yaml" >&2 && "$BIN" check "$RUN/b.yaml" >&2 || die "swap configs invalid"
  cp "$RUN/a.yaml" "$RUN/edge.yaml"
  proxy_file "$RUN/edge.yaml"
  local applied0; applied0=$(metric 'remora_config_reloads_total.*result="applied"')
  log "swap: $RATE req/s for ${DURATION}s, config rewritten ${SWAPS_PER_S}×/s"
  # h2load cycles through the paths: every route of both configs gets traffic.
  load "$RATE" "$DURATION" "$CONNS" "$RUN/swap.h2load" "http://127.0.0.1:$PROXY/x/1" "http://127.0.0.1:$PROXY/y/1" &
  local loader=$!
  local n=$((DURATION * SWAPS_PER_S)) i period
  period=$(awk -v s="$SWAPS_PER_S" 'BEGIN { printf "%.3f", 1 / s }')
  for i in $(seq "$n"); do
    if ((i % 2)); then cp "$RUN/b.yaml" "$RUN/edge.tmp"; else cp "$RUN/a.yaml" "$RUN/edge.tmp"; fi
    mv -f "$RUN/edge.tmp" "$RUN/edge.yaml"
    kill -HUP "$PROXY_PID"
    sleep "$period"
  done
  wait "$loader" || true
  local applied; applied=$(metric 'remora_config_reloads_total.*result="applied"')
  local rejected; rejected=$(metric 'remora_config_reloads_total.*result="rejected"')
  cat "$RUN/swap.h2load" >&2
  summary swap "$RUN/swap.h2load" "writes=$n reloads_applied=$((applied - applied0)) rejected=$rejected"
  kill "$PROXY_PID" "$up" 2>/dev/null || true
  wait "$PROXY_PID" "$up" 2>/dev/null || true
}

# --- kill ----------------------------------------------------------------------
scenario_kill() {
  nginx_up kill-1 1000000 $UP1; local u1=$NGINX_PID
  nginx_up kill-2 1000000 $UP2; local u2=$NGINX_PID
  nginx_up kill-3 1000000 $UP3; local u3=$NGINX_PID
  cat >"$RUN/kill.yaml" <<YAML
admin: { address: 127.0.0.1:$PROXY_ADMIN }
listeners:
  - name: edge
    address: 127.0.0.1:$PROXY
    routes:
      - name: all
        backends: [{ name: up }]
        retry: { attempts: 3, on: [reset, connect-failure, unavailable, 5xx] }
backends:
  - name: up
    balancer: round_robin
    outlier_detection: { consecutive_failures: 3 }
    endpoints:
      - { address: 127.0.0.1:$UP1 }
      - { address: 127.0.0.1:$UP2 }
      - { address: 127.0.0.1:$UP3 }
YAML
  proxy_file "$RUN/kill.yaml"
  log "kill: $RATE req/s for ${DURATION}s, endpoint :$UP2 SIGKILLed at ${KILL_AT}s"
  load "$RATE" "$DURATION" "$CONNS" "$RUN/kill.h2load" &
  local loader=$!
  sleep "$KILL_AT"
  kill -KILL "$u2"; wait "$u2" 2>/dev/null || true
  log "kill: endpoint :$UP2 killed"
  wait "$loader" || true
  local retries; retries=$(metric 'remora_retries_total|remora_upstream_retries_total')
  cat "$RUN/kill.h2load" >&2
  summary kill "$RUN/kill.h2load" "retries_metric=$retries"
  kill "$PROXY_PID" "$u1" "$u3" 2>/dev/null || true
  wait "$PROXY_PID" "$u1" "$u3" 2>/dev/null || true
}

# --- cp-down -------------------------------------------------------------------
cp_start() {
  RUST_LOG=info "$CP_BIN" run --mesh "$RUN/mesh.yaml" --listen "127.0.0.1:$CP" --admin "127.0.0.1:$CP_ADMIN" \
    >>"$RUN/cp.log" 2>&1 &
  CP_PID=$!
  pids+=("$CP_PID")
}

# cp_synced: the control plane's /status lists workload web applied and in sync.
cp_synced() {
  curl -fs "http://127.0.0.1:$CP_ADMIN/status" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
ok = any(p.get("workload") == "web" and p.get("in_sync") and p.get("applied") for p in d.get("proxies", []))
sys.exit(0 if ok else 1)' 2>/dev/null
}

scenario_cp_down() {
  nginx_up cp-up 1000000 $UP1; local up=$NGINX_PID
  cat >"$RUN/mesh.yaml" <<YAML
services:
  - name: api
    endpoints: [{ address: 127.0.0.1:$UP1 }]
workloads:
  - name: web
    outbound: 127.0.0.1:$PROXY
    calls: [api]
YAML
  "$CP_BIN" check "$RUN/mesh.yaml" >&2 || die "mesh invalid"
  cp_start
  RUST_LOG=info "$BIN" run --control-plane "127.0.0.1:$CP" --workload web --admin "127.0.0.1:$PROXY_ADMIN" \
    --workers "$WORKERS" >>"$RUN/proxy.log" 2>&1 &
  PROXY_PID=$!
  pids+=("$PROXY_PID")
  wait_http "http://127.0.0.1:$PROXY/" api || die "sidecar: no 200 through it (see $RUN/proxy.log)"
  local i
  for i in $(seq 100); do cp_synced && break; sleep 0.1; done
  cp_synced || die "control plane never saw the proxy in sync"
  local total=$((10 + CP_CYCLES * (CP_DOWN + 20)))
  log "cp-down: $CP_RATE req/s for ${total}s; $CP_CYCLES × control plane down ${CP_DOWN}s"
  load "$CP_RATE" "$total" "$CONNS" "$RUN/cp.h2load" -H ":authority: api" &
  local loader=$!
  sleep 10
  local times=() c t0 t1 ms
  for c in $(seq "$CP_CYCLES"); do
    kill -KILL "$CP_PID"; wait "$CP_PID" 2>/dev/null || true
    log "cp-down: cycle $c: control plane killed"
    sleep "$CP_DOWN"
    t0=$(now)
    cp_start
    ms=timeout
    for i in $(seq 1000); do # 20 s at most
      if cp_synced; then t1=$(now); ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }'); break; fi
      sleep 0.02
    done
    times+=("$ms")
    log "cp-down: cycle $c: restarted; proxy back in sync after ${ms} ms"
    local rest=1
    if [[ $ms != timeout ]]; then rest=$((20 - ms / 1000)); fi
    if ((rest < 1)); then rest=1; fi
    sleep "$rest"
  done
  wait "$loader" || true
  cat "$RUN/cp.h2load" >&2
  grep -iE 'subscri|control plane' "$RUN/proxy.log" | tail -n 20 >&2 || true
  # The same from the control plane's log, without the polling: its
  # listener bound → the proxy subscribed, per restart.
  local logged; logged=$(python3 - "$RUN/cp.log" <<'PY'
import datetime, re, sys
def ts(line):
    return datetime.datetime.fromisoformat(re.sub(r"Z$", "", line.split()[0]))
bound, out = None, []
for line in open(sys.argv[1]):
    if "control plane bound" in line:
        bound = ts(line)
    elif "proxy subscribed" in line and bound:
        out.append(str(int((ts(line) - bound).total_seconds() * 1000)))
        bound = None
print(" ".join(out[1:]))  # the first is the initial start
PY
)
  summary cp-down "$RUN/cp.h2load" "cycles=$CP_CYCLES down=${CP_DOWN}s reconnect_ms=[${times[*]}] (spawn → /status in sync, polled) bound_to_subscribed_ms=[$logged] (control plane log)"
  kill "$PROXY_PID" "$CP_PID" "$up" 2>/dev/null || true
  wait "$PROXY_PID" "$CP_PID" "$up" 2>/dev/null || true
}

# --- soak ----------------------------------------------------------------------
scenario_soak() {
  nginx_up soak-up 1000 $UP1; local up=$NGINX_PID
  cat >"$RUN/soak.yaml" <<YAML
admin: { address: 127.0.0.1:$PROXY_ADMIN }
listeners:
  - name: edge
    address: 127.0.0.1:$PROXY
    routes:
      - name: all
        backends: [{ name: up }]
        retry: { attempts: 2, on: [reset, connect-failure] }
backends:
  - name: up
    health_check: { path: /, interval: 1s }
    endpoints: [{ address: 127.0.0.1:$UP1 }]
YAML
  proxy_file "$RUN/soak.yaml"
  # The load runs 30 s before the first sample and 30 s after the last.
  log "soak: $SOAK_RATE req/s for $((SOAK_SECONDS + 60))s; samples every ${SAMPLE}s over ${SOAK_SECONDS}s"
  load "$SOAK_RATE" "$((SOAK_SECONDS + 60))" "$SOAK_CONNS" "$RUN/soak.h2load" &
  local loader=$!
  sleep 30
  local start; start=$(date +%s)
  local n=$((SOAK_SECONDS / SAMPLE)) i rss fds el
  echo "t_s rss_kib fds" >"$RUN/soak.tsv"
  : >"$RUN/churn.txt"
  for i in $(seq 0 "$n"); do
    el=$(($(date +%s) - start))
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$PROXY_PID/status")
    fds=$(find "/proc/$PROXY_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$el $rss $fds" | tee -a "$RUN/soak.tsv" >&2
    ((i < n)) || break
    timeout 30 h2load --h1 -n "$CHURN_REQUESTS" -c 50 "http://127.0.0.1:$PROXY/" 2>&1 | counts /dev/stdin >>"$RUN/churn.txt" || true
    local target=$((start + (i + 1) * SAMPLE)) t
    t=$(date +%s)
    if ((target > t)); then sleep $((target - t)); fi
  done
  wait "$loader" || true
  cat "$RUN/soak.h2load" >&2
  echo "series (t_s rss_kib fds):" >&2
  cat "$RUN/soak.tsv" >&2
  local churn; churn=$(awk '{ t += $1; b += $1 - $2 } END { printf "churn_requests=%d churn_bad=%d", t, b }' "$RUN/churn.txt")
  local stats; stats=$(awk 'NR > 1 {
      if (NR == 2) { r0 = $2; f0 = $3 } r1 = $2; f1 = $3
      if ($2 > rm) rm = $2; if ($3 > fm) fm = $3 }
    END { printf "rss_kib first=%d last=%d max=%d; fds first=%d last=%d max=%d", r0, r1, rm, f0, f1, fm }' "$RUN/soak.tsv")
  summary soak "$RUN/soak.h2load" "$stats $churn"
  kill "$PROXY_PID" "$up" 2>/dev/null || true
  wait "$PROXY_PID" "$up" 2>/dev/null || true
}

echo "machine: nproc=$(nproc) kernel=$(uname -r) load=[$(cut -d' ' -f1-3 /proc/loadavg)] date=$(date -u +%FT%TZ)"
case "$SCENARIO" in
  swap) scenario_swap ;;
  kill) scenario_kill ;;
  cp-down) scenario_cp_down ;;
  soak) scenario_soak ;;
  all) scenario_swap; scenario_kill; scenario_cp_down ;;
esac

#!/usr/bin/env bash
# The mesh path of issue 5: client → outbound proxy → mutual TLS → inbound
# proxy → server, against the client talking to the server directly, and
# against one plain proxy (no TLS) as a reference point. Alternated ROUNDS
# times in one run; prints medians as Markdown tables.
#
#   cargo build --release -p remora-proxy
#   ROUNDS=5 benches/mesh.sh                 # ~3 min per round, plus waits for quiet
#   PROFILE=20 benches/mesh.sh               # then perf-profile both proxies for 20 s at RATE
#
# Per round, each path in turn (the order reverses every other round):
#   1. HTTP/1.1 keep-alive: latency at a fixed RATE (oha, open loop,
#      --latency-correction; p50/p90/p99/p99.9) and max throughput
#      (wrk -t1 -c64); proxy CPU per request from /proc/PID/stat (utime +
#      stime), summed over the proxies on the path.
#   2. New mTLS handshakes per second against the inbound proxy
#      (`openssl s_time -new -www /`), beside nginx doing the same mutual TLS
#      with the same certificates (a reference for what the client can
#      drive). Each connection is a full handshake plus one HTTP/1.0 GET
#      without Host, which Remora answers 400 itself and nginx 200: the GET
#      makes the server finish its side (without it s_time hangs up before
#      the server has written its session tickets, and the proxy counts a
#      failed handshake).
#   3. Opaque TCP throughput (`protocol: tcp` listeners on both proxies):
#      TCP_MB MiB from a python source to a python sink, per path.
#   4. CPU used by processes this script did not start, during each run
#      (`other`, % of one core): the machine is shared.
#
# Paths and pinning (2 cores: the proxies cannot each have a core beside the
# load generator, so two layouts of the two-hop path are measured):
#   direct  client (CPU 0) → nginx (CPU 1)
#   one     client, nginx (CPU 0); one plain proxy (CPU 1)
#   plain2  client, nginx (CPU 0); two plain proxies chained, both on CPU 1:
#           the two-hop cost without TLS
#   two     client, nginx (CPU 0); outbound → mTLS → inbound, both on CPU 1:
#           one core for the whole mesh; the cleanest CPU and throughput figure
#   split   client + outbound proxy (CPU 0) → mTLS → inbound proxy + nginx
#           (CPU 1): each side's proxy beside its workload, as sidecars are
#   two-h1  as `two`, but the outbound proxy has `pool.mesh_http2: false`:
#           the hop is pooled HTTP/1.1 instead of one multiplexed HTTP/2
#           connection (A/B of HTTP/2 between proxies, same run; no TCP run)
# The mTLS paths report the hop's protocol: the outbound proxy's
# remora_upstream_connections_total{backend="api"} by protocol (`hop h2/h1
# conns`: connections opened to the peer, h2 and HTTP/1.1). For paths of
# two proxies the CPU per request is also given per proxy (outbound,
# inbound), beside nginx's own on the direct path.
# Every proxy runs one worker thread. The TCP test uses the same layouts (the
# sink where nginx is). The handshake test: openssl on CPU 0, the server
# (inbound proxy or nginx) on CPU 1.
#
# Certificates: a P-256 CA and two P-256 leaves whose only SAN is
# spiffe://cluster.local/ns/bench/sa/{web,api} (serverAuth + clientAuth),
# made with openssl. Needs nginx, wrk, oha, openssl, python3 (and perf for
# PROFILE). Knobs: ROUNDS [3], DURATION [10] s per run, RATE [1000],
# RATE_CONNS [32], CONNS [64], HS_SECONDS [10], TCP_MB [2000], PROFILE [0]
# seconds of perf on path `two`, SYSCALLS [0] seconds of `perf stat` per
# proxy on paths two and two-h1 (system calls, context switches), INSTR [0]
# requests: instead of the rounds, the proxies of paths two and two-h1 run
# under callgrind and the script prints user-space instructions per request
# of each (needs valgrind), QUIET_WAIT [180] s in all to wait before
# each run for others' CPU use to drop below 10% of a core, REMORA_BIN,
# OHA_BIN. The binary is copied first (others rebuild target/). Stops
# exactly the PIDs it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC_BIN=${REMORA_BIN:-$PWD/target/release/remora-proxy}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-1000}
RATE_CONNS=${RATE_CONNS:-32}
CONNS=${CONNS:-64}
HS_SECONDS=${HS_SECONDS:-10}
TCP_MB=${TCP_MB:-2000}
PROFILE=${PROFILE:-0}
SYSCALLS=${SYSCALLS:-0}
INSTR=${INSTR:-0}
OHA=${OHA_BIN:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
RUN=$(mktemp -d /tmp/remora-mesh.XXXXXX)
chmod 755 "$RUN"
RAW=$RUN/raw.tsv
HZ=$(getconf CLK_TCK)

# Ports: upstream nginx (CPU 0) / direct nginx (CPU 1) / nginx mTLS reference;
# TCP sinks; proxies (HTTP, TCP, admin).
UP=18380 UP_DIRECT=18381 NGINX_TLS=18382 SINK=18383 SINK_DIRECT=18384
ONE=19380 ONE_TCP=19381 ONE_ADMIN=19480
OUT=19382 OUT_TCP=19383 OUT_ADMIN=19482
IN=19384 IN_TCP=19385 IN_ADMIN=19484
OUT2=19386 OUT2_TCP=19387 OUT2_ADMIN=19486
IN2=19388 IN2_TCP=19389 IN2_ADMIN=19488
PLAIN=19390 PLAIN_TCP=19391 PLAIN_ADMIN=19490
OUT3=19392 OUT3_TCP=19393 OUT3_ADMIN=19492
WEB_ID=spiffe://cluster.local/ns/bench/sa/web
API_ID=spiffe://cluster.local/ns/bench/sa/api

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
log() { echo "mesh.sh: $*" >&2; }
die() { log "$*"; exit 1; }

for port in $UP $UP_DIRECT $NGINX_TLS $SINK $SINK_DIRECT $ONE $ONE_TCP $ONE_ADMIN $OUT $OUT_TCP $OUT_ADMIN $IN $IN_TCP $IN_ADMIN \
  $OUT2 $OUT2_TCP $OUT2_ADMIN $IN2 $IN2_TCP $IN2_ADMIN $PLAIN $PLAIN_TCP $PLAIN_ADMIN $OUT3 $OUT3_TCP $OUT3_ADMIN; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is taken: another run?"; fi
done
cp "$SRC_BIN" "$RUN/remora-proxy"
BIN=$RUN/remora-proxy

# --- certificates -----------------------------------------------------------
certs() {
  local d=$RUN/pki name
  mkdir -p "$d"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -subj "/O=remora bench/CN=bench mesh root" -days 2 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$d/roots.pem"
  for name in web api; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$name.key" 2>/dev/null
    openssl req -new -key "$d/$name.key" -subj "/O=remora bench" -out "$d/$name.csr"
    printf '%s\n' "subjectAltName=URI:spiffe://cluster.local/ns/bench/sa/$name" \
      "extendedKeyUsage=serverAuth,clientAuth" "keyUsage=critical,digitalSignature" \
      "basicConstraints=critical,CA:FALSE" >"$d/$name.ext"
    openssl x509 -req -in "$d/$name.csr" -CA "$d/roots.pem" -CAkey "$d/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
      -days 2 -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
  done
}
certs
PKI=$RUN/pki

# --- servers ------------------------------------------------------------------
nginx_conf() { # name server-blocks
  mkdir -p "$RUN/$1.tmp"
  cat >"$RUN/$1.conf" <<NGINX
worker_processes 1;
daemon off;
pid $RUN/$1.pid;
error_log $RUN/$1-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $RUN/$1.tmp/body;
  proxy_temp_path $RUN/$1.tmp/proxy;
  fastcgi_temp_path $RUN/$1.tmp/fastcgi;
  uwsgi_temp_path $RUN/$1.tmp/uwsgi;
  scgi_temp_path $RUN/$1.tmp/scgi;
$2
}
NGINX
}
nginx_conf up "  server { listen 127.0.0.1:$UP backlog=4096; location / { return 200 \"ok\n\"; } }"
nginx_conf direct "  server { listen 127.0.0.1:$UP_DIRECT backlog=4096; location / { return 200 \"ok\n\"; } }
  server {
    listen 127.0.0.1:$NGINX_TLS ssl backlog=4096;
    ssl_certificate $PKI/api.crt;
    ssl_certificate_key $PKI/api.key;
    ssl_client_certificate $PKI/roots.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / { return 200 \"ok\n\"; }
  }"

cat >"$RUN/sink.py" <<'PY'
# Accepts connections one at a time; counts bytes to EOF, answers the count.
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    n = 0
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        n += k
    c.sendall(b"%d\n" % n)
    c.close()
PY
cat >"$RUN/source.py" <<'PY'
# Sends MIB MiB of zeros, half-closes, waits for the sink's count; prints MiB/s.
import socket, sys, time
port, mib = int(sys.argv[1]), int(sys.argv[2])
buf = bytes(1 << 20)
t0 = time.monotonic()
c = socket.create_connection(("127.0.0.1", port))
for _ in range(mib):
    c.sendall(buf)
c.shutdown(socket.SHUT_WR)
got = b""
while not got.endswith(b"\n"):
    k = c.recv(64)
    if not k:
        break
    got += k
dt = time.monotonic() - t0
if got.strip() != str(mib << 20).encode():
    sys.exit(f"sink counted {got!r}, sent {mib << 20}")
print(f"{mib / dt:.0f}")
PY

start() { # cpu logname cmd... ; sets STARTED
  taskset -c "$1" "${@:3}" >"$RUN/$2.log" 2>&1 &
  STARTED=$!
  pids+=("$STARTED")
}
start 0 nginx-up nginx -c "$RUN/up.conf" -p "$RUN"
start 1 nginx-direct nginx -c "$RUN/direct.conf" -p "$RUN"
NGINX_DIRECT=$STARTED
start 0 sink python3 "$RUN/sink.py" "$SINK"
start 1 sink-direct python3 "$RUN/sink.py" "$SINK_DIRECT"

# --- proxies ------------------------------------------------------------------
identity="identity:
  trust_roots_file: $PKI/roots.pem
  certificate: { cert: $PKI/NAME.crt, key: $PKI/NAME.key }"
plain_yaml() { # admin http tcp app sink
  cat <<YAML
admin: { address: 127.0.0.1:$1 }
listeners:
  - name: edge
    address: 127.0.0.1:$2
    routes:
      - name: all
        backends: [{ name: app }]
  - name: edge-tcp
    address: 127.0.0.1:$3
    protocol: tcp
    tcp_backend: sink
backends:
  - name: app
    endpoints: [{ address: 127.0.0.1:$4 }]
  - name: sink
    endpoints: [{ address: 127.0.0.1:$5 }]
YAML
}
plain_yaml $ONE_ADMIN $ONE $ONE_TCP $UP $SINK >"$RUN/one.yaml"
# Two plain hops: this proxy in front of the one-hop proxy.
plain_yaml $PLAIN_ADMIN $PLAIN $PLAIN_TCP $ONE $ONE_TCP >"$RUN/plain.yaml"
outbound_yaml() { # admin http tcp inbound-http inbound-tcp mesh_http2
  cat <<YAML
admin: { address: 127.0.0.1:$1 }
listeners:
  - name: edge
    address: 127.0.0.1:$2
    routes:
      - name: all
        backends: [{ name: api }]
  - name: edge-tcp
    address: 127.0.0.1:$3
    protocol: tcp
    tcp_backend: api-tcp
backends:
  - name: api
    pool: { mesh_http2: $6 }
    endpoints: [{ address: 127.0.0.1:$4, identity: "$API_ID" }]
  - name: api-tcp
    endpoints: [{ address: 127.0.0.1:$5, identity: "$API_ID" }]
${identity//NAME/web}
YAML
}
inbound_yaml() { # admin http tcp app sink
  cat <<YAML
admin: { address: 127.0.0.1:$1 }
listeners:
  - name: inbound
    address: 127.0.0.1:$2
    inbound: { mode: strict }
    routes:
      - name: app
        backends: [{ name: app }]
  - name: inbound-tcp
    address: 127.0.0.1:$3
    inbound: { mode: strict }
    protocol: tcp
    tcp_backend: sink
backends:
  - name: app
    endpoints: [{ address: 127.0.0.1:$4 }]
  - name: sink
    endpoints: [{ address: 127.0.0.1:$5 }]
${identity//NAME/api}
YAML
}
# The mesh on CPU 1, talking to the servers on CPU 0.
outbound_yaml $OUT_ADMIN $OUT $OUT_TCP $IN $IN_TCP true >"$RUN/outbound.yaml"
# The A/B path: the same inbound proxy, reached over HTTP/1.1.
outbound_yaml $OUT3_ADMIN $OUT3 $OUT3_TCP $IN $IN_TCP false >"$RUN/outbound-h1.yaml"
inbound_yaml $IN_ADMIN $IN $IN_TCP $UP $SINK >"$RUN/inbound.yaml"
# Split: the outbound proxy on the client's CPU 0, the inbound proxy on the
# server's CPU 1, talking to the direct path's servers.
outbound_yaml $OUT2_ADMIN $OUT2 $OUT2_TCP $IN2 $IN2_TCP true >"$RUN/outbound-split.yaml"
inbound_yaml $IN2_ADMIN $IN2 $IN2_TCP $UP_DIRECT $SINK_DIRECT >"$RUN/inbound-split.yaml"
export RUST_LOG=warn
# INSTR: the proxies of paths two and two-h1 under callgrind (see below).
declare -A WRAP=()
if [[ $INSTR != 0 ]]; then
  for p in outbound outbound-h1 inbound; do
    WRAP[$p]="valgrind --tool=callgrind --callgrind-out-file=$RUN/$p.cg.%p"
  done
fi
for p in one:1 plain:1 outbound:1 outbound-h1:1 inbound:1 outbound-split:0 inbound-split:1; do
  # shellcheck disable=SC2086 # WRAP is a command line
  start "${p#*:}" "${p%:*}" ${WRAP[${p%:*}]:-} "$BIN" run --config "$RUN/${p%:*}.yaml" --workers 1
  v=${p%:*}; v=${v^^}; printf -v "PID_${v//-/_}" '%s' "$STARTED"
done

# --- checks: every path answers, TLS is really mutual --------------------------
wait_ok() { # url
  local i
  for i in $(seq 100); do
    [[ $(curl -fsS --max-time 2 "$1" 2>/dev/null) == ok ]] && return 0
    sleep 0.1
  done
  for p in one plain outbound outbound-h1 inbound outbound-split inbound-split nginx-up nginx-direct; do tail -n 5 "$RUN/$p.log" >&2 || true; done
  die "no 'ok' from $1"
}
wait_ok "http://127.0.0.1:$UP_DIRECT/"
wait_ok "http://127.0.0.1:$ONE/"
wait_ok "http://127.0.0.1:$OUT/"
wait_ok "http://127.0.0.1:$OUT2/"
wait_ok "http://127.0.0.1:$OUT3/"
wait_ok "http://127.0.0.1:$PLAIN/"
curl -fsS --max-time 2 "http://127.0.0.1:$IN/" >/dev/null 2>&1 && die "the strict inbound listener answered plaintext"
metric() { # admin-port pattern -> sum of matching samples
  curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" | awk -v pat="$2" 'index($0, pat) == 1 {s += $NF} END {print s + 0}'
}
n=$(metric $IN_ADMIN "remora_inbound_connections_total{client_id=\"$WEB_ID\",listener=\"inbound\"}")
[[ $n -ge 1 ]] || die "the inbound proxy counted no connection from $WEB_ID"
[[ $(curl -fsS --max-time 2 -k --cert "$PKI/web.crt" --key "$PKI/web.key" "https://127.0.0.1:$NGINX_TLS/") == ok ]] ||
  die "nginx with mutual TLS did not answer"
for port in $SINK_DIRECT $ONE_TCP $PLAIN_TCP $OUT_TCP $OUT2_TCP; do
  timeout 20 python3 "$RUN/source.py" "$port" 1 >/dev/null || die "opaque TCP via :$port failed"
done
tls_info() { # port -> "TLSv1.3 cipher group"
  openssl s_client -connect "127.0.0.1:$1" -cert "$PKI/web.crt" -key "$PKI/web.key" -CAfile "$PKI/roots.pem" \
    -verify_return_error -brief </dev/null 2>&1 | awk -F': ' '/Protocol version/ {v=$2} /Ciphersuite/ {c=$2} /(Server|Negotiated) Temp Key|Peer Temp Key/ {k=$2} END {print v, c, k}'
}
log "mTLS at the inbound proxy: $(tls_info $IN); at nginx: $(tls_info $NGINX_TLS)"
hop_conns() { # outbound-admin-port protocol -> connections opened to the peer
  metric "$1" "remora_upstream_connections_total{backend=\"api\",protocol=\"$2\"}"
}
[[ $(hop_conns $OUT_ADMIN http2) -ge 1 && $(hop_conns $OUT_ADMIN http1) -eq 0 ]] ||
  die "the hop of path two is not HTTP/2 (outbound proxy's upstream connections: h2 $(hop_conns $OUT_ADMIN http2), h1 $(hop_conns $OUT_ADMIN http1))"
[[ $(hop_conns $OUT3_ADMIN http2) -eq 0 ]] || die "the hop of path two-h1 used HTTP/2 despite mesh_http2: false"
log "hop between the proxies: two h2, split h2 ($(hop_conns $OUT2_ADMIN http2) h2 connection), two-h1 http/1.1; inbound mTLS connections by ALPN: $(curl -fsS "http://127.0.0.1:$IN_ADMIN/metrics" | awk '/^remora_inbound_mtls_connections_total.*listener="inbound"/ {printf "%s ", $0}')"

if [[ $INSTR != 0 ]]; then
  # User-space instructions per request of each proxy on the two mTLS
  # paths (HTTP/2 hop, HTTP/1.1 hop), one request at a time, under
  # callgrind: noise-free, for where the HTTP/2 hop's extra CPU goes. The
  # dumps are copied to /tmp for callgrind_annotate.
  instr_of() { # pid logname -> instructions since the last zeroing
    callgrind_control -d "$1" >/dev/null 2>&1
    awk '/^(summary|totals):/ {print $2; exit}' "$(ls -t "$RUN/$2".cg.* | head -1)"
  }
  echo; echo "### Instructions per request at one request at a time (callgrind, $INSTR requests)"; echo
  declare -A PIDS_INSTR=([two]="$PID_OUTBOUND $PID_INBOUND" [two-h1]="$PID_OUTBOUND_H1 $PID_INBOUND")
  declare -A URL_INSTR=([two]="http://127.0.0.1:$OUT/" [two-h1]="http://127.0.0.1:$OUT3/")
  echo "| path | outbound proxy | inbound proxy |"
  echo "|---|---:|---:|"
  for t in two two-h1; do
    read -r p_out p_in <<<"${PIDS_INSTR[$t]}"
    name_out=$([[ $t == two ]] && echo outbound || echo outbound-h1)
    timeout 300 "$OHA" -n 300 -c 1 --no-tui "${URL_INSTR[$t]}" >/dev/null
    callgrind_control -z "$p_out" >/dev/null 2>&1
    callgrind_control -z "$p_in" >/dev/null 2>&1
    timeout 900 "$OHA" -n "$INSTR" -c 1 --no-tui "${URL_INSTR[$t]}" >/dev/null
    i_out=$(instr_of "$p_out" "$name_out")
    i_in=$(instr_of "$p_in" inbound)
    cp "$(ls -t "$RUN/$name_out".cg.* | head -1)" "/tmp/remora-mesh-$t-outbound.callgrind"
    cp "$(ls -t "$RUN"/inbound.cg.* | head -1)" "/tmp/remora-mesh-$t-inbound.callgrind"
    awk -v t="$t" -v o="$i_out" -v i="$i_in" -v n="$INSTR" 'BEGIN {printf "| %s | %.0f | %.0f |\n", t, o / n, i / n}'
  done
  echo; echo "Dumps: /tmp/remora-mesh-{two,two-h1}-{outbound,inbound}.callgrind"
  exit 0
fi

# --- measuring ----------------------------------------------------------------
# CPU ticks of the given processes and their threads (utime + stime).
ticks() { local s=0 p; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $s; }
# CPU ticks of every user process that is not this script or its descendants.
foreign_ticks() {
  python3 - "$$" <<'PY'
import os, sys
procs = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        s = open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    rest = s[s.rfind(")") + 2:].split()
    procs[int(d)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
children = {}
for p, (pp, _) in procs.items():
    children.setdefault(pp, []).append(p)
ours, stack = set(), [int(sys.argv[1])]
while stack:
    p = stack.pop()
    if p not in ours:
        ours.add(p)
        stack.extend(children.get(p, []))
print(sum(t for p, (pp, t) in procs.items() if p not in ours and p != 2 and pp != 2))
PY
}
now() { date +%s.%N; }
QUIET_LEFT=${QUIET_WAIT:-180}
wait_quiet() { # bounded wait for others' CPU use to drop below 10% of a core
  local f0 f1 pct
  while :; do
    f0=$(foreign_ticks); sleep 1; f1=$(foreign_ticks)
    pct=$(((f1 - f0) * 100 / HZ))
    if [[ $pct -lt 10 || $QUIET_LEFT -le 0 ]]; then return 0; fi
    log "machine busy: others use $pct% of a core; waiting (${QUIET_LEFT}s of waiting left)"
    sleep 4; QUIET_LEFT=$((QUIET_LEFT - 5))
  done
}
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" "$4" >>"$RAW"; }
# Opens a measured window: CPU of the proxies in $1 (space-separated PIDs).
window_open() {
  local p
  W_PIDS=$1; W_T0=$(ticks $W_PIDS); W_F0=$(foreign_ticks); W_S0=$(now)
  W_EACH0=(); for p in $W_PIDS; do W_EACH0+=("$(ticks "$p")"); done
}
window_close() { # kind target: records other_pct; sets W_CPU (s of proxy CPU), W_EACH (s per PID), W_SECS
  local t1 f1 s1 p i=0
  t1=$(ticks $W_PIDS); f1=$(foreign_ticks); s1=$(now)
  W_EACH=()
  for p in $W_PIDS; do W_EACH+=("$(awk -v t=$(($(ticks "$p") - W_EACH0[i])) -v hz="$HZ" 'BEGIN {print t / hz}')"); i=$((i + 1)); done
  W_SECS=$(awk -v a="$W_S0" -v b="$s1" 'BEGIN {print b - a}')
  W_CPU=$(awk -v t=$((t1 - W_T0)) -v hz="$HZ" 'BEGIN {print t / hz}')
  record "$1" "$2" other_pct "$(awk -v t=$((f1 - W_F0)) -v hz="$HZ" -v s="$W_SECS" 'BEGIN {printf "%.0f", t / hz / s * 100}')"
}

nginx_tree() { echo "$NGINX_DIRECT" $(pgrep -P "$NGINX_DIRECT"); }
declare -A URL=([direct]="http://127.0.0.1:$UP_DIRECT/" [one]="http://127.0.0.1:$ONE/"
  [plain2]="http://127.0.0.1:$PLAIN/" [two]="http://127.0.0.1:$OUT/" [split]="http://127.0.0.1:$OUT2/"
  [two-h1]="http://127.0.0.1:$OUT3/")
# For the direct path, the CPU column is the upstream nginx's own.
declare -A PIDS=([direct]="$(nginx_tree)" [one]="$PID_ONE" [plain2]="$PID_PLAIN $PID_ONE" [two]="$PID_OUTBOUND $PID_INBOUND"
  [split]="$PID_OUTBOUND_SPLIT $PID_INBOUND_SPLIT" [two-h1]="$PID_OUTBOUND_H1 $PID_INBOUND")
# The outbound proxy's admin port on the mTLS paths: the hop's protocol.
declare -A HOP_ADMIN=([two]=$OUT_ADMIN [split]=$OUT2_ADMIN [two-h1]=$OUT3_ADMIN)
declare -A TCP_PORT=([direct]=$SINK_DIRECT [one]=$ONE_TCP [plain2]=$PLAIN_TCP [two]=$OUT_TCP [split]=$OUT2_TCP)

http_target() { # target
  local url=${URL[$1]} out reqs errs
  timeout 30 taskset -c 0 wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null
  window_open "${PIDS[$1]}"
  out=$(timeout $((DURATION + 20)) taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url")
  window_close http-max "$1"
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) n += $i} END {print n + 0}' <<<"$out")
  record http-max "$1" rps "$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  record http-max "$1" cpu_us "$(awk -v c="$W_CPU" -v n="$reqs" 'BEGIN {printf "%.2f", c * 1e6 / n}')"
  record http-max "$1" errors "$errs"
  window_open "${PIDS[$1]}"
  timeout $((DURATION + 20)) taskset -c 0 "$OHA" -q "$RATE" -c "$RATE_CONNS" -z "${DURATION}s" --latency-correction \
    --no-tui --output-format json "$url" >"$RUN/oha.json"
  window_close http-rate "$1"
  python3 - "$W_CPU" "$RUN/oha.json" >"$RUN/oha.tsv" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
p = d["latencyPercentiles"]
ok = d["statusCodeDistribution"].get("200", 0)
# Requests still in flight when -z ends are "aborted due to deadline": not errors.
total = sum(d["statusCodeDistribution"].values()) + sum(
    n for e, n in d.get("errorDistribution", {}).items() if "deadline" not in e)
print(f"p50\t{p['p50'] * 1e6:.0f}\np90\t{p['p90'] * 1e6:.0f}\np99\t{p['p99'] * 1e6:.0f}\np999\t{p['p99.9'] * 1e6:.0f}")
print(f"rate\t{d['summary']['requestsPerSec']:.0f}\nerrors\t{total - ok}")
print(f"cpu_us\t{float(sys.argv[1]) * 1e6 / max(ok, 1):.2f}")
PY
  while IFS=$'\t' read -r k v; do record http-rate "$1" "$k" "$v"; done <"$RUN/oha.tsv"
  # Two proxies: each one's CPU per request (outbound first, as in PIDS).
  local ok
  ok=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["statusCodeDistribution"].get("200", 0))' "$RUN/oha.json")
  if [[ ${#W_EACH[@]} -eq 2 && $1 != direct ]]; then
    record http-rate "$1" cpu_us_out "$(awk -v c="${W_EACH[0]}" -v n="$ok" 'BEGIN {printf "%.2f", c * 1e6 / (n > 0 ? n : 1)}')"
    record http-rate "$1" cpu_us_in "$(awk -v c="${W_EACH[1]}" -v n="$ok" 'BEGIN {printf "%.2f", c * 1e6 / (n > 0 ? n : 1)}')"
  fi
  if [[ -n ${HOP_ADMIN[$1]:-} ]]; then
    record http-rate "$1" hop_h2 "$(hop_conns "${HOP_ADMIN[$1]}" http2)"
    record http-rate "$1" hop_h1 "$(hop_conns "${HOP_ADMIN[$1]}" http1)"
  fi
}

handshakes() { # target port server-pids
  local out n before=0 after
  [[ $1 == remora ]] && before=$(metric $IN_ADMIN "remora_inbound_connections_total{client_id=\"$WEB_ID\",listener=\"inbound\"}")
  window_open "$3"
  out=$(timeout $((HS_SECONDS + 20)) taskset -c 0 openssl s_time -connect "127.0.0.1:$2" -new -www / -time "$HS_SECONDS" \
    -cert "$PKI/web.crt" -key "$PKI/web.key" -CAfile "$PKI/roots.pem" 2>&1)
  window_close handshake "$1"
  n=$(awk '/connections in .* real seconds/ {print $1; exit}' <<<"$out")
  [[ -n $n ]] || die "s_time against :$2 printed no count: $out"
  record handshake "$1" per_s "$(awk -v n="$n" -v s="$W_SECS" 'BEGIN {printf "%.0f", n / s}')"
  record handshake "$1" server_us "$(awk -v c="$W_CPU" -v n="$n" 'BEGIN {printf "%.0f", c * 1e6 / n}')"
  record handshake "$1" server_busy_pct "$(awk -v c="$W_CPU" -v s="$W_SECS" 'BEGIN {printf "%.0f", c / s * 100}')"
  if [[ $1 == remora ]]; then
    sleep 0.5
    after=$(metric $IN_ADMIN "remora_inbound_connections_total{client_id=\"$WEB_ID\",listener=\"inbound\"}")
    record handshake "$1" server_counted_pct "$(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN {printf "%.0f", (b - a) / n * 100}')"
  fi
}

tcp_target() { # target
  local mibs pids=${PIDS[$1]}
  [[ $1 == direct ]] && pids=""
  window_open "$pids"
  mibs=$(timeout 300 taskset -c 0 python3 "$RUN/source.py" "${TCP_PORT[$1]}" "$TCP_MB") || die "TCP $1 failed"
  window_close tcp "$1"
  record tcp "$1" mib_s "$mibs"
  record tcp "$1" cpu_us_per_mib "$(awk -v c="$W_CPU" -v n="$TCP_MB" 'BEGIN {printf "%.0f", c * 1e6 / n}')"
}

: >"$RAW"
for ROUND in $(seq "$ROUNDS"); do
  if ((ROUND % 2)); then paths=(direct one plain2 two two-h1 split); else paths=(split two-h1 two plain2 one direct); fi
  for t in "${paths[@]}"; do wait_quiet; http_target "$t"; done
  if ((ROUND % 2)); then order=(remora nginx); else order=(nginx remora); fi
  for t in "${order[@]}"; do
    case $t in
      remora) wait_quiet; handshakes remora $IN "$PID_INBOUND" ;;
      nginx) wait_quiet; handshakes nginx $NGINX_TLS "$(nginx_tree)" ;;
    esac
  done
  for t in "${paths[@]}"; do [[ $t == two-h1 ]] || { wait_quiet; tcp_target "$t"; }; done
  log "round $ROUND of $ROUNDS done (load average $(cut -d' ' -f1-3 /proc/loadavg))"
done

python3 - "$RAW" "$RATE" "$ROUNDS" "$TCP_MB" <<'PY'
import sys, statistics
from collections import defaultdict
raw, rate, rounds, mib = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
v = defaultdict(dict)  # (kind, path, key) -> {round: value}
for line in open(raw):
    r, kind, path, key, val = line.rstrip("\n").split("\t")
    v[(kind, path, key)][int(r)] = float(val)
QUIET = 10  # a run is clean when others used < 10% of a core during it
def clean(kind, path):  # rounds whose run was clean; all rounds when none was
    o = v[(kind, path, "other_pct")]
    return [r for r in o if o[r] < QUIET] or list(o)
def med(kind, path, key):
    xs = [v[(kind, path, key)][r] for r in clean(kind, path) if r in v[(kind, path, key)]]
    return statistics.median(xs) if xs else float("nan")
def paired(kind, path, key):  # median of (path - direct) over rounds clean for both
    a, b = v[(kind, path, key)], v[(kind, "direct", key)]
    both = set(clean(kind, path)) & set(clean(kind, "direct")) or set(a) & set(b)
    return statistics.median(a[r] - b[r] for r in both)
def others(kind, path):
    o = v[(kind, path, "other_pct")]
    n = sum(x < QUIET for x in o.values())
    return f"{n}/{len(o)} (max {max(o.values()):.0f}%)"
paths = ("direct", "one", "plain2", "two", "two-h1", "split")
name = {"two-h1": "two hops, mTLS, `mesh_http2: false` (HTTP/1.1 hop), both proxies on CPU 1",
        "direct": "direct: client → nginx", "one": "one hop, plain: client → proxy → nginx",
        "plain2": "two hops, plain (no TLS), both proxies on CPU 1",
        "two": "two hops, mTLS (HTTP/2 hop), both proxies on CPU 1", "split": "two hops, mTLS, split: outbound on CPU 0, inbound on CPU 1"}
d_rps = med("http-max", "direct", "rps")
print(f"Medians over the clean runs of {rounds} rounds: runs during which processes this script did not start used"
      f" < {QUIET}% of a core (all runs when none was clean). `clean` = clean runs / runs, and the most others used.\n")
print(f"### HTTP/1.1 keep-alive\n")
print(f"| path | max req/s | × direct | proxy CPU µs/req at max | p50 µs at {rate}/s | p90 µs | p99 µs | p99.9 µs | +p50 µs | +p90 µs | +p99 µs | proxy CPU µs/req at {rate}/s | errors | clean (max run; rate run) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for t in paths:
    cpu = lambda k: f"({med(k, t, 'cpu_us'):.1f})" if t == "direct" else f"{med(k, t, 'cpu_us'):.1f}"
    plus = lambda k: "n/a" if t == "direct" else f"{paired('http-rate', t, k):+.0f}"
    errs = sum(v[("http-max", t, "errors")].values()) + sum(v[("http-rate", t, "errors")].values())
    print(f"| {name[t]} | {med('http-max', t, 'rps'):,.0f} | {med('http-max', t, 'rps') / d_rps:.2f} | {cpu('http-max')} | "
          f"{med('http-rate', t, 'p50'):.0f} | {med('http-rate', t, 'p90'):.0f} | {med('http-rate', t, 'p99'):,.0f} | {med('http-rate', t, 'p999'):,.0f} | "
          f"{plus('p50')} | {plus('p90')} | {plus('p99')} | {cpu('http-rate')} | {errs:.0f} | {others('http-max', t)}; {others('http-rate', t)} |")
print(f"\n+p50/+p90/+p99: median of (path − direct) in the same round, over rounds clean for both. Direct row, CPU in brackets: "
      "the upstream nginx's own. Achieved rates: " + ", ".join(f"{t} {med('http-rate', t, 'rate'):.0f}/s" for t in paths))
print(f"\n### Two proxies at {rate}/s: CPU per request per proxy, and the hop\n")
print(f"| path | outbound CPU µs/req | inbound CPU µs/req | nginx's own CPU µs/req (direct) | hop | hop connections opened (h2 / HTTP/1.1, end of run) |")
print("|---|---:|---:|---:|---|---|")
for t in ("two", "two-h1", "split"):
    h2, h1 = med("http-rate", t, "hop_h2"), med("http-rate", t, "hop_h1")
    hop = "h2" if h2 > 0 and h1 == 0 else "HTTP/1.1" if h2 == 0 else "mixed"
    print(f"| {name[t]} | {med('http-rate', t, 'cpu_us_out'):.1f} | {med('http-rate', t, 'cpu_us_in'):.1f} | "
          f"{med('http-rate', 'direct', 'cpu_us'):.1f} | {hop} | {h2:.0f} / {h1:.0f} |")
print("\nPer round, p99 µs at the fixed rate (* = not clean):\n")
print("| round | " + " | ".join(paths) + " |\n|---|" + "---:|" * len(paths))
for r in sorted(v[("http-rate", "direct", "p99")]):
    cell = lambda t: f"{v[('http-rate', t, 'p99')].get(r, float('nan')):,.0f}" + (
        "*" if v[("http-rate", t, "other_pct")].get(r, 100) >= QUIET else "")
    print(f"| {r} | " + " | ".join(cell(t) for t in paths) + " |")
print(f"\n### New mTLS handshakes (openssl s_time -new -www /)\n")
print("| server | handshakes/s | server CPU µs/handshake | server core busy % | clean |")
print("|---|---:|---:|---:|---|")
for t, label in (("remora", "Remora inbound proxy"), ("nginx", "nginx, same certificates (reference)")):
    print(f"| {label} | {med('handshake', t, 'per_s'):,.0f} | {med('handshake', t, 'server_us'):.0f} | "
          f"{med('handshake', t, 'server_busy_pct'):.0f} | {others('handshake', t)} |")
print(f"\nThe inbound proxy counted {med('handshake', 'remora', 'server_counted_pct'):.0f}% of s_time's connections as mTLS from the web identity.")
print(f"\n### Opaque TCP, {mib} MiB per run\n")
print("| path | MiB/s | × direct | proxy CPU µs/MiB | clean |")
print("|---|---:|---:|---:|---|")
d_tcp = med("tcp", "direct", "mib_s")
for t in paths:
    cpu = "n/a" if t == "direct" else f"{med('tcp', t, 'cpu_us_per_mib'):.0f}"
    if t == "two-h1":
        continue
    print(f"| {name[t]} | {med('tcp', t, 'mib_s'):,.0f} | {med('tcp', t, 'mib_s') / d_tcp:.2f} | {cpu} | {others('tcp', t)} |")
print("\nRaw rows (round kind path key value):")
for line in open(raw):
    print("    " + line.rstrip("\n").replace("\t", " "))
PY

if [[ $SYSCALLS != 0 ]]; then
  # Per proxy, at RATE for SYSCALLS seconds: system calls and context
  # switches per request, HTTP/2 hop (two) against HTTP/1.1 hop (two-h1).
  echo; echo "### System calls and context switches per request at $RATE req/s (perf stat, ${SYSCALLS}s)"; echo
  echo "| path | proxy | syscalls/req | context switches/req |"
  echo "|---|---|---:|---:|"
  for t in two two-h1; do
    timeout $((SYSCALLS + 30)) taskset -c 0 "$OHA" -q "$RATE" -c "$RATE_CONNS" -z "$((SYSCALLS + 4))s" --no-tui \
      --output-format json "${URL[$t]}" >"$RUN/sys-oha.json" &
    load=$!
    sleep 2
    read -r p_out p_in <<<"${PIDS[$t]}"
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$p_out" -o "$RUN/sys-out.stat" -- sleep "$SYSCALLS" &
    s_out=$!
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$p_in" -o "$RUN/sys-in.stat" -- sleep "$SYSCALLS"
    wait "$s_out" "$load" || true
    n=$((RATE * SYSCALLS))
    for side in out in; do
      awk -F, -v t="$t" -v side="$side" -v n="$n" '/sys_enter/ {c = $1} /context-switches/ {w = $1}
        END {printf "| %s | %s | %.1f | %.1f |\n", t, (side == "out" ? "outbound" : "inbound"), c / n, w / n}' "$RUN/sys-$side.stat"
    done
  done
fi

if [[ $PROFILE != 0 ]]; then
  prof=/tmp/remora-mesh-profile
  mkdir -p "$prof"
  log "profiling both proxies for ${PROFILE}s at $RATE req/s through two hops"
  timeout $((PROFILE + 30)) taskset -c 0 "$OHA" -q "$RATE" -c "$RATE_CONNS" -z "$((PROFILE + 4))s" --no-tui "${URL[two]}" >/dev/null &
  load=$!
  sleep 2
  perf record -F 999 --call-graph dwarf -p "$PID_OUTBOUND,$PID_INBOUND" -o "$prof/perf.data" -- sleep "$PROFILE" 2>"$prof/record.log"
  wait "$load" || true
  echo; echo "### perf: both proxies at $RATE req/s, self time grouped"; echo
  perf report -i "$prof/perf.data" --no-children --sort dso,symbol --percent-limit 0 --stdio -g none 2>/dev/null | python3 -c '
import re, sys
groups = [  # first match wins; (label, dso test, pattern at the start of the symbol)
    ("kernel: interrupts-off exits (context switch, wake-ups)", "kernel", r"finish_task_switch|_raw_spin_unlock_irq"),
    ("kernel: everything else (TCP/IP, syscalls, epoll)", "kernel", r""),
    ("TLS: rustls and ring (crypto)", "", r"<?(rustls|tokio_rustls|ring)\b|ring_core"),
    ("hyper", "", r"<?hyper(_util)?::"),
    ("http, httparse, bytes", "", r"<?(http|httparse|bytes)::"),
    ("tokio and mio", "", r"<?(tokio|mio)::"),
    ("remora_proxy", "", r"<?remora_proxy::"),
    ("malloc/free", "libc", r".*(malloc|free|_int_|realloc|unlink_chunk)"),
    ("memcpy/memmove", "", r"__mem(cpy|move|set)"),
    ("other user space", "", r""),
]
tot = {g[0]: 0.0 for g in groups}
for line in sys.stdin:
    m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    pct, dso, sym = float(m[1]), m[2], m[4]
    kern = m[3] == "k"
    for label, d, pat in groups:
        if (d == "kernel") != kern or (d == "libc" and "libc" not in dso):
            continue
        if re.match(pat, sym):
            tot[label] += pct
            break
print("| part | % of both proxies CPU |\n|---|---:|")
for label, _, _ in groups:
    print(f"| {label} | {tot[label]:.1f} |")
'
  echo; echo "### perf: self time by symbol (top)"; echo
  perf report -i "$prof/perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio -g none 2>/dev/null | grep -v '^#' | sed '/^$/d' | cut -c1-120 || true
  echo; echo "### perf: inclusive, remora and library frames (top)"; echo
  perf report -i "$prof/perf.data" --children --sort symbol --percent-limit 3 --stdio -g none 2>/dev/null | grep -v '^#' | sed '/^$/d' | cut -c1-160 | grep -v '\[k\]' | sed -n 1,40p || true
  log "perf data kept in $prof/perf.data"
fi

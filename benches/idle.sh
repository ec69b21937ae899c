#!/usr/bin/env bash
# idle.sh - memory per idle HTTP/1.1 keep-alive client connection: Remora,
# nginx and haproxy in the same run.
#
#   benches/idle.sh [ROUNDS]          # default 3; ~1 min per round
#
# One nginx upstream (`return 200 "ok"`) for the whole run. Per round, each
# proxy in turn (the order rotates every round) is started fresh with one
# worker, then `idle_client.py` warms it up, reads its RSS (the process tree
# summed: nginx's master and worker), opens CONNS (10,000) keep-alive
# connections with one `GET /` each, waits 1 s, reads the RSS again, checks
# that every connection is still open, and closes them. Reported: RSS growth
# per connection (KiB), the median over the rounds. A fresh process per
# round, because a second batch would reuse what the allocator kept from
# the first.
#
# nginx and haproxy run /work/shared/bench's templates (as peers.sh renders
# them), with room for CONNS connections: nginx worker_connections and
# haproxy maxconn raised to CONNS + 1000 (8192 and 8000 in the templates),
# haproxy's `ulimit-n` set to the shell's (see below). Remora
# runs benches/remora-peer.sh with max_connections CONNS + 1000 (default
# 10,000) and header_read_timeout 60 s (default 10 s, which also closes idle
# keep-alive connections: opening 10,000 can take longer). RSS does not depend on CPU noise, so a loaded machine is fine.
# Knobs: CONNS, REMORA_BIN (another build), IDLE_ONLY=remora,nginx,haproxy,
# IDLE_DIR. Needs nginx, haproxy, openssl, python3. Stops only the PIDs it
# started.
set -euo pipefail

rounds=${1:-3}
conns=${CONNS:-10000}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
conf=${LAB_CONF_DIR:-/work/shared/bench/conf}
run=${IDLE_DIR:-/tmp/remora-idle}
only=${IDLE_ONLY:-remora,nginx,haproxy}
up_port=18960 up_port_b=18961 up_tls=18962
declare -A port=([remora]=19960 [nginx]=19961 [haproxy]=19962)
tls_port=19963

ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
[[ $(ulimit -n) -gt $((conns + 1000)) ]] || { echo "idle.sh: ulimit -n $(ulimit -n) is too low for $conns connections" >&2; exit 2; }

mkdir -p "$run/upstream-tmp" "$run/nginx-tmp"
chmod 777 "$run" "$run/upstream-tmp" "$run/nginx-tmp"

source "$here/lib.sh"   # pids, cleanup on exit, wait_port

render() {          # render TEMPLATE OUT KEY=VALUE... (as peers.sh does)
  local text k v kv
  text=$(<"$1")
  shift; local out=$1; shift
  for kv in "$@"; do k=${kv%%=*}; v=${kv#*=}; text=${text//@$k@/$v}; done
  if [[ "$text" =~ @[A-Z_]+@ ]]; then echo "unrendered placeholder in $out: ${BASH_REMATCH[0]}" >&2; exit 2; fi
  printf '%s\n' "$text" > "$out"
}

cert=$run/cert.pem key=$run/key.pem pem=$run/both.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -keyout "$key" -out "$cert" 2>/dev/null
cat "$cert" "$key" > "$pem"
chmod 644 "$key" "$pem"
common=(RUN="$run" CERT="$cert" KEY="$key" PEM="$pem" WORKERS=1)
render "$conf/upstream-nginx.conf.tmpl" "$run/upstream.conf" "${common[@]}" \
  UP_WORKERS=1 UP_PORT_A=$up_port UP_PORT_B=$up_port_b UP_TLS_PORT=$up_tls
render "$conf/nginx-proxy.conf.tmpl" "$run/nginx.conf" "${common[@]}" \
  PORT="${port[nginx]}" TLS_PORT=$tls_port NGINX_SERVERS="        server 127.0.0.1:$up_port;"
render "$conf/haproxy.cfg.tmpl" "$run/haproxy.cfg" "${common[@]}" \
  PORT="${port[haproxy]}" TLS_PORT=$((tls_port + 1)) HAPROXY_SERVERS="    server s1 127.0.0.1:$up_port"
# Room for the connections within the fd limit (20,000 here, not raisable
# without CAP_SYS_RESOURCE): haproxy wants 2 fds per maxconn, so its limit
# is set by hand with `no strict-limits` (a warning, not an error); the
# test needs one fd per connection.
sed -i "s/worker_connections 8192;/worker_connections $((conns + 1000));/; s/worker_rlimit_nofile 16384;/worker_rlimit_nofile $(ulimit -n);/" "$run/nginx.conf"
sed -i "s/maxconn 8000/maxconn $((conns + 1000))\n    ulimit-n $(ulimit -n)\n    no strict-limits/" "$run/haproxy.cfg"

nginx -p "$run" -c "$run/upstream.conf" -e "$run/upstream.error.log" &
pids+=($!)
wait_port "$up_port"

start() {           # start NAME: sets $started to the PID
  case $1 in
    remora)
      LAB_PORT=${port[remora]} LAB_TLS_PORT=- LAB_UPSTREAM=127.0.0.1:$up_port LAB_WORKERS=1 \
        LAB_RUN=$run REMORA_LIMITS="max_connections: $((conns + 1000)), header_read_timeout: 60s" \
        "$here/remora-peer.sh" > "$run/remora.log" 2>&1 & ;;
    nginx) nginx -p "$run" -c "$run/nginx.conf" -e "$run/nginx.error.log" & ;;
    haproxy) haproxy -db -f "$run/haproxy.cfg" > "$run/haproxy.log" 2>&1 & ;;
  esac
  started=$!
  pids+=("$started")
  wait_port "${port[$1]}"
}

stop() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

IFS=, read -r -a targets <<<"$only"
declare -A results=()
for r in $(seq "$rounds"); do
  n=${#targets[@]}
  for i in $(seq 0 $((n - 1))); do
    name=${targets[$(((i + r - 1) % n))]}
    start "$name"
    line=$(timeout 120 python3 "$here/idle_client.py" --port "${port[$name]}" --pids "$started" --conns "$conns") || {
      echo "round $r $name: the client failed: $line" >&2; stop "$started"; continue; }
    stop "$started"
    echo "round $r  $name  $line"
    per=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["per_conn_kib"])' "$line")
    results[$name]+="$per "
    sleep 1
  done
done

echo
echo "| proxy | RSS growth per idle connection, KiB (median of $rounds) | rounds |"
echo "|---|---:|---|"
for name in "${targets[@]}"; do
  vals=${results[$name]:-}
  med=$(python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.1f}" if v else "n/a")' $vals)
  echo "| $name | $med | $vals|"
done

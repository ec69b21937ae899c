# lib.sh - sourced by the bench scripts: the PIDs a script started (stopped
# on exit, only those), waiting for a port to listen, and the nginx upstream.

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on :$1" >&2
  return 1
}

# Starts the benches' upstream: one nginx worker answering `200 ok` on
# 127.0.0.1:PORT, its files in DIR, pinned by the optional taskset CPU list
# (e.g. 0); adds its PID to pids and waits for the port.
start_upstream() { # dir port [cpus]
  local dir=$1 port=$2 cpus=${3:-}
  mkdir -p "$dir/tmp"
  chmod 777 "$dir" "$dir/tmp"
  cat > "$dir/upstream.conf" <<CONF
worker_processes 1;
daemon off;
master_process on;
user www-data www-data;
pid $dir/upstream.pid;
error_log $dir/upstream.error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
CONF
  if [[ -n $cpus ]]; then
    taskset -c "$cpus" nginx -p "$dir" -c "$dir/upstream.conf" -e "$dir/upstream.error.log" &
  else
    nginx -p "$dir" -c "$dir/upstream.conf" -e "$dir/upstream.error.log" &
  fi
  pids+=($!)
  wait_port "$port"
}

# Starts the back-to-back layout of cpu-split.sh and pair-profile.sh beside
# an upstream already on UP_PORT: Remora (benches/remora-peer.sh, one
# worker, REMORA_BIN as there) on REMORA_PORT and haproxy (one thread; the
# shared lab's haproxy.cfg.tmpl without TLS) on HAPROXY_PORT, both on CPU 1,
# their files in DIR. Sets `remora` and `haproxy` to their PIDs (added to
# pids) and waits for both ports.
start_pair() { # dir up_port remora_port haproxy_port
  local dir=$1 up_port=$2 remora_port=$3 haproxy_port=$4
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  cat > "$dir/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    timeout http-request 10s
frontend fe
    bind 127.0.0.1:$haproxy_port
    default_backend be
backend be
    balance roundrobin
    server s1 127.0.0.1:$up_port
CFG
  LAB_PORT=$remora_port LAB_TLS_PORT=- LAB_UPSTREAM=127.0.0.1:$up_port LAB_WORKERS=1 LAB_RUN=$dir \
    taskset -c 1 "$here/remora-peer.sh" > "$dir/remora.log" 2>&1 &
  remora=$!
  pids+=("$remora")
  taskset -c 1 haproxy -db -f "$dir/haproxy.cfg" > "$dir/haproxy.log" 2>&1 &
  haproxy=$!
  pids+=("$haproxy")
  wait_port "$remora_port"
  wait_port "$haproxy_port"
}

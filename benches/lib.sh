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

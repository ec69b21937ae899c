#!/usr/bin/env bash
# remora-peer.sh - run Remora as an --extra peer of /work/shared/bench/peers.sh.
#
#   /work/shared/bench/peers.sh --extra 'remora|19010|19410|/work/main/benches/remora-peer.sh'
#
# Reads what peers.sh exports: LAB_PORT, LAB_TLS_PORT ('-' or empty: no TLS
# listener), LAB_UPSTREAMS (comma list; else LAB_UPSTREAM), LAB_CERT, LAB_KEY,
# LAB_WORKERS (default: nproc), LAB_RUN (where to write the config; else a
# temp dir). Optional: REMORA_BIN (default <repo>/target/release/remora-proxy),
# REMORA_BALANCER (default round_robin), REMORA_LIMITS (each listener's
# `limits`, as YAML flow: 'max_connections: 20000, header_read_timeout: 60s';
# default the proxy's), REMORA_EDGE (each listener's `edge`, as YAML flow:
# 'request_id: {}, compression: {}'), RUST_LOG (default warn), REMORA_WRAP
# (a command the proxy runs under, e.g. valgrind; word-split).
#
# Writes a config with listener `plain` on 127.0.0.1:$LAB_PORT and listener
# `tls` on 127.0.0.1:$LAB_TLS_PORT, one catch-all route to backend `upstream`,
# the admin server on 127.0.0.1:0 (a free port: never clashes), then execs the
# proxy in the foreground so the caller's PID is the proxy's PID.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${REMORA_BIN:-$repo/target/release/remora-proxy}
[[ -x "$bin" ]] || { echo "remora-peer.sh: no binary at $bin (cargo build --release -p remora-proxy)" >&2; exit 2; }

port=${LAB_PORT:?LAB_PORT is not set}
tls_port=${LAB_TLS_PORT:--}
upstreams=${LAB_UPSTREAMS:-${LAB_UPSTREAM:?LAB_UPSTREAM(S) is not set}}
workers=${LAB_WORKERS:-$(nproc)}
balancer=${REMORA_BALANCER:-round_robin}

dir=${LAB_RUN:-}
if [[ -z "$dir" ]]; then dir=$(mktemp -d /tmp/remora-peer.XXXXXX); fi
config=$(mktemp "$dir/remora.XXXXXX.yaml")

{
  echo "admin:"
  echo "  address: 127.0.0.1:0"
  echo "drain_timeout: 1s"
  echo "listeners:"
  for name in plain tls; do
    if [[ $name == plain ]]; then p=$port; else p=$tls_port; fi
    if [[ $name == tls && ( "$p" == "-" || -z "$p" ) ]]; then continue; fi
    echo "  - name: $name"
    echo "    address: 127.0.0.1:$p"
    if [[ -n "${REMORA_LIMITS:-}" ]]; then
      echo "    limits: { $REMORA_LIMITS }"
    fi
    if [[ -n "${REMORA_EDGE:-}" ]]; then
      echo "    edge: { $REMORA_EDGE }"
    fi
    if [[ $name == tls ]]; then
      echo "    tls:"
      echo "      certificates:"
      echo "        - cert: ${LAB_CERT:?LAB_CERT is not set}"
      echo "          key: ${LAB_KEY:?LAB_KEY is not set}"
    fi
    echo "    routes:"
    echo "      - name: all"
    echo "        backends: [{ name: upstream }]"
  done
  echo "backends:"
  echo "  - name: upstream"
  echo "    balancer: $balancer"
  echo "    endpoints:"
  for u in ${upstreams//,/ }; do
    echo "      - address: $u"
  done
} > "$config"

export RUST_LOG=${RUST_LOG:-warn}
# shellcheck disable=SC2086 # REMORA_WRAP is a command line
exec ${REMORA_WRAP:-} "$bin" run --config "$config" --workers "$workers"

#!/usr/bin/env python3
"""Plaintext (h2c) gRPC echo server for Remora integration tests.

Uses grpcio generic handlers on raw bytes: no .proto, no codegen.

Service remora.test.Echo:
  Unary  (unary-unary)  -> b"echo:" + request
  Stream (unary-stream) -> request is ASCII decimal N; replies msg-0 .. msg-{N-1}
  Fail   (unary-unary)  -> aborts with UNAVAILABLE, details "try again"

Usage:
  echo_server.py [--host 127.0.0.1] [--port 0]

Prints exactly one line "PORT <port>" to stdout (flushed) once listening, then
serves until SIGTERM/SIGINT, on which it stops with a 1 s grace and exits 0.
Diagnostics go to stderr.
"""

import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "remora.test.Echo"
MAX_STREAM = 1_000_000


def log(msg):
    print(f"echo_server: {msg}", file=sys.stderr, flush=True)


def unary(request, context):
    return b"echo:" + request


def stream(request, context):
    try:
        n = int(request.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"expected ASCII decimal count, got {request!r}")
    if n < 0 or n > MAX_STREAM:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"count out of range 0..{MAX_STREAM}: {n}")
    for i in range(n):
        if not context.is_active():
            return
        yield f"msg-{i}".encode("ascii")


def fail(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "try again")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0,
                    help="port to bind (default 0 = pick a free one)")
    args = ap.parse_args()

    # None serializer/deserializer = identity on bytes.
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=None, response_serializer=None),
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=None, response_serializer=None),
        "Fail": grpc.unary_unary_rpc_method_handler(
            fail, request_deserializer=None, response_serializer=None),
    })

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        handlers=[handler],
        # grpc enables SO_REUSEPORT by default, which would let --port N
        # "succeed" on a port another process already holds.
        options=[("grpc.so_reuseport", 0)],
    )
    host = args.host
    bind = f"[{host}]:{args.port}" if ":" in host else f"{host}:{args.port}"
    try:
        port = server.add_insecure_port(bind)
    except RuntimeError as e:
        log(f"cannot bind {bind}: {e}")
        return 1
    if port == 0:
        log(f"cannot bind {bind}")
        return 1

    stop = threading.Event()

    def on_signal(signum, _frame):
        log(f"got signal {signal.Signals(signum).name}, stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server.start()
    print(f"PORT {port}", flush=True)
    log(f"serving {SERVICE} on {host}:{port} (plaintext h2c)")

    # Wait with a timeout so the main thread regularly returns to the
    # interpreter and the signal handler runs promptly.
    while not stop.wait(0.5):
        pass

    server.stop(grace=1.0).wait(5)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

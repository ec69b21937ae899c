#!/usr/bin/env python3
"""Plaintext (h2c) gRPC client for tests/grpc/echo_server.py, usually via Remora.

Uses generic calls on raw bytes: no .proto, no codegen.

Usage:
  echo_client.py [--authority NAME] [--timeout SECS] ADDR unary TEXT
  echo_client.py [--authority NAME] [--timeout SECS] ADDR stream N
  echo_client.py [--authority NAME] [--timeout SECS] ADDR fail
  echo_client.py [--authority NAME] [--timeout SECS] ADDR status TEXT

ADDR is host:port (the proxy's listener, or the server directly).
  unary TEXT  prints the reply; exit 0 iff reply == b"echo:" + TEXT
  stream N    prints each message on its own line; exit 0 iff exactly
              msg-0 .. msg-{N-1} arrived in order
  fail        exit 0 iff the call ends with UNAVAILABLE / "try again", after
              printing "status UNAVAILABLE try again"
  status TEXT a unary call (--repeat N: N of them, one after another);
              prints "status CODE details" for each (CODE OK on success,
              the reply then) whatever the outcome; exit 0
Exit 1 on any mismatch or RPC error (details on stderr), 2 on usage errors.
"""

import argparse
import sys

import grpc

SERVICE = "/remora.test.Echo/"


def err(msg):
    print(f"echo_client: {msg}", file=sys.stderr, flush=True)


def rpc_error(e):
    code = e.code()
    name = code.name if code is not None else "?"
    return f"RPC failed: status {name} details {e.details()!r}"


def do_unary(channel, text, timeout):
    call = channel.unary_unary(SERVICE + "Unary",
                               request_serializer=None,
                               response_deserializer=None)
    req = text.encode("utf-8")
    try:
        reply = call(req, timeout=timeout)
    except grpc.RpcError as e:
        err(rpc_error(e))
        return 1
    print(reply.decode("utf-8", errors="backslashreplace"), flush=True)
    want = b"echo:" + req
    if reply != want:
        err(f"unexpected reply {reply!r}, want {want!r}")
        return 1
    return 0


def do_stream(channel, arg, timeout):
    try:
        n = int(arg)
    except ValueError:
        err(f"stream: N must be a decimal integer, got {arg!r}")
        return 2
    call = channel.unary_stream(SERVICE + "Stream",
                                request_serializer=None,
                                response_deserializer=None)
    got = []
    try:
        for msg in call(str(n).encode("ascii"), timeout=timeout):
            print(msg.decode("utf-8", errors="backslashreplace"), flush=True)
            got.append(msg)
    except grpc.RpcError as e:
        err(f"after {len(got)} message(s): {rpc_error(e)}")
        return 1
    want = [f"msg-{i}".encode("ascii") for i in range(n)]
    if got != want:
        if len(got) != n:
            err(f"got {len(got)} message(s), want {n}")
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                err(f"message {i} is {g!r}, want {w!r}")
                break
        return 1
    return 0


def do_fail(channel, timeout):
    call = channel.unary_unary(SERVICE + "Fail",
                               request_serializer=None,
                               response_deserializer=None)
    try:
        reply = call(b"", timeout=timeout)
    except grpc.RpcError as e:
        code, details = e.code(), e.details()
        name = code.name if code is not None else "?"
        if code == grpc.StatusCode.UNAVAILABLE and details == "try again":
            print(f"status {name} {details}", flush=True)
            return 0
        print(f"status {name} {details}", flush=True)
        err(f"want status UNAVAILABLE details 'try again', got {name} {details!r}")
        return 1
    print(f"status OK {reply!r}", flush=True)
    err(f"want status UNAVAILABLE, but the call succeeded with {reply!r}")
    return 1


def do_status(channel, text, timeout, repeat):
    call = channel.unary_unary(SERVICE + "Unary",
                               request_serializer=None,
                               response_deserializer=None)
    for _ in range(repeat):
        try:
            reply = call(text.encode("utf-8"), timeout=timeout)
        except grpc.RpcError as e:
            code = e.code()
            name = code.name if code is not None else "?"
            print(f"status {name} {e.details()}", flush=True)
            continue
        print(f"status OK {reply.decode('utf-8', errors='backslashreplace')}",
              flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(
        description="gRPC echo test client (plaintext h2c, generic calls)")
    ap.add_argument("addr", metavar="ADDR", help="host:port to connect to")
    ap.add_argument("mode", metavar="MODE", choices=["unary", "stream", "fail", "status"],
                    help="unary | stream | fail | status")
    ap.add_argument("arg", metavar="ARG", nargs="?",
                    help="TEXT for unary and status, N for stream")
    ap.add_argument("--authority", metavar="NAME",
                    help="value for :authority (grpc.default_authority)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="per-call deadline in seconds (default 10)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="status: calls to make, one after another (default 1)")
    args = ap.parse_args()

    if args.mode in ("unary", "stream", "status") and args.arg is None:
        ap.error(f"mode {args.mode} needs ARG")
    if args.mode == "fail" and args.arg is not None:
        ap.error("mode fail takes no ARG")

    options = [
        # Talk to ADDR itself even if *_proxy variables are set.
        ("grpc.enable_http_proxy", 0),
        # One attempt per call: the test checks the proxy, not client retries.
        ("grpc.enable_retries", 0),
    ]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))

    with grpc.insecure_channel(args.addr, options=options) as channel:
        if args.mode == "unary":
            return do_unary(channel, args.arg, args.timeout)
        if args.mode == "stream":
            return do_stream(channel, args.arg, args.timeout)
        if args.mode == "status":
            return do_status(channel, args.arg, args.timeout, args.repeat)
        return do_fail(channel, args.timeout)


if __name__ == "__main__":
    sys.exit(main())

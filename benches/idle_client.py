#!/usr/bin/env python3
"""Memory per idle keep-alive connection of one server (benches/idle.sh).

    idle_client.py --port P --pids 'PID ...' [--conns 10000] [--settle 1]

Warms the server up (200 requests on one connection, then 100 connections
with one request each, closed), reads the resident memory of the server's
process trees (each PID and its descendants, summed: nginx's master and
workers), then opens --conns HTTP/1.1 keep-alive connections to
127.0.0.1:P, sends one `GET /` on each and reads its whole answer, and
leaves them idle. After --settle seconds it reads the memory again, checks
how many connections the server still holds open, closes them all and
prints one JSON line: rss_before_kib, rss_after_kib, conns, alive, open_s,
per_conn_kib. Everything is bounded: a 5 s timeout per socket operation,
--deadline seconds for the opening phase.
"""

import argparse
import json
import os
import resource
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: idle.test\r\nUser-Agent: idle_client\r\n\r\n"


def rss_kib(root_pids):
    """VmRSS summed over the given processes and all their descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    seen, todo, total = set(), list(root_pids), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def exchange(sock):
    """Sends one request and reads one whole response (Content-Length)."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected response: {head[:40]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the response body")
        body += chunk


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def still_open(socks):
    """How many sockets the server has not closed (no EOF or reset pending)."""
    alive = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                alive += 1  # unexpected bytes, but open
        except BlockingIOError:
            alive += 1  # nothing to read: open and idle
        except OSError:
            pass
    return alive


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pids", required=True, help="server PIDs, space-separated")
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--deadline", type=float, default=60.0)
    a = p.parse_args()
    pids = [int(x) for x in a.pids.split()]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.conns + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    warm = connect(a.port)
    for _ in range(200):
        exchange(warm)
    warm.close()
    for _ in range(100):
        s = connect(a.port)
        exchange(s)
        s.close()
    time.sleep(a.settle)
    before = rss_kib(pids)

    socks, started = [], time.monotonic()
    try:
        for _ in range(a.conns):
            if time.monotonic() - started > a.deadline:
                raise TimeoutError(f"opened only {len(socks)} connections in {a.deadline} s")
            s = connect(a.port)
            socks.append(s)
            exchange(s)
        open_s = time.monotonic() - started
        time.sleep(a.settle)
        after = rss_kib(pids)
        alive = still_open(socks)
    finally:
        for s in socks:
            s.close()
    print(json.dumps({
        "rss_before_kib": before,
        "rss_after_kib": after,
        "conns": a.conns,
        "alive": alive,
        "open_s": round(open_s, 2),
        "per_conn_kib": round((after - before) / a.conns, 2),
    }))
    return 0 if alive == a.conns else 1


if __name__ == "__main__":
    sys.exit(main())

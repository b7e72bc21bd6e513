"""The two ends of one ``corral bench net`` measurement: a TCP receiver and a TCP sender.

Run on the nodes (over ssh) as ``python benchmarks/net/peer.py recv|send ...``; each prints
one JSON object on stdout when done. Standard library only, so it starts in a few
milliseconds and needs nothing installed on a fresh node.

The receiver is the clock: it counts bytes as they arrive, in fixed intervals from the
first byte, so the per-interval series shows what the network delivered, not what the
sender's socket buffer accepted.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import time

CHUNK = 1 << 20
HELLO = b"corral-bench-net/1\n"
"""Sent by the receiver on accept; the sender sends nothing to a listener that does not say it."""
EXIT_PORT_IN_USE = 3
EXIT_FAILED = 1


def receive(bind: str, port: int, *, interval: float, accept_timeout: float, max_seconds: float) -> dict:
    """Accept one connection on ``bind:port`` and count bytes per ``interval`` until the sender closes."""
    return count(listen(bind, port), interval=interval, accept_timeout=accept_timeout, max_seconds=max_seconds)


def listen(bind: str, port: int) -> socket.socket:
    """The receiver's listening socket (``PortInUse`` when the port is taken): a caller that must know the
    receiver is ready before it starts the sender listens first, then ``count``s."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((bind, port))
    except OSError as exc:
        srv.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {bind} is in use") from None
        raise
    srv.listen(1)
    return srv


def count(srv: socket.socket, *, interval: float, accept_timeout: float, max_seconds: float) -> dict:
    """Accept one connection on the listening ``srv`` (closed here) and count bytes per ``interval``."""
    srv.settimeout(accept_timeout)
    try:
        conn, peer = srv.accept()
    finally:
        srv.close()
    conn.settimeout(max(5.0, interval * 5))
    conn.sendall(HELLO)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    bins: list[int] = []
    total = 0
    first = last = None
    deadline = time.monotonic() + max_seconds
    with conn:
        while True:
            n = conn.recv_into(view)
            now = time.perf_counter()
            if n == 0:
                break
            if first is None:
                first = now
            last = now
            k = int((now - first) / interval)
            while len(bins) <= k:
                bins.append(0)
            bins[k] += n
            total += n
            if time.monotonic() > deadline:
                break
    elapsed = (last - first) if first is not None and last is not None else 0.0
    return {
        "role": "recv",
        "peer": peer[0],
        "bytes": total,
        "seconds": elapsed,
        "interval_s": interval,
        "series_bytes": bins,
        "last_interval_s": (elapsed - interval * (len(bins) - 1)) if bins else 0.0,
    }


class PortInUse(Exception):
    pass


def send(to: str, port: int, *, duration: float, connect_timeout: float) -> dict:
    """Connect to ``to:port`` (retrying while the receiver starts) and send zeros for ``duration`` seconds."""
    deadline = time.monotonic() + connect_timeout
    while True:
        try:
            sock = socket.create_connection((to, port), timeout=min(5.0, connect_timeout))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    payload = memoryview(bytes(CHUNK))
    sent = 0
    with sock:
        sock.settimeout(10)
        hello = b""
        while len(hello) < len(HELLO):
            got = sock.recv(len(HELLO) - len(hello))
            if not got:
                break
            hello += got
        if hello != HELLO:
            raise OSError(f"{to}:{port} is not a corral receiver (it said {hello[:40]!r}); nothing was sent")
        sock.settimeout(None)
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            sock.sendall(payload)
            sent += CHUNK
        queued = time.perf_counter() - start
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(60)
        sock.recv(1)  # the receiver closes after reading everything: all bytes delivered
        done = time.perf_counter() - start
    return {"role": "send", "bytes": sent, "seconds_queued": queued, "seconds": done}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="TCP throughput between two nodes (one end per process).")
    sub = p.add_subparsers(dest="role", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--bind", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--interval", type=float, default=1.0)
    r.add_argument("--accept-timeout", type=float, default=30.0)
    r.add_argument("--max-seconds", type=float, default=600.0)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--duration", type=float, required=True)
    s.add_argument("--connect-timeout", type=float, default=30.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.role == "recv":
            out = receive(
                args.bind,
                args.port,
                interval=args.interval,
                accept_timeout=args.accept_timeout,
                max_seconds=args.max_seconds,
            )
        else:
            out = send(args.to, args.port, duration=args.duration, connect_timeout=args.connect_timeout)
    except PortInUse as exc:
        print(f"net_peer: {exc}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    except OSError as exc:
        print(f"net_peer {args.role}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

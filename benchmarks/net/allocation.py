"""``bench net`` inside a scheduler's allocation (Slurm), where the nodes are known only once the job runs.

One plain job runs this worker once on every node. Node rank 0 coordinates on the job's rendezvous
endpoint (``CORRAL_RDZV_ENDPOINT``: the first node and a port that was free there when the job began):
every node connects to it and is known by the address it came from, which is the address its peers
reach it on. The pairs (``plan.plan_pairs``: every ordered pair or the ring, by node rank) then run one at
a time as on the ssh path: the receiver listens, then the sender sends, and ``peer.py`` counts at the
receiver. Node rank 0 writes every pair's receiver report to ``RESULT_FILE`` in its run dir;
``run.run_in_allocation`` turns them into bench net's result.

Standard library and corral's own benchmark modules only: a node needs the job's workdir, not torch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import threading
import time

from benchmarks.net import peer
from benchmarks.net.plan import plan_pairs, resolve_mode

RESULT_FILE = "net-allocation.json"
JOIN_TIMEOUT_S = 120.0
"""How long node rank 0 waits for every node to join (the nodes of one job step start within seconds)."""
PORT_RANGE = (20000, 60000)
PORT_TRIES = 4
CONNECT_TIMEOUT_S = 30.0


class Link:
    """One JSON line each way over a TCP connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lines = sock.makefile("r", encoding="utf-8")

    def send(self, obj: dict) -> None:
        self.sock.sendall((json.dumps(obj) + "\n").encode())

    def recv(self) -> dict:
        line = self.lines.readline()
        if not line:
            raise ConnectionError("the connection closed")
        return json.loads(line)


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection((host, port), timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def member(host: str, port: int, node: str, rank: int, deadline: float) -> None:
    """Join the coordinator and carry out its requests until it says done."""
    sock = _connect(host, port, deadline)
    sock.settimeout(None)  # a pair elsewhere may take a while; the coordinator ends the session
    link = Link(sock)
    link.send({"node": node, "rank": rank})
    while True:
        req = link.recv()
        if req["op"] == "done":
            return
        try:
            if req["op"] == "recv":
                try:
                    srv = peer.listen("0.0.0.0", req["port"])
                except peer.PortInUse:
                    link.send({"port_in_use": True})
                    continue
                link.send({"listening": True})
                link.send(
                    {
                        "report": peer.count(
                            srv, interval=req["interval"], accept_timeout=CONNECT_TIMEOUT_S, max_seconds=req["max_s"]
                        )
                    }
                )
            else:
                link.send({"report": peer.send(req["to"], req["port"], duration=req["duration"], connect_timeout=30)})
        except OSError as exc:
            link.send({"error": f"{type(exc).__name__}: {exc}"})


class Coordinator:
    def __init__(self, srv: socket.socket, nnodes: int, deadline: float) -> None:
        self.srv, self.nnodes, self.deadline = srv, nnodes, deadline
        self.links: dict[int, Link] = {}
        self.names: dict[int, str] = {}
        self.addrs: dict[int, str] = {}
        self.gone: set[str] = set()

    def join(self) -> None:
        """Every node's connection, and the address it came from (node rank 0's own: the one the others reached)."""
        local_addr = None
        while len(self.links) < self.nnodes:
            self.srv.settimeout(max(0.1, self.deadline - time.monotonic()))
            try:
                conn, (addr, _) = self.srv.accept()
            except TimeoutError:
                missing = sorted(set(range(self.nnodes)) - set(self.links))
                raise TimeoutError(f"node rank(s) {missing} did not join in time") from None
            link = Link(conn)
            hello = link.recv()
            rank = int(hello["rank"])
            self.links[rank], self.names[rank], self.addrs[rank] = link, hello["node"], addr
            if rank != 0:
                local_addr = conn.getsockname()[0]
        if local_addr is not None:
            self.addrs[0] = local_addr

    def pair(self, src: int, dst: int, duration: float, interval: float, rng: random.Random) -> dict:
        s, d = self.names[src], self.names[dst]
        if gone := sorted({s, d} & self.gone):
            return {"src": s, "dst": d, "error": f"{', '.join(gone)} left the measurement"}
        for _ in range(PORT_TRIES):
            port = rng.randrange(*PORT_RANGE)
            try:
                self.links[dst].send({"op": "recv", "port": port, "interval": interval, "max_s": duration + 60})
                ready = self.links[dst].recv()
            except (OSError, ConnectionError, ValueError) as exc:
                self.gone.add(d)
                return {"src": s, "dst": d, "error": f"receiver on {d}: {exc}"}
            if ready.get("port_in_use"):
                continue
            if "error" in ready:
                return {"src": s, "dst": d, "error": f"receiver on {d}: {ready['error']}"}
            try:
                self.links[src].send({"op": "send", "to": self.addrs[dst], "port": port, "duration": duration})
                sent = self.links[src].recv()
            except (OSError, ConnectionError, ValueError) as exc:
                self.gone.add(s)
                sent = {"error": str(exc)}
            try:
                got = self.links[dst].recv()
            except (OSError, ConnectionError, ValueError) as exc:
                self.gone.add(d)
                got = {"error": str(exc)}
            if "error" in sent:
                return {"src": s, "dst": d, "error": f"sender on {s}: {sent['error']}"}
            if "error" in got:
                return {"src": s, "dst": d, "error": f"receiver on {d}: {got['error']}"}
            return {"src": s, "dst": d, "recv": got["report"]}
        return {"src": s, "dst": d, "error": f"receiver on {d}: no free port in {PORT_TRIES} tries"}

    def run(self, mode: str, duration: float, interval: float) -> dict:
        self.join()
        order = [self.names[r] for r in range(self.nnodes)]
        rank_of = {name: r for r, name in self.names.items()}
        rng = random.Random()
        pairs = []
        for s, d in plan_pairs(order, mode):
            pairs.append(self.pair(rank_of[s], rank_of[d], duration, interval, rng))
            print(
                f"net: {s}->{d} " + ("failed: " + pairs[-1]["error"] if "error" in pairs[-1] else "measured"),
                flush=True,
            )
        for link in self.links.values():
            try:
                link.send({"op": "done"})
            except OSError:
                pass
        return {
            "mode": resolve_mode(mode, self.nnodes),
            "nodes": [{"name": self.names[r], "addr": self.addrs[r], "rank": r} for r in range(self.nnodes)],
            "pairs": pairs,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="bench net between the nodes of one job (run on every node).")
    p.add_argument("--pairs", choices=("auto", "all", "ring"), default="auto")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--join-timeout", type=float, default=JOIN_TIMEOUT_S, help="Seconds for every node to join.")
    args = p.parse_args(argv)
    env = os.environ
    node, rank, nnodes = env["CORRAL_NODE"], int(env["CORRAL_NODE_RANK"]), int(env["CORRAL_NNODES"])
    host, _, port_text = env["CORRAL_RDZV_ENDPOINT"].rpartition(":")
    port = int(port_text)
    deadline = time.monotonic() + args.join_timeout
    if rank != 0:
        member(host, port, node, rank, deadline)
        return 0
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("", port))
    srv.listen(nnodes)
    # node rank 0 is a member too, reached over loopback; its address is the one the others reached
    mine = threading.Thread(target=member, args=("127.0.0.1", port, node, 0, deadline), daemon=True)
    mine.start()
    try:
        result = Coordinator(srv, nnodes, deadline).run(args.pairs, args.duration, args.interval)
    except (OSError, ConnectionError, ValueError) as exc:
        print(f"bench net: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        srv.close()
    out = os.path.join(env.get("CORRAL_RUN_DIR", "."), RESULT_FILE)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(out + ".tmp", out)
    mine.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``corral bench net``, the pure half: which pairs, what each end runs, and the report.

Point-to-point TCP throughput between nodes over their private addresses, one pair at a
time (so pairs do not share links), measured by ``benchmarks/net/peer.py`` at the receiver.
The executor (``benchmarks/net/run.py``) runs the plan over ssh; everything here is data.

Units: Gbit/s = 10⁹ bits per second (how links are sold), MiB/s = 2²⁰ bytes per second
(how volumes and files are measured).
"""

from __future__ import annotations

import ipaddress
import statistics
from dataclasses import asdict, dataclass, field

from benchmarks.series import detect_throttle
from launcher.errors import UserError

PAIR_MODES = ("auto", "all", "ring")
AUTO_ALL_MAX_NODES = 8
"""``auto``: every ordered pair up to this many nodes (56 pairs, one at a time), a ring beyond it,
measured in rounds of disjoint pairs so the time does not grow with the node count (an all-pairs
default would take N(N-1) x duration: 992 pairs, 2 h 45 min at 32 nodes and 10 s each)."""
SCHEMA = "corral.bench.net/1"
UNITS = {
    "gbps": "Gbit/s (1e9 bits per second), bytes received / seconds from first to last byte",
    "mibps": "MiB/s (2^20 bytes per second)",
    "series_gbps": "Gbit/s per interval of interval_s seconds, counted at the receiver",
    "series_mibps": "MiB/s per interval",
    "duration_s": "seconds the sender sends",
    "throttle.rate_before": "Gbit/s (mean before the change)",
    "throttle.rate_after": "Gbit/s (mean after the change)",
    "throttle.cap_gbps": "Gbit/s (median of the intervals after the change within 2x of the slowest)",
    "throttle.change_at_s": "seconds from the first byte",
}


@dataclass(frozen=True)
class Endpoint:
    """A node as the benchmark sees it: its name and private address."""

    name: str
    addr: str


@dataclass(frozen=True)
class PairPlan:
    """One measurement: ``src`` sends to ``dst`` at ``dst_addr``; argv for each end (the port is filled in at run time)."""

    src: str
    dst: str
    dst_addr: str
    recv_argv: list[str] = field(default_factory=list)
    send_argv: list[str] = field(default_factory=list)


def endpoints(cluster) -> list[Endpoint]:
    """Every node with its private address; a node without one (or with a public one) is bad input."""
    if len(cluster.nodes) < 2:
        raise UserError(
            "bench net measures between nodes: the cluster has only one node; add nodes (with addr) to the cluster file"
        )
    out = []
    for i, node in enumerate(cluster.nodes):
        if not node.addr:
            raise UserError(
                f"nodes.{i} ({node.label}): no private address; set 'addr: 10.x.y.z' (its private-network IPv4) in the cluster file",
                hint="bench net measures the private network between nodes, never public addresses",
            )
        if not ipaddress.IPv4Address(node.addr).is_private:
            raise UserError(
                f"nodes.{i} ({node.label}): addr {node.addr} is not a private address; give the node's private-network IPv4"
            )
        out.append(Endpoint(node.label, node.addr))
    return out


def resolve_mode(mode: str, n_nodes: int) -> str:
    """``auto`` -> ``all`` for up to AUTO_ALL_MAX_NODES nodes, else ``ring``; others as given."""
    if mode not in PAIR_MODES:
        raise UserError(f"--pairs: choose 'auto', 'all' or 'ring' (got {mode!r})")
    if mode == "auto":
        return "all" if n_nodes <= AUTO_ALL_MAX_NODES else "ring"
    return mode


def pair_rounds(pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Pure: the pairs in rounds where no node is in two pairs (as sender or receiver), first fit
    in order. A ring of an even node count takes 2 rounds, an odd one 3, whatever its size."""
    rounds: list[tuple[set[str], list[tuple[str, str]]]] = []
    for src, dst in pairs:
        for busy, members in rounds:
            if src not in busy and dst not in busy:
                busy.update((src, dst))
                members.append((src, dst))
                break
        else:
            rounds.append(({src, dst}, [(src, dst)]))
    return [members for _, members in rounds]


def plan_pairs(names: list[str], mode: str) -> list[tuple[str, str]]:
    """Directed (sender, receiver) pairs: every ordered pair for 'all', i -> i+1 around the nodes for 'ring'
    ('auto': see ``resolve_mode``)."""
    mode = resolve_mode(mode, len(names))
    if mode == "all":
        return [(a, b) for a in names for b in names if a != b]
    pairs = [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
    return list(dict.fromkeys(p for p in pairs if p[0] != p[1]))


PEER_SOURCE = "benchmarks/net/peer.py"
"""Sent to ``python -`` on the node's stdin, so nodes need only a Python 3, not corral."""


def recv_argv(python: str, addr: str, port: int, *, duration: float, interval: float) -> list[str]:
    return [
        python,
        "-",
        "recv",
        "--bind",
        addr,
        "--port",
        str(port),
        "--interval",
        f"{interval:g}",
        "--accept-timeout",
        "30",
        "--max-seconds",
        f"{duration + 60:g}",
    ]


def send_argv(python: str, addr: str, port: int, *, duration: float) -> list[str]:
    return [
        python,
        "-",
        "send",
        "--to",
        addr,
        "--port",
        str(port),
        "--duration",
        f"{duration:g}",
        "--connect-timeout",
        "30",
    ]


def build_plan(
    eps: list[Endpoint], mode: str, *, python: str | dict[str, str], duration: float, interval: float = 1.0
) -> list[PairPlan]:
    """The pairs with the argv each end runs (port 0 stands for the port chosen at run time).

    ``python`` is the interpreter on every node, or one per node name; it reads the peer
    script (``PEER_SOURCE``) from stdin.
    """
    if duration <= 0:
        raise UserError(f"--duration must be positive (got {duration:g})")
    by_name = {e.name: e for e in eps}
    py = python if isinstance(python, dict) else {e.name: python for e in eps}
    plans = []
    for src, dst in plan_pairs([e.name for e in eps], mode):
        addr = by_name[dst].addr
        plans.append(
            PairPlan(
                src,
                dst,
                addr,
                recv_argv(py[dst], addr, 0, duration=duration, interval=interval),
                send_argv(py[src], addr, 0, duration=duration),
            )
        )
    return plans


def describe_plan(plans: list[PairPlan]) -> str:
    import shlex

    lines = [f"each end runs its node's python with {PEER_SOURCE} on stdin:"]
    for p in plans:
        lines += [
            f"{p.src} -> {p.dst} ({p.dst_addr}):",
            f"  on {p.dst}: {shlex.join(p.recv_argv)}",
            f"  on {p.src}: {shlex.join(p.send_argv)}",
        ]
    return "\n".join(lines).replace("--port 0", "--port PORT")


# ---- results ------------------------------------------------------------------------


def gbps(nbytes: float, seconds: float) -> float:
    return nbytes * 8 / 1e9 / seconds if seconds > 0 else 0.0


def mibps(nbytes: float, seconds: float) -> float:
    return nbytes / (1 << 20) / seconds if seconds > 0 else 0.0


def settled_rate(after: list[float]) -> float:
    """The rate a link settled at after a throttle: the median of the intervals within 2x of the slowest.

    The detector's rate_after is a mean, and the interval or two in which the cap set in are part burst,
    part cap (TCP backing off, the shaper's queue draining): what people look for is where it settled."""
    if len(after) > 2:
        after = after[:-1]  # the last interval is partial
    moving = [x for x in after if x > 0]
    if not moving:
        return 0.0
    floor = min(moving)
    return statistics.median([x for x in moving if x <= 2 * floor])


def pair_result(src: str, dst: str, recv: dict, duration: float) -> dict:
    """One pair's numbers from the receiver's report; the throttle detector runs on its series."""
    interval = recv["interval_s"]
    bins = list(recv["series_bytes"])
    lengths = [interval] * len(bins)
    if bins:
        lengths[-1] = max(recv.get("last_interval_s", interval), 1e-9)
    if len(bins) > 1 and lengths[-1] < interval / 2:
        # A sliver of an interval at the end (the last buffered bytes) gives a meaningless
        # rate: fold it into the interval before.
        bins[-2] += bins.pop()
        lengths[-2] += lengths.pop()
    series = [gbps(b, t) for b, t in zip(bins, lengths)]
    throttle = detect_throttle(series, interval_s=interval)
    throttle_info = None
    if throttle:
        throttle_info = {
            **throttle.to_dict(),
            "cap_gbps": settled_rate(series[round(throttle.change_at_s / interval) :]),
        }
    return {
        "src": src,
        "dst": dst,
        "bytes": recv["bytes"],
        "seconds": recv["seconds"],
        "duration_s": duration,
        "gbps": gbps(recv["bytes"], recv["seconds"]),
        "mibps": mibps(recv["bytes"], recv["seconds"]),
        "interval_s": interval,
        "series_gbps": series,
        "series_mibps": [mibps(b, t) for b, t in zip(bins, lengths)],
        "throttle": throttle_info,
        "error": None,
    }


def failed_pair(src: str, dst: str, error: str) -> dict:
    return {
        "src": src,
        "dst": dst,
        "gbps": None,
        "mibps": None,
        "series_gbps": [],
        "series_mibps": [],
        "throttle": None,
        "error": error,
    }


def build_result(eps: list[Endpoint], mode: str, duration: float, pairs: list[dict]) -> dict:
    names = [e.name for e in eps]
    matrix_g = {a: {b: None for b in names} for a in names}
    matrix_m = {a: {b: None for b in names} for a in names}
    for p in pairs:
        matrix_g[p["src"]][p["dst"]] = p["gbps"]
        matrix_m[p["src"]][p["dst"]] = p["mibps"]
    measured = [p for p in pairs if p["gbps"] is not None]
    slowest = min(measured, key=lambda p: p["gbps"]) if measured else None
    return {
        "schema": SCHEMA,
        "units": UNITS,
        "nodes": [asdict(e) for e in eps],
        "pairs_mode": mode,
        "duration_s": duration,
        "pairs": pairs,
        "matrix_gbps": matrix_g,
        "matrix_mibps": matrix_m,
        "slowest": {"src": slowest["src"], "dst": slowest["dst"], "gbps": slowest["gbps"], "mibps": slowest["mibps"]}
        if slowest
        else None,
        "throttled": [{"src": p["src"], "dst": p["dst"], **p["throttle"]} for p in pairs if p.get("throttle")],
        "failed": [{"src": p["src"], "dst": p["dst"], "error": p["error"]} for p in pairs if p.get("error")],
    }


def _matrix_lines(result: dict, key: str, title: str, fmt: str) -> list[str]:
    names = [n["name"] for n in result["nodes"]]
    width = max(9, *(len(n) for n in names))
    lines = [f"{title} (row sends to column)", " " * width + "".join(f"  {n:>{width}}" for n in names)]
    for a in names:
        cells = []
        for b in names:
            v = result[key][a][b]
            cells.append("-" if a == b else ("." if v is None else format(v, fmt)))
        lines.append(f"{a:>{width}}" + "".join(f"  {c:>{width}}" for c in cells))
    return lines


def render(result: dict) -> str:
    """Matrices in Gbit/s and MiB/s, each pair's per-second series, throttles, the slowest pair."""
    lines = (
        _matrix_lines(result, "matrix_gbps", "Gbit/s", ".3f")
        + [""]
        + _matrix_lines(result, "matrix_mibps", "MiB/s", ".1f")
    )
    lines += ["", f"per-{result['pairs'][0].get('interval_s', 1):g}s series (Gbit/s):" if result["pairs"] else ""]
    for p in result["pairs"]:
        head = f"  {p['src']} -> {p['dst']}: "
        if p.get("error"):
            lines.append(head + f"FAILED: {p['error']}")
            continue
        lines.append(head + " ".join(f"{x:.3f}" for x in p["series_gbps"]))
    for t in result["throttled"]:
        lines.append(
            f"THROTTLED {t['src']} -> {t['dst']}: {t['rate_before']:.3f} Gbit/s for {t['change_at_s']:g}s, "
            f"then {t['rate_after']:.3f} Gbit/s ({t['ratio']:.1f}x lower; capped at {t['cap_gbps']:.3f} Gbit/s)"
        )
    s = result["slowest"]
    if s:
        lines.append(f"slowest pair: {s['src']} -> {s['dst']} at {s['gbps']:.3f} Gbit/s ({s['mibps']:.1f} MiB/s)")
    for f in result["failed"]:
        lines.append(f"failed pair: {f['src']} -> {f['dst']}: {f['error']}")
    return "\n".join(lines) + "\n"

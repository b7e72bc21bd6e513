"""Where a slow network figure comes from: a node, or the link between two nodes. Pure.

Three rules, as a cluster health scanner applies them:
1. A pair is slow when its throughput is below the pairs' outlier floor (the peers' rule of ``judge.py``
   applied to the pair figures), or it could not be measured at all.
2. Every node in a slow pair is a suspect; each suspect is re-tested, both directions, with a *reference*
   node that was in no slow pair (a second pass). A suspect still slow with a good partner is the culprit;
   one that is fast again is cleared, so a bad partner never fails a healthy node.
3. A slow pair whose two ends were both cleared is a slow *link*: the pair itself is measured once more in
   the second pass, and when it is slow again both ends get the finding, which names the other end; fast
   again, it was one slow sample (a healthy network's spread) and nobody is blamed. With no reference
   node (every node in a slow pair), the node common to most slow
   pairs is blamed when it is unique, else every suspect gets a warning saying it could not be told.

And for the all-node all-reduce, ``bisect``: halves of the node list until the slow group is two or three
nodes, then each of those paired with a node of a fast half; the numbers of every run are kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.cluster.judge import FAIL, PASS, REMEDIES, WARN, Finding, Thresholds, fmt, peer_stats

Pair = tuple[str, str]


def _gbps(p: dict[str, Any]) -> float:
    v = p.get("gbps")
    return float(v) if isinstance(v, (int, float)) else 0.0


def _slow(p: dict[str, Any], floor: float | None) -> bool:
    return p.get("error") is not None or (floor is not None and _gbps(p) < floor)


@dataclass
class NetJudgement:
    median: float | None
    floor: float | None
    slow: list[Pair]
    suspects: list[str]
    reference: str | None


def judge_pairs(pairs: list[dict[str, Any]], th: Thresholds) -> NetJudgement:
    """The first pass: the slow pairs, the suspects and the reference node for the second pass.

    The reference figure is taken from each node's *best* pair, not from all pairs: a slow node makes every
    pair it is in slow (half the pairs of a 4-node ring or all-pairs run), which would drag a median of the
    pairs down with it, while each healthy node still has one healthy pair."""
    nodes = list(dict.fromkeys([p["src"] for p in pairs] + [p["dst"] for p in pairs]))
    best = {n: max((_gbps(p) for p in pairs if n in (p["src"], p["dst"])), default=0.0) for n in nodes}
    stats = peer_stats(list(best.values()), th.peer, th.peer_mad_z)
    if stats is not None:
        median, floor = stats.median, stats.floor
    elif best:  # two nodes: nothing to compare with but each other; only a gross gap between the directions
        median = max(best.values())
        floor = median * (1 - 2 * th.peer)
    else:
        median = floor = None
    slow = [(p["src"], p["dst"]) for p in pairs if _slow(p, floor)]
    suspects = list(dict.fromkeys(n for pair in slow for n in pair))
    good = [n for n in nodes if n not in suspects]
    # the good node that moved the most data is the partner least likely to be the bottleneck itself
    reference = max(good, key=lambda n: best[n]) if good else None
    return NetJudgement(median, floor, slow, suspects, reference)


def retest_pairs(j: NetJudgement) -> list[Pair]:
    """The second pass: each suspect with the reference node, both directions."""
    if j.reference is None:
        return []
    out: list[Pair] = []
    for s in j.suspects:
        out += [(s, j.reference), (j.reference, s)]
    return out


def _with_reference(node: str, retests: list[dict[str, Any]], j: NetJudgement) -> list[dict[str, Any]]:
    """``node``'s re-tests with the reference node (a re-measure of a slow pair says nothing about one end)."""
    return [r for r in retests if node in (r["src"], r["dst"]) and j.reference in (r["src"], r["dst"])]


def _cleared(node: str, retests: list[dict[str, Any]], j: NetJudgement) -> bool:
    mine = _with_reference(node, retests, j)
    return bool(mine) and not any(_slow(r, j.floor) for r in mine)


def remeasure_pairs(j: NetJudgement, retests: list[dict[str, Any]]) -> list[Pair]:
    """After the second pass: the slow pairs whose two ends were both fast with the reference node, to be
    measured once more before the link between them is blamed."""
    if j.reference is None:
        return []
    return [(a, b) for a, b in j.slow if _cleared(a, retests, j) and _cleared(b, retests, j)]


def attribute(
    nodes: list[str], pairs: list[dict[str, Any]], retests: list[dict[str, Any]], j: NetJudgement, th: Thresholds
) -> dict[str, list[Finding]]:
    """Per node, its network finding with the numbers that show it (pass for the nodes in no slow pair)."""
    out: dict[str, list[Finding]] = {n: [] for n in nodes}
    if not pairs:
        return out
    by_pair = {(p["src"], p["dst"]): p for p in pairs}
    floor, med = j.floor, j.median

    def show(p: dict[str, Any]) -> str:
        if p.get("error") is not None:
            return f"{p['src']}->{p['dst']} failed ({str(p['error'])[:120]})"
        return f"{p['src']}->{p['dst']} {fmt(_gbps(p))} Gbit/s"

    ctx = f"nodes' best pairs: median {fmt(med)} Gbit/s, outlier floor {fmt(floor)}" if med is not None else "no median"
    culprits: set[str] = set()
    cleared: set[str] = set()
    if j.reference is not None:
        for s in j.suspects:
            mine = _with_reference(s, retests, j)
            still_slow = [r for r in mine if _slow(r, floor)]
            first = [by_pair[p] for p in j.slow if s in p]
            if still_slow or not mine:
                culprits.add(s)
                evidence = "; ".join(show(p) for p in first + (still_slow or []))
                out[s].append(
                    Finding(
                        "net.node",
                        FAIL,
                        f"slow with its partners and again with {j.reference} (a node that passed): {evidence} ({ctx})",
                        min((_gbps(r) for r in (still_slow or first)), default=None),
                        round(floor, 4) if floor is not None else None,
                        "peers",
                        REMEDIES["net_node"],
                        "Gbit/s",
                    )
                )
            else:
                cleared.add(s)
    else:
        counts = Counter(n for pair in j.slow for n in pair)
        top = counts.most_common()
        if top and (len(top) == 1 or top[0][1] > top[1][1]) and top[0][1] > 1:
            culprits.add(top[0][0])
            node = top[0][0]
            evidence = "; ".join(show(by_pair[p]) for p in j.slow if node in p)
            out[node].append(
                Finding(
                    "net.node",
                    FAIL,
                    f"the node common to the slow pairs: {evidence} ({ctx})",
                    min(_gbps(by_pair[p]) for p in j.slow if node in p),
                    round(floor, 4) if floor is not None else None,
                    "peers",
                    REMEDIES["net_node"],
                    "Gbit/s",
                )
            )
        else:
            for s in j.suspects:
                evidence = "; ".join(show(by_pair[p]) for p in j.slow if s in p)
                out[s].append(
                    Finding(
                        "net.unlocalized",
                        WARN,
                        f"in a slow pair, and no node passed to re-test it with: {evidence} ({ctx})",
                        None,
                        None,
                        "peers",
                        REMEDIES["net_node"],
                        "Gbit/s",
                    )
                )
            cleared.update(j.suspects)
    # slow pairs not explained by a culprit at either end: the link between two cleared nodes
    for src, dst in j.slow:
        if src in culprits or dst in culprits or j.reference is None:
            continue
        p = by_pair[(src, dst)]
        again = [r for r in retests if (r["src"], r["dst"]) == (src, dst)]
        if again and not any(_slow(r, floor) for r in again):
            continue  # one slow sample: measured again, the link is as fast as the others
        for me, other in ((src, dst), (dst, src)):
            retested = _with_reference(me, retests, j)
            out[me].append(
                Finding(
                    "net.link",
                    FAIL,
                    f"the link to {other} is slow: {show(p)}"
                    + (f", again {', '.join(show(r) for r in again)}" if again else "")
                    + f", while both are fast with {j.reference}: "
                    + "; ".join(show(r) for r in retested)
                    + f" ({ctx})",
                    _gbps(p),
                    round(floor, 4) if floor is not None else None,
                    "peers",
                    REMEDIES["net_link"],
                    "Gbit/s",
                )
            )
    for n in nodes:
        if not out[n]:
            mine = [_gbps(p) for p in pairs if n in (p["src"], p["dst"]) and p.get("error") is None]
            low = min(mine) if mine else None
            out[n].append(
                Finding(
                    "net.pairs",
                    PASS,
                    f"every pair with this node at or above the floor (slowest {fmt(low)} Gbit/s; {ctx})"
                    if low is not None
                    else "no pair measured with this node",
                    low,
                    round(floor, 4) if floor is not None else None,
                    "peers",
                    "",
                    "Gbit/s",
                )
            )
    return out


# ---------------------------------------------------------------------------- all-reduce bisection


@dataclass
class Bisection:
    """What the bisection measured (group -> bus bandwidth in GB/s, None when the run failed) and concluded."""

    runs: list[tuple[list[str], float | None]] = field(default_factory=list)
    culprits: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{"nodes": g, "busbw_gbps": b} for g, b in self.runs],
            "culprits": self.culprits,
            "note": self.note,
        }


class OutOfTime(Exception):
    """Raised by a bisection's ``measure`` when a run could not be made: the step's budget cannot hold another, or
    the launch was refused before anything ran (a preflight check); such a group is not measured, never blamed."""


def bisect(
    nodes: list[str], measure: Callable[[list[str]], float | None], is_slow: Callable[[float | None], bool]
) -> Bisection:
    """Find the node(s) that make an all-node all-reduce slow. ``measure(group)`` runs the all-reduce on
    ``group`` and returns its bus bandwidth (None: the run failed) or raises ``OutOfTime``; ``is_slow`` judges one
    figure. Pure given those two. Running out of time never blames a node: only groups measured slow are named."""
    out = Bisection()

    def run(group: list[str]) -> bool:
        busbw = measure(group)
        out.runs.append((list(group), busbw))
        return is_slow(busbw)

    group, good = list(nodes), []
    try:
        while len(group) > 3:
            half = len(group) // 2
            a, b = group[:half], group[half:]
            slow_a, slow_b = run(a), run(b)
            if slow_a and slow_b:
                out.culprits, out.note = group, "both halves are slow: more than one node is at fault"
                return out
            if not slow_a and not slow_b:
                out.culprits = group
                out.note = "both halves are fast alone: the slowness is between them (the links joining the halves)"
                return out
            group, good = (a, good + b) if slow_a else (b, good + a)
    except OutOfTime:
        out.culprits, out.note = [], f"budget spent while narrowing; the slow group included {', '.join(group)}"
        return out
    if not good:
        out.culprits, out.note = group, "no node passed to pair the suspects with"
        return out
    partner = good[0]
    slow, unmeasured = [], []
    for n in group:
        try:
            if run([n, partner]):
                slow.append(n)
        except OutOfTime:
            unmeasured.append(n)
    left = f"; not measured (budget spent): {', '.join(unmeasured)}" if unmeasured else ""
    if slow:
        out.culprits = slow
        out.note = f"slow when paired with {partner}, a node of a fast half{left}"
    elif unmeasured:
        out.culprits, out.note = [], f"narrowed to {', '.join(group)}{left}"
    else:
        out.culprits = group
        out.note = f"each is fast paired with {partner}: the slowness is among {', '.join(group)}"
    return out


def bisection_findings(
    b: Bisection, full_busbw: float | None, expected: float, reference: str, nodes: list[str] | None = None
) -> dict[str, list[Finding]]:
    """Fail the culprits with every run's figure; when the bisection named nobody (its budget ran out), every node
    gets a warning with the all-node figure, since the cluster's all-reduce is slow all the same."""
    runs = "; ".join(f"[{', '.join(g)}] {fmt(x) if x is not None else 'failed'} GB/s" for g, x in b.runs)
    shown = fmt(full_busbw) if full_busbw is not None else "failed"
    head = f"the all-node all-reduce reached {shown} GB/s bus bandwidth (expected at least {fmt(expected)})"
    if not b.culprits:
        return {
            n: [
                Finding(
                    "allreduce.unlocalized",
                    WARN,
                    f"{head}; the bisection named no node: {b.note}; runs: {runs or 'none'}",
                    full_busbw,
                    expected,
                    reference,
                    REMEDIES["allreduce"],
                    "GB/s",
                )
            ]
            for n in nodes or []
        }
    return {
        n: [
            Finding(
                "allreduce.bisect",
                FAIL,
                f"{head}; bisection names this node: {b.note}; runs: {runs}",
                full_busbw,
                expected,
                reference,
                REMEDIES["allreduce"],
                "GB/s",
            )
        ]
        for n in b.culprits
    }

"""Pure judgments of ``corral top``: words for NVML bit masks and XIDs, rates from two samples,
a job's step rate from its ``report()`` records, and which node is the straggler.

Nothing here touches a node; every function is a function of recorded answers
(tests: ``tests/test_top_model.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks.node.judge import XID_MEANINGS

# nvmlClocksEventReasons* bits (nvml.h); the names NVML gives them, said for people.
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "idle"),
    (0x2, "application clocks setting"),
    (0x4, "software power cap"),
    (0x8, "hardware slowdown"),
    (0x10, "sync boost"),
    (0x20, "software thermal slowdown"),
    (0x40, "hardware thermal slowdown"),
    (0x80, "hardware power brake"),
    (0x100, "display clock setting"),
)

SHORT_WORDS = {
    "application clocks setting": "app clocks",
    "software power cap": "sw power cap",
    "hardware slowdown": "hw slowdown",
    "software thermal slowdown": "sw thermal",
    "hardware thermal slowdown": "hw thermal",
    "hardware power brake": "hw power brake",
    "display clock setting": "display clock",
}
"""Clock-event reasons for narrow screens."""

NVML_EVENT_XID = 0x8
NVML_EVENT_DOUBLE_BIT_ECC = 0x2

STRAGGLER_RATE_RATIO = 0.8
"""A node whose step rate is below this fraction of its peers' median is the straggler."""
STRAGGLER_UTIL_GAP = 30.0
"""... or whose mean GPU utilisation is this many points below its peers' median."""
RATE_WINDOW_S = 30.0
"""Steps per second are measured over the newest records within this window."""


def clock_reasons_words(mask: Any) -> list[str]:
    """``0x48`` -> ``["hardware slowdown", "hardware thermal slowdown"]``; unknown bits stay visible as hex."""
    if not isinstance(mask, int):
        return []
    words = [word for bit, word in CLOCK_EVENT_REASONS if mask & bit]
    rest = mask & ~sum(bit for bit, _ in CLOCK_EVENT_REASONS)
    if rest:
        words.append(f"reason 0x{rest:x}")
    return words


def event_words(event: dict[str, Any]) -> str:
    """One NVML event (``{"type", "data"}``) as people say it: ``XID 79: GPU has fallen off the bus``."""
    kind, data = event.get("type"), event.get("data")
    if kind == NVML_EVENT_DOUBLE_BIT_ECC:
        return "double-bit ECC error"
    if kind == NVML_EVENT_XID:
        words = XID_MEANINGS.get(data)
        return f"XID {data}: {words}" if words else f"XID {data}"
    return f"NVML event 0x{kind:x}" if isinstance(kind, int) else "NVML event"


def counter_rate(before: float | None, after: float | None, seconds: float) -> float | None:
    """Per-second rate of a counter between two samples (None when unknown or it went back: a reset)."""
    if before is None or after is None or seconds <= 0 or after < before:
        return None
    return (after - before) / seconds


def net_rate(before: dict[str, Any] | None, after: dict[str, Any] | None, seconds: float, col: int) -> float | None:
    """Bytes per second over the interfaces in both samples (``col`` 0 received, 1 sent).

    An interface that appeared, vanished or was re-created (its counter went back) between the
    samples is left out rather than making the whole node's rate unknown."""
    if not before or not after or seconds <= 0:
        return None
    old, new = before.get("ifaces"), after.get("ifaces")
    if old is None or new is None:  # a sample from an agent that sent totals only
        key = ("rx", "tx")[col]
        return counter_rate(before.get(key), after.get(key), seconds)
    moved = [new[n][col] - old[n][col] for n in new.keys() & old.keys() if new[n][col] >= old[n][col]]
    return sum(moved) / seconds if moved else None


def cpu_busy_percent(before: Sequence[int] | None, after: Sequence[int] | None) -> float | None:
    """Busy share of all cores between two ``/proc/stat`` samples (idle and iowait count as idle)."""
    if not before or not after:
        return None
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])
    if total <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * (total - idle) / total))


def step_points(records: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    """(time, step) of the records that carry both."""
    out = []
    for r in records:
        t, step = r.get("t"), r.get("step")
        if isinstance(t, (int, float)) and isinstance(step, (int, float)) and not isinstance(step, bool):
            out.append((float(t), float(step)))
    return out


def step_rate(records: Sequence[dict[str, Any]], window_s: float = RATE_WINDOW_S) -> float | None:
    """Steps per second over the newest records within ``window_s`` (at least two records)."""
    points = step_points(records)
    if len(points) < 2:
        return None
    t_end, step_end = points[-1]
    first = next((p for p in points if t_end - p[0] <= window_s), points[-2])
    if first == points[-1]:
        first = points[-2]
    dt, ds = t_end - first[0], step_end - first[1]
    return ds / dt if dt > 0 and ds >= 0 else None


def last_metric(records: Sequence[dict[str, Any]]) -> str | None:
    """The newest record's figures other than time and step, e.g. ``loss=0.3124``."""
    if not records:
        return None
    parts = []
    for key, value in records[-1].items():
        if key in ("t", "step") or value is None or isinstance(value, (dict, list)):
            continue
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts) or None


def straggler(rates: dict[str, float | None], utils: dict[str, float | None] | None = None) -> tuple[str, str] | None:
    """The node that holds the job back, and why; None when the nodes keep pace.

    The slowest step rate below ``STRAGGLER_RATE_RATIO`` of the other nodes' median, else the
    lowest mean GPU utilisation ``STRAGGLER_UTIL_GAP`` points below the other nodes' median.
    """
    known = {n: r for n, r in rates.items() if r is not None}
    if len(known) >= 2:
        node = min(known, key=lambda n: known[n])
        peers = statistics.median(r for n, r in known.items() if n != node)
        if peers > 0 and known[node] < STRAGGLER_RATE_RATIO * peers:
            return node, f"{known[node]:.2f} steps/s, peers {peers:.2f}"
    util = {n: u for n, u in (utils or {}).items() if u is not None}
    if len(util) >= 2:
        node = min(util, key=lambda n: util[n])
        peers = statistics.median(u for n, u in util.items() if n != node)
        if util[node] < peers - STRAGGLER_UTIL_GAP:
            return node, f"GPU utilisation {util[node]:.0f}%, peers {peers:.0f}%"
    return None

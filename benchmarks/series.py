"""Per-second rate series and the burst-then-cap (throttle) detector shared by the volume and network benchmarks.

Cloud volumes and links often deliver a burst and then drop to a cap. Given a series of
per-second rates, find the single change point that best splits it into a faster "before"
and a slower, steady "after" (least squares over both segments, as a one-change-point
segmentation does) and report it when the drop is clear. The fit is on the logarithm of
the rates: a rate limit divides a rate, and a burst whose first second ran at twice the
next ones' rate (a transfer's start on a busy machine) is then noise beside a drop to a
tenth, not most of the variance.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Throttle:
    """A burst-then-cap pattern: ``rate_before`` until ``change_at_s``, then ``rate_after``."""

    rate_before: float
    rate_after: float
    change_at_s: float
    ratio: float

    def to_dict(self) -> dict:
        return asdict(self)


def _sse(xs: list[float]) -> float:
    if not xs:
        return 0.0
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs)


def detect_throttle(
    series: list[float],
    *,
    interval_s: float = 1.0,
    min_drop: float = 1.3,
    min_segment: int = 2,
    skip_first: int = 0,
) -> Throttle | None:
    """Return the burst-then-cap change in ``series`` (rates per ``interval_s``), or None.

    A change is reported when the mean before is at least ``min_drop`` times the mean after,
    each segment has at least ``min_segment`` samples, and the split explains most of the
    variance (the two-segment fit is at least 4x better than one mean). The last sample
    is usually a partial interval and is ignored when the series is long enough.
    ``skip_first`` drops warm-up samples.
    """
    xs = list(series[skip_first:])
    if len(xs) > 2 * min_segment + 1:
        xs = xs[:-1]
    if len(xs) < 2 * min_segment or max(xs) <= 0:
        return None
    floor = max(xs) * 1e-3  # a stalled interval (0) counts as a thousandfold drop, not -inf
    logs = [math.log(max(x, floor)) for x in xs]
    total = _sse(logs)
    best: tuple[float, int] | None = None
    for k in range(min_segment, len(xs) - min_segment + 1):
        cost = _sse(logs[:k]) + _sse(logs[k:])
        if best is None or cost < best[0]:
            best = (cost, k)
    assert best is not None
    cost, k = best
    before = statistics.fmean(xs[:k])
    after = statistics.fmean(xs[k:])
    if after <= 0 or before / after < min_drop:
        return None
    if total > 0 and cost > total / 4:
        return None
    return Throttle(
        rate_before=before, rate_after=after, change_at_s=(k + skip_first) * interval_s, ratio=before / after
    )


def verdict(measured: float, limit: float | None, tolerance: float = 0.10) -> str | None:
    """'at limit', 'below limit' or 'above limit' for a measured rate against a documented cap."""
    if limit is None:
        return None
    if measured > limit * (1 + tolerance):
        return "above limit"
    if measured < limit * (1 - tolerance):
        return "below limit"
    return "at limit"

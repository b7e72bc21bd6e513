"""Pure statistics for the harness-overhead benchmark: paired blocks, ratio of sums, bootstrap CI, verdict.

The benchmark (``perf/allreduce_overhead.py``) runs many short blocks, each holding one
bare-loop measurement and one harness measurement of the same number of all-reduces, taken
back to back in a random order. Drift on a shared machine (other jobs starting and stopping)
then hits both sides of a block alike. Nothing here touches torch or a process group, so the
arithmetic is unit-tested on its own.

Conventions: a *block time* is the rank-mean of the summed seconds of ``k`` all-reduces. The
busbw ratio harness / bare of a set of blocks is ``sum(bare) / sum(harness)`` (busbw is
inversely proportional to time, and the same bytes move on both sides), so a ratio below 1
means the harness reports a lower busbw than the bare loop, i.e. it would add overhead.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

BAR = 0.03
"""The target: the harness's busbw within 3% of a bare loop's."""

WITHIN = "within 3%"
OUTSIDE = "outside 3%"
NOT_SHOWN = "not shown"


def ratio_of_sums(bare: Sequence[float], harness: Sequence[float]) -> float:
    """busbw(harness) / busbw(bare) over paired blocks: total bare time over total harness time."""
    if len(bare) != len(harness) or not bare:
        raise ValueError("need the same, non-zero number of bare and harness blocks")
    h = sum(harness)
    if h <= 0:
        raise ValueError("harness blocks took no time")
    return sum(bare) / h


def block_ratios(bare: Sequence[float], harness: Sequence[float]) -> list[float]:
    """Each block's own busbw ratio (bare time / harness time)."""
    if len(bare) != len(harness):
        raise ValueError("need the same number of bare and harness blocks")
    return [b / h for b, h in zip(bare, harness)]


def bootstrap_ci(
    bare: Sequence[float], harness: Sequence[float], *, resamples: int = 4000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``ratio_of_sums``, resampling whole blocks (pairs stay together).

    Resampling pairs, not the two sides independently, keeps what the pairing bought: a block
    that ran while the machine was busy is slow on both sides and moves the ratio little.
    Seeded, so a recorded result can be recomputed from its samples.
    """
    n = len(bare)
    if n != len(harness) or n < 2:
        raise ValueError("need at least two paired blocks")
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")
    rng = random.Random(seed)
    idx = range(n)
    stats = []
    for _ in range(resamples):
        pick = rng.choices(idx, k=n)
        h = sum(harness[i] for i in pick)
        stats.append(sum(bare[i] for i in pick) / h)
    stats.sort()
    tail = (1 - level) / 2
    return _quantile(stats, tail), _quantile(stats, 1 - tail)


def pooled_bootstrap_ci(
    runs: Sequence[tuple[Sequence[float], Sequence[float]]],
    *,
    resamples: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap CI of the ratio of sums over the blocks of several runs, resampling within each run.

    Runs taken at different times see different load (a different busbw); resampling inside each
    run keeps every run's weight as it was, so the CI reflects only the noise within runs.
    """
    if not runs or any(len(b) != len(h) or len(b) < 2 for b, h in runs):
        raise ValueError("need runs of at least two paired blocks each")
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        bare_sum = harness_sum = 0.0
        for bare, harness in runs:
            for i in rng.choices(range(len(bare)), k=len(bare)):
                bare_sum += bare[i]
                harness_sum += harness[i]
        stats.append(bare_sum / harness_sum)
    stats.sort()
    tail = (1 - level) / 2
    return _quantile(stats, tail), _quantile(stats, 1 - tail)


def _quantile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted data."""
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def verdict(ci: tuple[float, float], bar: float = BAR) -> str:
    """``within 3%`` only when the whole CI lies in [1 - bar, 1 + bar].

    Two-sided on purpose: the issue asks for the harness's busbw to be *within* 3% of the bare
    loop's, and a harness that reported a higher busbw than the bare loop would be as wrong as
    one that reported a lower one. ``outside 3%`` when the whole CI lies beyond the bar on one
    side (a difference shown); ``not shown`` otherwise (the data cannot tell).
    """
    lo, hi = ci
    if lo > hi:
        raise ValueError("CI bounds out of order")
    if lo >= 1 - bar and hi <= 1 + bar:
        return WITHIN
    if hi < 1 - bar or lo > 1 + bar:
        return OUTSIDE
    return NOT_SHOWN


def not_slower(ci: tuple[float, float], bar: float = BAR) -> bool:
    """The one-sided reading: the harness's busbw is not more than ``bar`` below the bare loop's."""
    return ci[0] >= 1 - bar


@dataclass(frozen=True)
class Comparison:
    """One size, one harness placement against one bare baseline."""

    estimate: float
    ci: tuple[float, float]
    median_block_ratio: float
    blocks: int
    verdict: str
    not_slower: bool

    def as_dict(self) -> dict:
        return {
            "estimate": self.estimate,
            "ci95": list(self.ci),
            "median_block_ratio": self.median_block_ratio,
            "blocks": self.blocks,
            "verdict": self.verdict,
            "not_slower_than_3pct": self.not_slower,
        }


def compare(bare: Sequence[float], harness: Sequence[float], *, seed: int = 0, resamples: int = 4000) -> Comparison:
    ci = bootstrap_ci(bare, harness, seed=seed, resamples=resamples)
    return Comparison(
        estimate=ratio_of_sums(bare, harness),
        ci=ci,
        median_block_ratio=statistics.median(block_ratios(bare, harness)),
        blocks=len(bare),
        verdict=verdict(ci),
        not_slower=not_slower(ci),
    )


def block_order(kinds: Sequence[str], blocks: int, seed: int) -> list[list[str]]:
    """A random order of ``kinds`` for each block, the same on every rank (same seed).

    Random rather than strictly alternating so that no kind always follows another (a harness
    block's untimed fill and data check warm caches for whatever runs next).
    """
    rng = random.Random(seed)
    out = []
    for _ in range(blocks):
        order = list(kinds)
        rng.shuffle(order)
        out.append(order)
    return out


def pooled(runs: Sequence[tuple[Sequence[float], Sequence[float]]], *, seed: int = 0, resamples: int = 4000) -> dict:
    """Every block of several runs of one comparison: estimate, within-run-resampled CI, verdict."""
    ci = pooled_bootstrap_ci(runs, seed=seed, resamples=resamples)
    bare = [x for b, _ in runs for x in b]
    harness = [x for _, h in runs for x in h]
    return {
        "estimate": ratio_of_sums(bare, harness),
        "ci95": list(ci),
        "blocks": len(bare),
        "runs": len(runs),
        "verdict": verdict(ci),
        "not_slower_than_3pct": not_slower(ci),
    }


POOLED = {"inplace_vs_bare": ("harness_inplace", "bare"), "outofplace_vs_bare": ("harness_outofplace", "bare")}


def pool_results(results: Sequence[dict], *, seed: int = 1) -> list[dict]:
    """Per size, the pooled harness-vs-bare comparisons over the runs that measured it (the worker's layout)."""
    sizes = sorted({r["size_bytes"] for res in results for r in res["rows"]})
    rows = []
    for size in sizes:
        blocks = [r["block_seconds"] for res in results for r in res["rows"] if r["size_bytes"] == size]
        comps = {name: pooled([(b[base], b[side]) for b in blocks], seed=seed) for name, (side, base) in POOLED.items()}
        rows.append({"size_bytes": size, "comparisons": comps})
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m perf.overhead_stats FILE[@ID,...]... [--out POOLED.json]``: pool runs of allreduce_overhead.

    Each argument is a measurement file of ``perf/allreduce_overhead.py --out`` (every run in it) or
    ``FILE@ID,ID`` (those runs, e.g. ``docs/results/harness-overhead-local.json@2026-11-23/7``).
    """
    import argparse

    from perf import results_log

    p = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=None, help="measurement file to append the pooled result to")
    results_log.add_conditions_argument(p)
    args = p.parse_args(argv)
    rows = pool_results([run["result"] for spec in args.runs for run in results_log.select_runs(spec)])
    for row in rows:
        for name, c in row["comparisons"].items():
            lo, hi = c["ci95"]
            print(
                f"{row['size_bytes']:>10}  {name:<20} {c['estimate']:.4f} [{lo:.4f}, {hi:.4f}]  "
                f"{c['blocks']} blocks from {c['runs']} runs  {c['verdict']}"
            )
    if args.out:
        results_log.append_run(
            args.out,
            {"runs": args.runs, "rows": rows},
            measurement="harness-vs-bare time ratios of several allreduce_overhead runs, pooled",
            script="perf/overhead_stats.py",
            command=results_log.current_command("perf.overhead_stats", argv),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

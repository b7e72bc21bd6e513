"""All-reduce arithmetic without a process group: sizes, data types, bandwidths, data check, timing statistics.

Everything here is plain Python so it can be tested exactly; the torchrun worker
(``benchmarks/allreduce/worker.py``) only adds torch around it. The definitions follow
nccl-tests so numbers can be compared side by side:

* a size sweep goes ``min, min*f, min*f², ...`` up to ``max``; each size is rounded
  down to whole elements and the element count is ``size // element size``;
* ``algbw = bytes / time`` and ``busbw = algbw * 2(n-1)/n`` for all-reduce, in GB/s
  with GB = 10⁹ bytes;
* the reported time is the mean over ranks of each rank's mean iteration time, and the
  average bus bandwidth is the mean busbw over every row (out-of-place and in-place).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from fractions import Fraction

from launcher.errors import UserError
from launcher.units import GB, format_size, parse_size


@dataclass(frozen=True)
class DType:
    """A data type as nccl-tests names it (``name``), with torch's attribute name and its size."""

    name: str
    torch_name: str
    itemsize: int
    floating: bool
    exact_int_limit: int
    """Largest integer N such that every integer in [-N, N] is exactly representable."""


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("int8", "int8", 1, False, 127),
        DType("uint8", "uint8", 1, False, 255),
        DType("int32", "int32", 4, False, 2**31 - 1),
        DType("int64", "int64", 8, False, 2**63 - 1),
        DType("half", "float16", 2, True, 2**11),
        DType("bfloat16", "bfloat16", 2, True, 2**8),
        DType("float", "float32", 4, True, 2**24),
        DType("double", "float64", 8, True, 2**53),
    )
}
DTYPE_ALIASES = {
    "char": "int8",
    "int": "int32",
    "long": "int64",
    "fp16": "half",
    "float16": "half",
    "bf16": "bfloat16",
    "fp32": "float",
    "float32": "float",
    "fp64": "double",
    "float64": "double",
}

OPS: dict[str, str] = {"sum": "SUM", "prod": "PRODUCT", "min": "MIN", "max": "MAX", "avg": "AVG"}
"""nccl-tests' operation names -> torch.distributed.ReduceOp attribute names."""

NCCL_ONLY_OPS = frozenset({"avg"})
"""Reductions that gloo does not implement."""


def resolve_dtype(text: str) -> DType:
    """The DType for ``text`` (nccl-tests names and common aliases), or a UserError listing the choices."""
    key = text.strip().lower()
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise UserError(f"--datatype: unknown data type {text!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[key]


def resolve_op(text: str, backend: str = "auto") -> str:
    """The nccl-tests name of a reduction; ``avg`` needs NCCL (gloo has no average)."""
    key = text.strip().lower()
    if key not in OPS:
        raise UserError(f"--op: unknown reduction {text!r}; choose one of {', '.join(OPS)}")
    if key in NCCL_ONLY_OPS and backend == "gloo":
        raise UserError(
            f"--op {key}: the gloo backend has no '{key}' reduction; use --backend nccl on GPUs or --op sum"
        )
    return key


def check_op_for_dtype(op: str, dtype: DType) -> None:
    """Averages of integers round differently per library; only floating types are averaged here."""
    if op == "avg" and not dtype.floating:
        raise UserError(f"--op avg needs a floating-point --datatype (half, bfloat16, float, double), not {dtype.name}")


@dataclass(frozen=True)
class Sweep:
    """The message sizes of one run, already validated."""

    min_bytes: int
    max_bytes: int
    factor: int
    dtype: DType

    @property
    def sizes(self) -> list[int]:
        return size_sweep(self.min_bytes, self.max_bytes, self.factor, self.dtype.itemsize)


def size_sweep(min_bytes: int, max_bytes: int, factor: int, itemsize: int) -> list[int]:
    """Sizes in bytes from ``min_bytes`` to ``max_bytes`` multiplying by ``factor``, rounded down to whole elements.

    Rounding can make two steps equal (``-b 6 -f 2`` with 4-byte floats gives 4 then 12);
    duplicates are dropped, order is kept.
    """
    sizes: list[int] = []
    size = min_bytes
    while size <= max_bytes:
        whole = (size // itemsize) * itemsize
        if whole > 0 and (not sizes or sizes[-1] != whole):
            sizes.append(whole)
        size *= factor
    return sizes


def make_sweep(min_text: str | int, max_text: str | int, factor: int, dtype: DType) -> Sweep:
    """Validate ``-b/-e/-f`` the way people get them wrong, before anything launches."""
    lo = parse_size(min_text, what="-b/--minbytes")
    hi = parse_size(max_text, what="-e/--maxbytes")
    if factor <= 1:
        raise UserError(f"-f/--stepfactor must be 2 or more so that sizes grow (got {factor})")
    if lo > hi:
        raise UserError(
            f"-b/--minbytes {format_size(lo)} is larger than -e/--maxbytes {format_size(hi)}; swap them (e.g. -b 8 -e 64M)"
        )
    if lo < dtype.itemsize:
        raise UserError(
            f"-b/--minbytes {lo} is smaller than one {dtype.name} element ({dtype.itemsize} bytes); use -b {dtype.itemsize} or more"
        )
    return Sweep(lo, hi, factor, dtype)


# ---- bandwidths ---------------------------------------------------------------


def bus_factor(world_size: int) -> float:
    """nccl-tests' all-reduce bus factor 2(n-1)/n: the share of the data each rank's link carries."""
    return 2 * (world_size - 1) / world_size


def algbw_gbps(size_bytes: int, time_s: float) -> float:
    """Algorithm bandwidth in GB/s (10⁹ bytes per second)."""
    return size_bytes / time_s / GB if time_s > 0 else 0.0


def busbw_gbps(algbw: float, world_size: int) -> float:
    """Bus bandwidth: ``algbw * bus_factor(n)`` (the formula the tests and docs quote)."""
    return algbw * bus_factor(world_size)


def average_busbw(rows: list[dict]) -> float:
    """``# Avg bus bandwidth``: the plain mean of busbw over every row, out-of-place and in-place alike."""
    return statistics.fmean(r["busbw_gbps"] for r in rows) if rows else 0.0


def large_message_busbw(rows: list[dict]) -> tuple[float, int] | None:
    """The best busbw at the largest size measured (in- or out-of-place) and that size: the figure a link's
    rate shows in. Small messages fit a switch buffer or a shaper's burst, so a capped link can still reach a
    high *peak* at a small size; the large-message plateau is what a health check compares (Azure's node
    health checks read all-reduce bus bandwidth at large messages)."""
    if not rows:
        return None
    top = max(r["size_bytes"] for r in rows)
    return max(r["busbw_gbps"] for r in rows if r["size_bytes"] == top), top


def peak_row(rows: list[dict]) -> dict | None:
    """The row with the highest busbw (the first one on ties)."""
    best = None
    for r in rows:
        if best is None or r["busbw_gbps"] > best["busbw_gbps"]:
            best = r
    return best


# ---- timing statistics --------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (p50 of 20 values is the 10th, p99 the 20th)."""
    if not sorted_values:
        raise ValueError("no values")
    k = max(1, math.ceil(len(sorted_values) * pct / 100))
    return sorted_values[min(k, len(sorted_values)) - 1]


@dataclass(frozen=True)
class TimingSummary:
    """One row's timings from every rank's per-iteration times (seconds)."""

    time_s: float
    """Mean over ranks of each rank's mean iteration time (nccl-tests' default averaging)."""
    p50_s: float
    p99_s: float
    min_s: float
    max_s: float
    cv: float
    """Coefficient of variation (population stdev / mean) of the per-iteration times."""
    slowest_rank: int
    slowest_rank_time_s: float


def summarize_times(per_rank: list[list[float]]) -> TimingSummary:
    """Summarise ``per_rank[r][k]``: rank r's time for iteration k.

    An iteration of a collective takes as long as its slowest rank, so the per-iteration
    statistics (p50, p99, CV) use the maximum over ranks of iteration k, as nccl-tests'
    per-iteration report does. The headline time averages the ranks, as nccl-tests does.
    """
    if not per_rank or not per_rank[0]:
        raise ValueError("no timings")
    n_iter = len(per_rank[0])
    if any(len(t) != n_iter for t in per_rank):
        raise ValueError("ranks reported different iteration counts")
    rank_means = [statistics.fmean(t) for t in per_rank]
    per_iter = sorted(max(t[k] for t in per_rank) for k in range(n_iter))
    mean = statistics.fmean(per_iter)
    cv = statistics.pstdev(per_iter) / mean if mean > 0 else 0.0
    slowest = max(range(len(rank_means)), key=lambda r: rank_means[r])
    return TimingSummary(
        time_s=statistics.fmean(rank_means),
        p50_s=percentile(per_iter, 50),
        p99_s=percentile(per_iter, 99),
        min_s=per_iter[0],
        max_s=per_iter[-1],
        cv=cv,
        slowest_rank=slowest,
        slowest_rank_time_s=rank_means[slowest],
    )


def make_row(
    *,
    size_bytes: int,
    dtype: DType,
    op: str,
    inplace: bool,
    world_size: int,
    timing: TimingSummary,
    wrong: int,
    slowest_node: str | None = None,
) -> dict:
    """One result row, with units in the key names (µs, GB/s) as the JSON schema promises."""
    algbw = algbw_gbps(size_bytes, timing.time_s)
    return {
        "size_bytes": size_bytes,
        "count": size_bytes // dtype.itemsize,
        "dtype": dtype.name,
        "op": op,
        "root": -1,
        "inplace": inplace,
        "time_us": timing.time_s * 1e6,
        "algbw_gbps": algbw,
        "busbw_gbps": busbw_gbps(algbw, world_size),
        "wrong": wrong,
        "p50_us": timing.p50_s * 1e6,
        "p99_us": timing.p99_s * 1e6,
        "min_us": timing.min_s * 1e6,
        "max_us": timing.max_s * 1e6,
        "cv": timing.cv,
        "slowest_rank": timing.slowest_rank,
        "slowest_node": slowest_node,
        "slowest_rank_time_us": timing.slowest_rank_time_s * 1e6,
    }


# ---- data check -----------------------------------------------------------------


@dataclass(frozen=True)
class FillRule:
    """Rank r's element i is ``values[(i + shift * r) % modulus]``: small integers whose reduction is exact.

    nccl-tests fills buffers so that the reduced result is known in advance; here the
    pattern is periodic, so the expected result is periodic too and can be checked
    without materialising every rank's data.
    """

    modulus: int
    shift: int
    values: tuple[int, ...]

    def value(self, rank: int, index: int) -> int:
        return self.values[(index + self.shift * rank) % self.modulus]


def fill_rule(op: str, world_size: int) -> FillRule:
    """The fill pattern for ``op``: sums of values in {1, 2}; products that are exactly 2; min/max over 1..7."""
    if op in ("sum", "avg"):
        return FillRule(3, 1, (2, 1, 1))
    if op == "prod":
        # Exactly one rank holds a 2 at each index: the product is 2 for every element.
        return FillRule(world_size, world_size - 1, (2,) + (1,) * (world_size - 1))
    if op in ("min", "max"):
        return FillRule(7, 1, (1, 2, 3, 4, 5, 6, 7))
    raise UserError(f"--op: unknown reduction {op!r}")


def expected_period(op: str, world_size: int) -> list[Fraction]:
    """The reduced value at indices 0..modulus-1 (it repeats with the fill rule's modulus); exact fractions."""
    rule = fill_rule(op, world_size)
    out = []
    for i in range(rule.modulus):
        vals = [rule.value(r, i) for r in range(world_size)]
        if op == "sum":
            out.append(Fraction(sum(vals)))
        elif op == "avg":
            out.append(Fraction(sum(vals), world_size))
        elif op == "prod":
            out.append(Fraction(math.prod(vals)))
        elif op == "min":
            out.append(Fraction(min(vals)))
        else:
            out.append(Fraction(max(vals)))
    return out


def expected_values(op: str, dtype: DType, world_size: int) -> list[float | int]:
    """``expected_period`` as numbers of ``dtype``: integers wrap around like the hardware's two's complement."""
    out: list[float | int] = []
    bits = 8 * dtype.itemsize
    for value in expected_period(op, world_size):
        if dtype.floating:
            out.append(float(value))
            continue
        n = int(value) % (1 << bits)
        if dtype.name.startswith("int") and n >= 1 << (bits - 1):
            n -= 1 << bits
        out.append(n)
    return out


def check_tolerance(op: str, dtype: DType, world_size: int) -> float:
    """Absolute tolerance when comparing reduced values with the expected ones.

    Every partial sum, product, minimum and maximum of the fill pattern is a small integer,
    exact in every type as long as it fits ``exact_int_limit``; then the check is exact (0).
    Averages divide by n (NCCL pre-multiplies by 1/n), so they get a few units in the last place.
    """
    if not dtype.floating:
        return 0.0
    eps = {"half": 2**-10, "bfloat16": 2**-7, "float": 2**-23, "double": 2**-52}[dtype.name]
    if op == "avg":
        return (world_size + 1) * eps * 2  # every average of the fill values is at most 2
    largest = 2 * world_size if op == "sum" else 7
    if largest > dtype.exact_int_limit:
        return world_size * eps * largest
    return 0.0

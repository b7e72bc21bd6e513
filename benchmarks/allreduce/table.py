"""The all-reduce result as text, laid out like nccl-tests' ``all_reduce_perf`` so both can be read side by side.

Pure: takes the result dict the worker writes (see ``docs/BENCH_NET.md``) and returns lines.
Column widths and number formats follow nccl-tests: a field gets two decimals while
they fit its width, then one, then none; ``#wrong`` is printed like C's ``%6g``.
"""

from __future__ import annotations

from launcher.units import format_size

_LEAD = ("size", "count", "type", "redop", "root")
_LEAD_UNITS = ("(B)", "(elements)", "", "", "")
_HALF = ("time", "algbw", "busbw", "#wrong")
_HALF_UNITS = ("(us)", "(GB/s)", "(GB/s)", "")


def fit(value: float, width: int) -> str:
    """``value`` right-aligned in ``width`` characters, with as many decimals (2, 1, 0) as fit."""
    digits = len(str(int(value))) if value >= 1 else 0
    if digits < width - 2:
        return f"{value:{width}.2f}"
    if digits < width - 1:
        return f"{value:{width}.1f}"
    if digits < width + 1:
        return f"{value:{width}.0f}"
    return f"{value:{width}.1e}"


def _lead(cells: tuple[str, ...]) -> str:
    size, count, typ, redop, root = cells
    return f"{size:>10}  {count:>12}  {typ:>8}  {redop:>6}  {root:>6}"


def _half(cells: tuple[str, ...]) -> str:
    t, alg, bus, wrong = cells
    return f"  {t:>7}  {alg:>6}  {bus:>6}  {wrong:>6}"


def header_lines() -> list[str]:
    pad = _lead(("",) * 5)
    return [
        f"# {pad}           out-of-place                       in-place          ",
        "# " + _lead(_LEAD) + _half(_HALF) + _half(_HALF),
        "# " + _lead(_LEAD_UNITS) + _half(_HALF_UNITS) + _half(_HALF_UNITS),
    ]


def _row_half(row: dict) -> str:
    return _half(
        (fit(row["time_us"], 7), fit(row["algbw_gbps"], 6), fit(row["busbw_gbps"], 6), f"{float(row['wrong']):g}")
    )


def paired_rows(rows: list[dict]) -> list[tuple[dict, dict | None]]:
    """(out-of-place, in-place) per size, in sweep order."""
    by_size: dict[int, dict[bool, dict]] = {}
    for r in rows:
        by_size.setdefault(r["size_bytes"], {})[bool(r["inplace"])] = r
    out = []
    for size in sorted(by_size):
        pair = by_size[size]
        first = pair.get(False) or pair[True]
        out.append((first, pair.get(True) if False in pair else None))
    return out


def table_lines(rows: list[dict]) -> list[str]:
    """nccl-tests' table: one line per size, out-of-place then in-place."""
    lines = header_lines()
    for oop, ip in paired_rows(rows):
        lead = (
            f"{oop['size_bytes']:12d}  {oop['count']:12d}  {oop['dtype']:>8}  {oop['op']:>6}  {oop.get('root', -1):6d}"
        )
        lines.append(lead + _row_half(oop) + (_row_half(ip) if ip else ""))
    return lines


def _slowest(row: dict) -> str:
    node = row.get("slowest_node")
    return f"r{row['slowest_rank']}" + (f"@{node}" if node else "")


def per_iteration_lines(rows: list[dict]) -> list[str]:
    """p50/p99/CV of per-iteration times (max over ranks per iteration) and the slowest rank, per size."""

    def half(r: dict) -> str:
        return f"  {fit(r['p50_us'], 9)}  {fit(r['p99_us'], 9)}  {fit(100 * r['cv'], 6)}  {_slowest(r):>14}"

    head = f"  {'p50':>9}  {'p99':>9}  {'cv':>6}  {'slowest rank':>14}"
    units = f"  {'(us)':>9}  {'(us)':>9}  {'(%)':>6}  {'(mean time)':>14}"
    lines = [
        "# per iteration (each iteration's time is its slowest rank's):",
        f"# {'':>10}  {'out-of-place':^43}  {'in-place':^43}",
        f"# {'size':>10}" + head + head,
        f"# {'(B)':>10}" + units + units,
    ]
    for oop, ip in paired_rows(rows):
        lines.append(f"{oop['size_bytes']:12d}" + half(oop) + (half(ip) if ip else ""))
    return lines


def summary_lines(result: dict) -> list[str]:
    rows = result["rows"]
    wrong = sum(int(r["wrong"]) for r in rows)
    lines = [
        f"# {'Out of bounds values':<20} : {wrong} {'FAILED' if wrong else 'OK'}",
        f"# {'Avg bus bandwidth':<20} : {result['avg_busbw_gbps']:g}",
    ]
    if result.get("peak_size_bytes") is not None:
        # Spelled without hyphens: SuperBench's nccl-bw parser reads the rows after the LAST line holding
        # "out-of-place", so that word after the table would leave it no rows (tests/test_nccl_consumers.py).
        where = "in place" if result.get("peak_inplace") else "out of place"
        lines.append(
            f"# {'Peak bus bandwidth':<20} : {result['peak_busbw_gbps']:g} GB/s at {format_size(result['peak_size_bytes'])}"
            f" ({result['peak_size_bytes']} B, {where})"
        )
    return lines


def env_lines(result: dict) -> list[str]:
    """The environment record, as '#' comment lines above the table."""
    env = result["env"]
    p = result.get("params", {})
    lines = [
        f"# corral bench allreduce: {result['world_size']} ranks on {env.get('nnodes', '?')} node(s), "
        f"{env.get('ranks_per_node', '?')} per node; backend {env.get('backend')} (timing: {env.get('timing')})",
        f"# minBytes {p.get('min_bytes')} maxBytes {p.get('max_bytes')} step: {p.get('factor')}(factor) "
        f"warmup iters: {p.get('warmup')} iters: {p.get('iters')} validation: 1",
        f"# torch {env.get('torch')}  NCCL {env.get('nccl') or '-'}  CUDA {env.get('cuda') or '-'}  "
        f"interface {env.get('interface') or '-'} ({env.get('interface_source', '?')})",
    ]
    if env.get("backend_note"):
        lines.append(f"# NOTE: {env['backend_note']}")
    nccl_vars = env.get("nccl_env") or {}
    if nccl_vars:
        lines.append("# " + " ".join(f"{k}={v}" for k, v in sorted(nccl_vars.items())))
    lines.append("# Using devices")
    for d in env.get("ranks", []):
        lines.append(
            f"#  Rank {d['rank']:2d} Pid {d.get('pid', 0):6d} on {d.get('node', '?'):>10} device {d.get('device', '?')}"
        )
    lines.append("#")
    return lines


def render(result: dict, *, per_iteration: bool = False) -> str:
    """The whole report: environment, nccl-tests table and summary (what tools that parse
    nccl-tests output read); the per-iteration table only when asked for: it repeats the
    ``out-of-place`` header after ``Out of bounds values``, which such parsers key on."""
    lines = env_lines(result) + table_lines(result["rows"]) + summary_lines(result)
    if per_iteration:
        lines += ["#"] + per_iteration_lines(result["rows"])
    return "\n".join(lines) + "\n"

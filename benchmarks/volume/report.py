"""Result records (the ``--json`` schema), the table and the time-series plot.

Units are in the key names: ``mib_per_s`` is 2**20 bytes per second, ``mb_per_s`` 10**6 bytes
per second, ``lat_*_us`` microseconds, ``*_bytes`` bytes, ``*_s`` seconds.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks.series import detect_throttle, verdict
from benchmarks.volume.engine import ModeRun
from benchmarks.volume.fio import FioResult
from launcher.units import MIB, format_size

SCHEMA_VERSION = 1
UNITS = {
    "mib_per_s": "MiB/s (2^20 bytes per second)",
    "mb_per_s": "MB/s (10^6 bytes per second)",
    "iops": "requests per second",
    "lat_p50_us": "microseconds, per request, submission to completion",
    "lat_p99_us": "microseconds",
    "series_mib_per_s": "MiB/s per interval of series_interval_s seconds (the last one may be shorter)",
    "bs_bytes": "bytes",
}


def mode_record(run: ModeRun, *, node: str, limit_mibps: float | None, tick_s: float = 1.0) -> dict:
    """One row of ``results``: the mode's figures, its series, throttle and verdict.

    The verdict judges the sustained rate: the rate after the change when a burst-then-cap
    pattern is found, else the mean.
    """
    spec = run.spec
    throttle = detect_throttle(run.series_mib_per_s, interval_s=tick_s)
    sustained = throttle.rate_after if throttle else run.mib_per_s
    return {
        "node": node,
        "mode": spec.mode,
        "bs_bytes": spec.bs,
        "jobs": spec.jobs,
        "iodepth": spec.iodepth,
        "direct": spec.direct,
        "engine": run.engine,
        "size_bytes": spec.size,
        "duration_s": spec.duration_s,
        "bytes": run.bytes,
        "ops": run.ops,
        "elapsed_s": round(run.elapsed_s, 6),
        "mib_per_s": run.mib_per_s,
        "mb_per_s": run.mib_per_s * MIB / 1e6,
        "iops": run.iops,
        "lat_p50_us": run.lat_p50_us,
        "lat_p99_us": run.lat_p99_us,
        "series_interval_s": tick_s,
        "series_mib_per_s": [round(x, 3) for x in run.series_mib_per_s],
        "throttle": throttle.to_dict() if throttle else None,
        "sustained_mib_per_s": sustained,
        "verdict": verdict(sustained, limit_mibps),
    }


def fio_record(fio: FioResult, *, node: str, argv: list[str], corral_mib_per_s: float) -> dict:
    d = fio.to_dict()
    d["node"] = node
    d["argv"] = argv
    d["corral_over_fio"] = corral_mib_per_s / fio.mib_per_s if fio.mib_per_s > 0 else None
    return d


def aggregate(results: list[dict], limit_mibps: float | None) -> list[dict]:
    """Per mode across nodes running at once: total throughput, IOPS, slowest node."""
    by_mode: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_mode[r["mode"]].append(r)
    rows = []
    for mode, rs in by_mode.items():
        total = sum(r["mib_per_s"] for r in rs)
        rows.append(
            {
                "mode": mode,
                "nodes": len(rs),
                "mib_per_s": total,
                "mb_per_s": total * MIB / 1e6,
                "iops": sum(r["iops"] for r in rs),
                "min_node_mib_per_s": min(r["mib_per_s"] for r in rs),
                "median_node_mib_per_s": statistics.median(r["mib_per_s"] for r in rs),
                "verdict": verdict(total, limit_mibps),
            }
        )
    return rows


def render_table(doc: dict):
    """A rich table of ``results`` (and corral ÷ fio when fio ran)."""
    from rich.table import Table

    fio_by = {(f["node"], f["mode"]): f for f in doc.get("fio") or []}
    show_fio = bool(fio_by)
    multi = len({r["node"] for r in doc["results"]}) > 1
    t = Table(title=f"corral bench volume {doc['path']}")
    cols = (["node"] if multi else []) + [
        "mode",
        "bs",
        "jobs x depth",
        "I/O",
        "MiB/s",
        "MB/s",
        "IOPS",
        "p50 µs",
        "p99 µs",
        "throttle",
        "verdict",
    ]
    if show_fio:
        cols += ["fio MiB/s", "fio IOPS", "corral ÷ fio"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("node", "mode", "I/O", "throttle", "verdict") else "right")
    for r in doc["results"]:
        th = r["throttle"]
        throttle = f"{th['rate_before']:.0f}→{th['rate_after']:.0f} MiB/s at {th['change_at_s']:.0f}s" if th else "-"
        row = ([r["node"]] if multi else []) + [
            r["mode"],
            format_size(r["bs_bytes"]),
            f"{r['jobs']}x{r['iodepth']}",
            "direct" if r["direct"] else "buffered",
            f"{r['mib_per_s']:.1f}",
            f"{r['mb_per_s']:.1f}",
            f"{r['iops']:.0f}",
            _num(r["lat_p50_us"]),
            _num(r["lat_p99_us"]),
            throttle,
            r["verdict"] or "-",
        ]
        if show_fio:
            f = fio_by.get((r["node"], r["mode"]))
            ratio = f and f.get("corral_over_fio")
            row += [
                f"{f['mib_per_s']:.1f}" if f else "-",
                f"{f['iops']:.0f}" if f else "-",
                f"{ratio:.2f}" if ratio else "-",
            ]
        t.add_row(*row)
    return t


def render_aggregate(doc: dict):
    from rich.table import Table

    t = Table(title="all nodes at once")
    for c in ("mode", "nodes", "total MiB/s", "total MB/s", "total IOPS", "slowest node MiB/s", "verdict"):
        t.add_column(c, justify="left" if c in ("mode", "verdict") else "right")
    for a in doc.get("aggregate") or []:
        t.add_row(
            a["mode"],
            str(a["nodes"]),
            f"{a['mib_per_s']:.1f}",
            f"{a['mb_per_s']:.1f}",
            f"{a['iops']:.0f}",
            f"{a['min_node_mib_per_s']:.1f}",
            a["verdict"] or "-",
        )
    return t


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def plot_series(doc: dict, out: Path) -> None:
    """One panel per mode: MiB/s per interval against time, a line per node, the limit dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(r["mode"] for r in doc["results"]))
    fig, axes = plt.subplots(len(modes), 1, figsize=(8, 2.6 * len(modes)), squeeze=False)
    limit = doc.get("limit_mibps")
    for ax, mode in zip(axes[:, 0], modes):
        for r in (r for r in doc["results"] if r["mode"] == mode):
            xs = [(i + 1) * r["series_interval_s"] for i in range(len(r["series_mib_per_s"]))]
            ax.plot(xs, r["series_mib_per_s"], marker=".", label=r["node"])
            th = r["throttle"]
            if th:
                ax.axvline(th["change_at_s"], color="grey", linestyle=":")
        if limit:
            ax.axhline(limit, color="red", linestyle="--", label=f"limit {limit:g} MiB/s")
        ax.set_title(mode)
        ax.set_ylabel("MiB/s")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)

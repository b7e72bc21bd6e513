"""PNG plots for the network benchmarks (matplotlib, Agg backend, imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_allreduce(result: dict, path: str | Path) -> Path:
    """busbw and algbw (GB/s) against message size (log x), out-of-place and in-place."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for inplace, style in ((False, "-"), (True, "--")):
        rows = [r for r in result["rows"] if bool(r["inplace"]) == inplace]
        xs = [r["size_bytes"] for r in rows]
        where = "in-place" if inplace else "out-of-place"
        ax.plot(xs, [r["busbw_gbps"] for r in rows], style, marker="o", label=f"busbw, {where}")
        ax.plot(xs, [r["algbw_gbps"] for r in rows], style, marker=".", alpha=0.6, label=f"algbw, {where}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("GB/s (1e9 bytes/s)")
    env = result.get("env", {})
    ax.set_title(
        f"all-reduce {result['rows'][0]['dtype'] if result['rows'] else ''}: {result['world_size']} ranks, "
        f"{env.get('backend')}; peak busbw {result['peak_busbw_gbps']:.3g} GB/s"
    )
    return _finish(plt, fig, ax, path)


def plot_net(result: dict, path: str | Path) -> Path:
    """Each pair's per-interval throughput (Gbit/s) over time; throttled pairs marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for p in result["pairs"]:
        if not p.get("series_gbps"):
            continue
        step = p.get("interval_s", 1.0)
        xs = [step * (i + 1) for i in range(len(p["series_gbps"]))]
        label = f"{p['src']} -> {p['dst']}" + (" (throttled)" if p.get("throttle") else "")
        line = ax.plot(xs, p["series_gbps"], marker="o", label=label)[0]
        if p.get("throttle"):
            ax.axvline(p["throttle"]["change_at_s"], color=line.get_color(), linestyle=":", alpha=0.7)
    ax.set_xlabel("seconds since the first byte (end of each interval)")
    ax.set_ylabel("Gbit/s")
    ax.set_yscale("log")
    s = result.get("slowest")
    ax.set_title(
        "TCP throughput per pair" + (f"; slowest {s['src']} -> {s['dst']} {s['gbps']:.3g} Gbit/s" if s else "")
    )
    return _finish(plt, fig, ax, path)


def _finish(plt, fig, ax, path: str | Path) -> Path:
    """Grid, legend and layout shared by every benchmark plot; write the PNG and free the figure."""
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out

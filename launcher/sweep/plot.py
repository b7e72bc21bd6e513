"""`corral sweep status --plot`: the metric against step for every trial, from what each trial reported.

Pruned trials are drawn dashed and end in a cross where early_terminate stopped them; the best
trial is drawn thick. matplotlib comes with the ``plot`` extra and is imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.sweep.metrics import metric_series, read_reports


def trial_curves(status: dict[str, Any]) -> list[tuple[dict[str, Any], list[tuple[int, float]]]]:
    """Each trial row that has run, with its (step, metric) points from its latest run dir."""
    name, runs = status["metric"]["name"], Path(status["runs"])
    return [(r, metric_series(read_reports(runs / r["run"]), name)) for r in status["trials"] if r.get("run")]


def plot_curves(status: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = status["best"]["id"] if status["best"] else None
    fig, ax = plt.subplots(figsize=(8, 5))
    for row, points in trial_curves(status):
        if not points:
            continue
        steps, values = zip(*points)
        pruned = row["state"] == "pruned"
        style = (
            {"color": "tab:green", "linewidth": 2.5, "zorder": 3}
            if row["id"] == best
            else {"color": "tab:red" if pruned else "tab:blue", "linewidth": 1, "alpha": 0.7}
        )
        ax.plot(steps, values, linestyle="--" if pruned else "-", label=None, **style)
        if pruned:
            ax.plot(steps[-1], values[-1], marker="x", color="tab:red", markersize=7)
    ax.plot([], [], color="tab:blue", label="finished")
    ax.plot([], [], color="tab:red", linestyle="--", marker="x", label="pruned (early_terminate)")
    if best:
        ax.plot([], [], color="tab:green", linewidth=2.5, label=f"best ({best})")
    ax.set_xlabel("step")
    ax.set_ylabel(status["metric"]["name"])
    c = status["counts"]
    ax.set_title(f"sweep {status['name']} ({status['method']}): {c.get('done', 0)} done, {c.get('pruned', 0)} pruned")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

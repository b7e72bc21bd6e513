"""``corral bench net``: plan the pairs, run them over ssh one at a time, report the matrix."""

from __future__ import annotations

import posixpath
import sys
from pathlib import Path

from benchmarks import net


def python_for(cluster, node) -> str:
    """The interpreter that runs the peer on ``node``: the cluster venv's, this one for localhost, else python3."""
    if cluster.venv:
        return posixpath.join(cluster.venv, "bin", "python")
    return sys.executable if node.is_local else "python3"


def prepare(cluster, *, duration: float, pairs: str) -> tuple[list[net.Endpoint], list[net.PairPlan]]:
    """Endpoints and per-pair argv; every bad input (addresses, --pairs, --duration) fails here, exit 2."""
    eps = net.endpoints(cluster)
    pythons = {n.label: python_for(cluster, n) for n in cluster.nodes}
    return eps, net.build_plan(eps, pairs, python=pythons, duration=duration)


def run(cluster, eps, plans, *, duration: float, pairs: str, progress=None) -> dict:
    from benchmarks.net_exec import run_plan

    results = run_plan(cluster, plans, duration, on_pair=progress)
    return net.build_result(eps, pairs, duration, results)


def write_outputs(result: dict, *, json_out: Path | None, plot: Path | None) -> None:
    from launcher.cli.common import write_json

    write_json(result, json_out)
    if plot is not None:
        from benchmarks.bench_plots import plot_net

        plot_net(result, plot)

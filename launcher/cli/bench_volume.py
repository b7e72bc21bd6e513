"""The body of ``corral bench volume``: plan, run here or on the cluster, then table, JSON, plot."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from benchmarks.volume import plan as planmod
from benchmarks.volume import report

log = logging.getLogger(__name__)

TICK = re.compile(r"^\w+: +[\d.]+s +[\d.]+ MiB/s$")
"""The per-second lines of ``benchmarks.volume.run`` (``seqread:   3.0s     812.4 MiB/s``)."""
MODE_DONE = re.compile(r"^\w+: [\d.]+ MiB/s, \d+ IOPS$")


def run_command(
    *,
    path: Path,
    cluster_file: Path | None,
    nodes: list[str] | None,
    size: str,
    bs: str,
    jobs: int,
    iodepth: int,
    mode: str,
    duration: float | None,
    direct: bool,
    limit_mibps: float | None,
    json_out: Path | None,
    plot: Path | None,
    compare_fio: bool,
    dry_run: bool,
    exclude: list[str] | None = None,
    exclude_from: Path | None = None,
) -> int:
    from launcher.cli.output import console, write_json

    plan = planmod.build_plan(
        str(path),
        size=size,
        bs=bs,
        jobs=jobs,
        iodepth=iodepth,
        modes=mode,
        duration_s=duration,
        direct=direct,
        limit_mibps=limit_mibps,
        compare_fio=compare_fio,
    )
    out = console()
    if not out.is_terminal:
        out.width = 200  # a file or pipe gets whole rows, not a table squeezed into 80 columns
    err = console(stderr=True)
    on_cluster = cluster_file is not None or bool(nodes) or bool(exclude) or exclude_from is not None
    cluster = _load_cluster(cluster_file, nodes, exclude or [], exclude_from, dry_run) if on_cluster else None
    if dry_run:
        for line in planmod.describe(plan):
            out.print(line)
        if on_cluster:
            from benchmarks.volume.cluster import build_job, job_name
            from launcher import api

            name = job_name()
            launch_plan = api.dry_run(build_job(plan, name), cluster, name=name, nodes=nodes or None, plain=True)
            out.print(launch_plan.text, markup=False, highlight=False)
        if compare_fio:
            for m in plan.modes:
                out.print("fio: " + " ".join(planmod.fio_argv(m, "<workdir>/" + planmod.DATA_FILE)))
        return 0

    from benchmarks.volume.target import Interrupted
    from launcher.cli.progress import node_states, progress

    try:
        with progress(f"volume {path}: modes", total=len(plan.modes)) as update:
            modes_done = []

            def say(line: str) -> None:
                if err.is_terminal and TICK.match(line):
                    update(note=line)  # MiB/s so far: the bar's business, not the terminal's history
                    return
                if MODE_DONE.match(line):
                    modes_done.append(line)
                    update(completed=len(modes_done), note=line)
                err.print(line, style="dim", markup=False, highlight=False)

            def on_poll(status, last_lines: dict[str, str]) -> None:
                lines = "; ".join(f"{n}: {line.split('] ', 1)[-1]}" for n, line in last_lines.items())
                update(note=lines or node_states(status))

            if on_cluster:
                from benchmarks.volume.cluster import run_on_cluster

                doc = run_on_cluster(plan, cluster, nodes=nodes or None, say=say, on_poll=on_poll)
            else:
                from benchmarks.volume.run import run_plan

                doc = run_plan(plan, say=say)
    except Interrupted as exc:
        err.print(f"{exc}; the benchmark's files were removed", markup=False)
        return exc.exit_code
    for n in doc.get("notices") or []:
        err.print(f"notice: {n}", markup=False)
    if json_out is not None and str(json_out) == "-":
        write_json(doc, json_out)
    else:
        out.print(report.render_table(doc))
        if doc.get("aggregate"):
            out.print(report.render_aggregate(doc))
        out.print(f"reads: {doc['read_method']}; writes: closing fsync counted")
        write_json(doc, json_out)
    if plot is not None:
        report.plot_series(doc, plot)
    for f in doc.get("failed_nodes") or []:
        err.print(f"failed: {f}", style="red", markup=False)
    return 1 if doc.get("failed_nodes") else 0


def _load_cluster(
    cluster_file: Path | None, nodes: list[str] | None, exclude: list[str], exclude_from: Path | None, dry_run: bool
):
    """The cluster for ``-c`` (the embedded localhost one with only ``--node``) less the excluded nodes; unknown
    ``--node`` names are errors."""
    from launcher.cli.clusters import cluster_excluding, say_left_out
    from launcher.errors import UserError

    cluster, left_out = cluster_excluding(cluster_file, exclude, exclude_from)
    say_left_out(left_out, stdout=dry_run)
    for n in nodes or []:
        try:
            cluster.node(n)
        except KeyError:
            known = ", ".join(x.label for x in cluster.nodes)
            raise UserError(f"--node {n}: no such node in the cluster (known: {known})") from None
    return cluster

"""Job commands: launch, ps, logs, attach, stop, preflight."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher import aio
from launcher.cli.common import (
    ClusterOpt,
    ExcludeFromOpt,
    ExcludeOpt,
    JsonOpt,
    JsonOutOpt,
)
from launcher.cli.launching import launch_job_file, report_final
from launcher.cli.output import console, emit_json


def _cluster(path: Optional[Path]):
    from launcher.config import load_cluster

    return load_cluster(path)


def launch(
    job: Path = typer.Argument(..., help="Job YAML file."),
    cluster: Optional[Path] = ClusterOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the job's name)."),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Override a job field: --set max_restarts=2 (repeatable)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan (per node: tmux session, env, torchrun argv) and touch nothing."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Stream the logs until the job ends (Ctrl-C stops following, not the job)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan (with --dry-run) or the run record as JSON."),
    exclude: list[str] = ExcludeOpt,
    exclude_from: Optional[Path] = ExcludeFromOpt,
) -> int:
    """Launch a job on every node inside tmux; returns once every node runs.

    Paths: the job's script is relative to the cluster's workdir (where it runs on every node);
    other relative paths in a file are relative to that file; without -c, the embedded cluster's
    workdir and runs/ are in the project directory (the nearest one upward holding runs/ or .git).

    Example: corral launch configs/demo.yaml -c cluster.yaml --set args.0=--lr=0.1 --exclude-from acceptance/report.json
    """
    return launch_job_file(
        job,
        cluster,
        name=name,
        set_=set_,
        dry_run=dry_run,
        follow=follow,
        as_json=as_json,
        exclude=exclude,
        exclude_from=exclude_from,
    )


def ps(
    cluster: Optional[Path] = ClusterOpt,
    all_: bool = typer.Option(
        False, "--all", "-a", help="Also list the benchmarks' own runs (named bench-...) and every sweep trial."
    ),
    nodes: bool = typer.Option(
        False, "--nodes", help="One row per node instead of one line per job (--json always has every node)."
    ),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
) -> None:
    """List jobs: each job's state and its nodes' states folded into one line ("31 running, 1 unknown: n17").

    The job state comes from its nodes' states (docs/LAUNCH.md, "Job states"). A node that could
    not be asked is named with the reason. Runs that the benchmarks start (named bench-...) are
    listed with --all only. A sweep's trials are one line per sweep (its trials counted by state);
    --all or `corral sweep status NAME` lists them.

    Example: corral ps --nodes
    """
    from launcher.cli.ps_view import show_jobs

    show_jobs(cluster, all_=all_, per_node=nodes, as_json=as_json, json_out=json_out)


def logs(
    name: str = typer.Argument(..., help="Job name."),
    cluster: Optional[Path] = ClusterOpt,
    node: Optional[str] = typer.Option(None, "--node", help="Only this node."),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing new lines until every node of the job has ended; exit with the job's status.",
    ),
    lines: int = typer.Option(50, "--lines", "-n", help="Lines from the end of each log."),
) -> int:
    """Print a job's logs, every line prefixed with node and rank.

    With -f it follows the logs (through torchrun's restarts under max_restarts) until every
    node of the job has ended, then exits with the job's status, like launch --follow.

    Example: corral logs demo -n 20 -f
    """
    from launcher.jobs import follow as follow_logs
    from launcher.jobs import runs_dir, tail_lines
    from launcher.runs.record import load

    clustercfg = _cluster(cluster)
    record = load(runs_dir(clustercfg), name)
    if follow:
        try:
            final = aio.run(follow_logs(record, clustercfg, node, lines, until_done=True))
        except KeyboardInterrupt:
            return 0
        return report_final(final)
    failed = 0
    for node_name, text, error in aio.run(tail_lines(record, clustercfg, node, lines)):
        if text is None:
            typer.echo(f"[{node_name}] (no log: {error})", err=True)
            failed += 1
        else:
            for line in text:
                typer.echo(line)
    return 1 if failed else 0


def attach(
    name: str = typer.Argument(..., help="Job name."),
    cluster: Optional[Path] = ClusterOpt,
    node: Optional[str] = typer.Option(None, "--node", help="Node to attach to (default: the first)."),
) -> None:
    """Attach to a job's tmux session on a node (detach with Ctrl-b d; the job goes on).

    Example: corral attach demo --node gpu2
    """
    import shlex

    from launcher.backends import backend_of
    from launcher.jobs import runs_dir
    from launcher.runs.record import load

    clustercfg = _cluster(cluster)
    record = load(runs_dir(clustercfg), name)
    plan = backend_of(record).attach(record, clustercfg, node)
    console(stderr=True).print(f"attaching: {shlex.join(plan.argv)}  ({plan.leave_hint})")
    plan.run()


def rm(
    names: Optional[list[str]] = typer.Argument(None, help="Jobs to forget."),
    cluster: Optional[Path] = ClusterOpt,
    older_than: Optional[str] = typer.Option(
        None,
        "--older-than",
        metavar="AGE",
        help="Forget every finished run started longer ago than AGE (30m, 12h, 7d).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed, remove nothing."),
) -> int:
    """Forget finished runs: remove their run directories (record, logs) on every node.

    Refuses a job that may still run (stop it first). Checkpoints are kept: they are the job's results.

    Example: corral rm demo bench-allreduce-20261127-101500-ab12 --older-than 7d
    """
    from launcher.errors import UserError
    from launcher.forget import forget_runs, parse_age, select_runs

    if not names and older_than is None:
        raise UserError(
            "corral rm: name the jobs to forget, or give --older-than AGE",
            hint="e.g. corral rm demo, or corral rm --older-than 7d",
        )
    clustercfg = _cluster(cluster)
    age = parse_age(older_than) if older_than is not None else None
    chosen, skipped = select_runs(clustercfg, names or [], age)
    out = console()
    for name, why in skipped:
        out.print(f"kept {name}: {why}")
    if dry_run:
        for r in chosen:
            out.print(f"would remove {r.run_dir}")
        return 0
    for r, note in forget_runs(clustercfg, chosen):
        out.print(f"removed {r.name} ({r.run_dir}){note}")
    if not chosen:
        out.print("nothing to remove")
    return 0


def stop(
    name: str = typer.Argument(..., help="Job name."),
    cluster: Optional[Path] = ClusterOpt,
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds between SIGTERM and SIGKILL."),
    nodes: bool = typer.Option(False, "--nodes", help="Say what was done on every node, not only where it went wrong."),
) -> int:
    """Stop a job on every node: SIGTERM, then SIGKILL, to its process groups only.

    Prints one line per node only where something went wrong (a node not reached, processes
    left), then one line for the job.

    Example: corral stop demo --timeout 30
    """
    from launcher import api
    from launcher.backends import backend_of
    from launcher.runs.state import ACTIVE
    from launcher.runs.summary import name_list

    clustercfg = _cluster(cluster)
    backend = backend_of(api.handle(name, clustercfg).record)
    out = console()
    before = api.status(name, clustercfg)
    with out.status(f"stopping {name} (SIGTERM, SIGKILL after {timeout:g}s)..."):
        results = api.stop(name, clustercfg, timeout=timeout)  # also when it ended: stopping is idempotent
    if before.state not in ACTIVE and not any(r.error or r.remaining for r in results):
        # the job was not running: a "stopped (N process(es))" would read as if this command ended it.
        # Found processes are leftovers beside it (its watchdog notices the job's end within a check).
        how = "; ".join(
            f"{n.node} {n.state}" + ("" if n.exit_code is None else f" {n.exit_code}") for n in before.nodes
        )
        found = sum(r.found for r in results)
        what = f"{found} leftover process(es) of it ended" if found else "nothing to stop"
        out.print(f"{name} had already ended ({before.state}: {how}); {what}", highlight=False)
        return 0
    bad = 0
    for r in results:
        if r.error:
            out.print(f"{r.node}: could not stop: {r.error}", highlight=False)
            bad += 1
        elif r.remaining:
            out.print(f"{r.node}: {len(r.remaining)} process(es) of {name} still alive: {r.remaining}", highlight=False)
            bad += 1
        elif nodes:
            out.print(f"{r.node}: stopped ({r.found} process(es), {r.killed} needed SIGKILL)", highlight=False)
    if bad:
        out.print(f"{name}: {bad} of {len(results)} node(s) not cleanly stopped (above)", highlight=False)
        return 1
    found, killed = sum(r.found for r in results), [r.node for r in results if r.killed]
    sigkill = f", SIGKILL needed on {len(killed)} node(s): {name_list(killed)}" if killed else ""
    out.print(
        f"stopped {name} on {len(results)} node(s): {found} process(es) ended{sigkill}; "
        f"no process of {name} remains on any node; {backend.stopped_text(name)}",
        highlight=False,
    )
    return 0


def preflight(
    job: Optional[Path] = typer.Argument(None, help="Job YAML file (optional: adds job-specific checks)."),
    cluster: Optional[Path] = ClusterOpt,
    nodes: bool = typer.Option(False, "--nodes", help="One row per node instead of one per distinct result."),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
) -> int:
    """Check every node before a launch: ssh, workdir, venv, torch, GPUs, rendezvous reachability.

    Nodes with the same results share one row ("31 nodes: n1, n2, ..."), so the odd node stands
    out; every failed check is then named with its node and the fix.

    Example: corral preflight configs/demo.yaml -c cluster.yaml --nodes
    """
    from launcher.backends import backend_for
    from launcher.config import load_job
    from launcher.errors import UserError

    clustercfg = _cluster(cluster)
    jobcfg = load_job(job) if job else None
    backend = backend_for(clustercfg)
    out = console(stderr=as_json)
    with out.status(backend.checking_text(clustercfg)):
        view = backend.preflight(jobcfg, clustercfg)
    emit_json(view.data, as_json, json_out)
    if view.header is not None:
        from rich.table import Table

        from launcher.runs.summary import fold_rows

        per_node = list(view.header[:1]) == ["node"]
        folded = per_node and not nodes
        table = Table(*(("nodes", *view.header[1:]) if folded else view.header), box=None)
        for row in fold_rows(view.rows) if folded else view.rows:
            table.add_row(*row)
        out.print(table)
    for line in view.lines:
        out.print(line)
    if view.failure is not None:
        raise UserError(view.failure)
    out.print("all checks passed")
    return 0

"""``corral launch``, free of typer: the typer command (``launcher.cli.jobs_cmd``) and the quick path
(``launcher.cli.quick``) both run :func:`launch_job_file`.

A launch's ranks wait for everything done before the nodes' tmux sessions start, and share the head
node's cores with what is done after: where the argv is a plain one, the command-line framework's start
and parsing (~50 ms) are skipped, and a launch imports rich only where a terminal shows its spinner.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from launcher import aio
from launcher.cli.clusters import cluster_excluding, say_left_out
from launcher.cli.output import console, status, write_json


def launch_job_file(
    job: Path,
    cluster: Optional[Path] = None,
    *,
    name: Optional[str] = None,
    set_: Optional[list[str]] = None,
    dry_run: bool = False,
    follow: bool = False,
    as_json: bool = False,
    exclude: Optional[list[str]] = None,
    exclude_from: Optional[Path] = None,
) -> int:
    """``corral launch``'s work, by its parameters' names; returns the exit code."""
    from launcher.backends import backend_for
    from launcher.config import load_job
    from launcher.jobs import describe as describe_job
    from launcher.jobs import launch as launch_job

    set_ = set_ or []
    jobcfg = load_job(job)
    clustercfg, left_out = cluster_excluding(cluster, exclude or [], exclude_from)
    say_left_out(left_out, stdout=dry_run and not as_json)
    backend = backend_for(clustercfg)
    if dry_run:
        description = describe_job(jobcfg, clustercfg, name=name, set_=set_)
        for warning in description.warnings:
            console(stderr=True).print(f"[yellow]warning:[/] {warning}", highlight=False)
        if as_json:
            write_json(description.data, "-")
        else:
            print(description.text)
            if description.note:
                print(description.note)
        return 0
    if follow and not as_json:
        record = launch_with_progress(jobcfg, clustercfg, name=name, set_=set_)
    else:
        with status(backend.launching_text(name or jobcfg.name, clustercfg), stderr=as_json):
            record = launch_job(jobcfg, clustercfg, name=name, set_=set_)
    if as_json:
        write_json(record.to_dict(), "-")
    c = hint_c(cluster)
    n = record.name
    # plain text (rich would add nothing to it): no rich import while the job's ranks start
    print(
        f"{backend.launched_text(record, clustercfg)}\n"
        f"  corral ps{c}\n  corral logs {n}{c} -f\n  corral attach {n}{c}\n  corral stop {n}{c}",
        file=sys.stderr if as_json else sys.stdout,
    )
    if follow:
        return follow_to_end(record, clustercfg)
    return 0


def hint_c(cluster: Optional[Path]) -> str:
    return f" -c {cluster}" if cluster else ""


def launch_with_progress(jobcfg, clustercfg, **kwargs):
    """``launch --follow``: a bar on a terminal's stderr (nothing elsewhere) from preflight until every node
    runs, per node; the logs follow once it is gone."""
    import time

    from launcher.agent.remote import kept_sessions, run_sync
    from launcher.cli.progress import node_states, progress
    from launcher.jobs import launch as launch_job
    from launcher.jobs import read_status

    nodes = len(clustercfg.nodes) or None  # None: the scheduler decides, the first poll tells
    with progress(f"launching {kwargs.get('name') or jobcfg.name}: nodes running", total=nodes) as update:
        update(completed=0, note="preflight and start")
        record = launch_job(jobcfg, clustercfg, **kwargs)
        if not update.active:
            return record
        deadline = time.monotonic() + 60  # a node still not running by then is the logs' story to tell
        with kept_sessions():  # one login per node for every poll of the bar
            while time.monotonic() < deadline:
                now = run_sync(read_status(record, clustercfg))
                update(
                    completed=sum(n.state == "running" for n in now.nodes),
                    total=len(now.nodes),
                    note=node_states(now),
                )
                if now.done or all(n.state == "running" for n in now.nodes):
                    break
                time.sleep(1.0)
    return record


def follow_to_end(record, clustercfg) -> int:
    from launcher.jobs import follow as follow_logs

    try:
        final = aio.run(follow_logs(record, clustercfg, None, 1000, until_done=True))
    except KeyboardInterrupt:
        console(stderr=True).print(
            f"stopped following; {record.name} keeps running (corral stop {record.name} ends it)"
        )
        return 0
    return report_final(final)


def job_exit_code(final) -> int:
    """The job's exit status as its own: 0 when every node exited 0, else the first node's
    non-zero status (1 for a node without one: missing or unreachable)."""
    for n in final.nodes:
        if not (n.state == "exited" and n.exit_code == 0):
            return n.exit_code if n.state == "exited" and n.exit_code and 0 < n.exit_code < 256 else 1
    return 0


def report_final(final) -> int:
    out = console(stderr=True)
    bad = [
        f"{n.node}: {n.state} {'' if n.exit_code is None else n.exit_code}".strip()
        for n in final.nodes
        if not (n.state == "exited" and n.exit_code == 0)
    ]
    if final.state == "stopped":
        out.print(f"job {final.name} was stopped by corral stop: " + "; ".join(bad))
    elif bad:
        out.print(f"job {final.name} {final.state}: " + "; ".join(bad))
    else:
        out.print(f"job {final.name} finished: every node exited 0")
    return job_exit_code(final)

"""``corral top``: every node's GPUs, CPU, memory, disks, network and jobs on one live screen."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher import aio
from launcher.cli.common import ClusterOpt, JsonOpt, JsonOutOpt
from launcher.cli.output import console, emit_json

MIN_INTERVAL_S = 0.2


def top(
    name: Optional[str] = typer.Argument(None, help="Job to follow (default: the jobs found running)."),
    cluster: Optional[Path] = ClusterOpt,
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes."),
    once: bool = typer.Option(
        False, "--once", help="Print one frame as tables and exit (for scripts and non-terminals)."
    ),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
    timeout: Optional[float] = typer.Option(
        None,
        "--timeout",
        help="Seconds a node may take to answer before it shows unreachable (default: the cluster's ssh connect_timeout).",
    ),
) -> int:
    """The whole cluster on one screen, live: GPUs, CPU, memory, disks, network, jobs and the straggler.

    Keys: q or Ctrl-C to leave. Without a terminal (or with --once, --json, --json-out) one frame is printed.

    Example: corral top demo -c cluster.yaml --interval 1
    """
    import os
    import sys

    from launcher.config import load_cluster
    from launcher.errors import UserError
    from launcher.jobs import all_records, runs_dir
    from launcher.runs.record import load
    from launcher.top.collect import REPLAY_ENV, Collector
    from launcher.top.render import render
    from launcher.top.screen import live, snapshot
    from launcher.top.targets import pick_records, targets

    if interval < MIN_INTERVAL_S:
        raise UserError(f"--interval {interval:g}: too short", hint=f"give at least {MIN_INTERVAL_S:g} seconds")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout {timeout:g}: must be positive", hint="e.g. --timeout 5")
    clustercfg = load_cluster(cluster)
    records = [load(runs_dir(clustercfg), name)] if name else pick_records(all_records(clustercfg), None)
    wait = float(timeout if timeout is not None else clustercfg.ssh.connect_timeout)
    collector = Collector(
        clustercfg,
        targets(clustercfg, records),
        timeout=wait,
        replay_dir=os.environ.get(REPLAY_ENV),
        hide_finished=name is None,
    )
    # One frame waits until every node has answered or its request has been given up (then "unreachable").
    first_deadline = wait + clustercfg.ssh.connect_timeout + 2
    out = console()
    if as_json or once or json_out is not None or not sys.stdout.isatty():
        frame = aio.run(snapshot(collector, first_deadline))
        if not emit_json(frame.to_json(), as_json, json_out):
            out.print(render(frame, out.size.width, whole_reasons=True))
        return 0
    try:
        aio.run(live(collector, out, interval))
    except KeyboardInterrupt:
        pass
    return 0

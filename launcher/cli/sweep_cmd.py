"""``corral sweep``: hyperparameter sweeps over the cluster's nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.cli.clusters import cluster_excluding, say_left_out
from launcher.cli.common import (
    ClusterOpt,
    DefaultCommandGroup,
    ExcludeFromOpt,
    ExcludeOpt,
    JsonOpt,
    JsonOutOpt,
)
from launcher.cli.output import console, emit_json

app = typer.Typer(
    cls=DefaultCommandGroup.make("run"),
    help="Run a sweep (corral sweep SWEEP.yaml; running it again resumes), or inspect/stop one.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    sweep: Path = typer.Argument(..., help="Sweep YAML file."),
    cluster: Optional[Path] = ClusterOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the trials (id, run name, params, args) and start nothing."
    ),
    foreground: bool = typer.Option(
        False, "--foreground", help="Run the controller in this terminal instead of detached in tmux."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="With --dry-run: print the trials as JSON on stdout instead of the table."
    ),
    json_out: Optional[Path] = typer.Option(
        None, "--json-out", metavar="PATH", help="With --dry-run: also write the trials as JSON to this file."
    ),
    exclude: list[str] = ExcludeOpt,
    exclude_from: Optional[Path] = ExcludeFromOpt,
) -> None:
    """Start or resume a sweep; its controller runs detached in tmux on the head node.

    Example: corral sweep sweep.yaml -c cluster.yaml
    """
    import uuid

    from launcher import api
    from launcher.errors import UserError
    from launcher.sweep.config import load_sweep
    from launcher.sweep.controller import save_spec
    from launcher.sweep.generate import generate_trials
    from launcher.sweep.lock import LockHeld, is_stale, read_lock
    from launcher.sweep.paths import sweep_paths
    from launcher.sweep.trial_job import describe_plan

    spec = load_sweep(sweep)
    cl, left_out = cluster_excluding(cluster, exclude, exclude_from)
    say_left_out(left_out, stdout=dry_run and not as_json)
    places_nodes = api.capabilities(cl).places_nodes  # then the launch's preflight checks the partition's size
    if not places_nodes and spec.config.nodes > len(cl.nodes):
        raise UserError(
            f"{sweep}: nodes: each trial needs {spec.config.nodes} nodes but the cluster has {len(cl.nodes)}",
            hint="lower nodes in the sweep file or add nodes to the cluster file",
        )
    trials = generate_trials(spec.config)
    if dry_run:
        if spec.config.method == "bayes":  # no trial exists before results arrive: say what will run, once
            _print_bayes_plan(spec, as_json, json_out)
        else:
            _print_plan(spec, describe_plan(spec, trials), as_json, json_out)
        return
    paths = sweep_paths(cl, spec.name)
    holder = read_lock(paths.lock)
    if holder is not None and not is_stale(holder):
        raise LockHeld(spec.name, holder)
    if paths.journal.exists():
        from launcher.sweep.status import build_status, finished_summary

        summary = finished_summary(build_status(spec, paths))
        if summary:  # nothing left to run: say so instead of starting a controller that exits at once
            console().print(f"{summary}\n  details: corral sweep status {spec.name}")
            return
    save_spec(paths, spec)
    paths.stop_request.unlink(missing_ok=True)
    if foreground:
        raise typer.Exit(_run_foreground(spec, cl, paths))
    from launcher.sweep.detach import plan_controller, start_detached

    token = uuid.uuid4().hex
    launch = plan_controller(paths, cluster, token, spec.name, exclude=[item.node for item in left_out])
    start_detached(launch, paths, token)
    console().print(
        f"sweep [bold]{spec.name}[/]: {len(trials) or spec.config.run_cap} trial(s); controller running detached in tmux session "
        f"{launch.session}\n  watch: corral sweep status {spec.name}    stop: corral sweep stop {spec.name}"
    )


def _run_foreground(spec, cl, paths) -> int:
    import time

    from launcher.cli.progress import progress
    from launcher.sweep.backend import LaunchBackend
    from launcher.sweep.controller import Controller
    from launcher.sweep.status import build_status

    shown = [0.0]

    with progress(f"sweep {spec.name}: trials done") as update:

        def sleep(seconds: float) -> None:  # the controller's pause between rounds: time to show where it stands
            if not update.active or time.monotonic() - shown[0] < 1.0:  # early_terminate pauses in short slices
                time.sleep(seconds)
                return
            shown[0] = time.monotonic()
            counts = build_status(spec, paths)["counts"]
            update(
                completed=counts["done"] + counts["failed"],
                total=sum(counts.values()),
                note=f"{counts['running']} running, {counts['failed']} failed",
            )
            time.sleep(seconds)

        return Controller(spec, cl, LaunchBackend(cl), paths, sleep=sleep).run()


def _print_plan(spec, plan, as_json, json_out) -> None:
    from rich.table import Table

    from launcher.sweep.status import format_params

    if emit_json({"name": spec.name, "trials": plan}, as_json, json_out):
        return
    table = Table(title=f"sweep {spec.name}: {len(plan)} trial(s), {spec.config.nodes} node(s) each (dry run)")
    for col in ("id", "run", "params", "args appended"):
        table.add_column(col)
    n_base = len(spec.job.args)
    for t in plan:
        table.add_row(t["id"], t["run"], format_params(t["params"]), " ".join(t["args"][n_base:]))
    console().print(table)


def _print_bayes_plan(spec, as_json, json_out) -> None:
    """A bayes sweep's dry run: how many trials, how they are chosen, over which space; the trials come later."""
    from launcher.sweep.space import describe_space

    cfg = spec.config
    space = describe_space(cfg.parameters)
    at_once = f", at most {cfg.max_concurrent} at once" if cfg.max_concurrent else ""
    if emit_json(
        {
            "name": spec.name,
            "method": "bayes",
            "run_cap": cfg.run_cap,
            "nodes": cfg.nodes,
            "trials": [],
            "space": space,
        },
        as_json,
        json_out,
    ):
        return
    console().print(
        f"sweep {spec.name} (dry run): bayes, {cfg.run_cap} trial(s) of {cfg.nodes} node(s) each{at_once}; "
        "each trial's parameters are picked by Optuna's TPE from the results so far, so none is known before "
        "the sweep runs. Search space:\n  " + "\n  ".join(space)
    )


@app.command("status")
def status(
    name: str = typer.Argument(..., help="Sweep name."),
    cluster: Optional[Path] = ClusterOpt,
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
    plot: Optional[Path] = typer.Option(
        None,
        "--plot",
        help="Write a PNG of the metric against step, one curve per trial (pruned ones dashed, the best one highlighted).",
    ),
) -> None:
    """Trials sorted by the metric, the best one, and counts.

    Example: corral sweep status lr-search --json
    """
    from launcher.config import load_cluster
    from launcher.sweep.controller import load_spec
    from launcher.sweep.paths import sweep_paths
    from launcher.sweep.status import build_status, plot_status

    paths = sweep_paths(load_cluster(cluster), name)
    st = build_status(load_spec(paths), paths)
    if plot is not None:
        plot_status(st, str(plot))
    if emit_json(st, as_json, json_out):
        return
    _print_status(st)


def _print_status(st: dict) -> None:
    from rich.table import Table

    from launcher.sweep.status import format_metric, format_params

    out = console()
    metric = st["metric"]
    ctl = st["controller"]
    alive = (
        f"controller pid {ctl['pid']} on {ctl['host']}"
        if ctl.get("alive")
        else ctl.get("note", "no controller running")
    )
    c = st["counts"]
    table = Table(
        title=f"sweep {st['name']} ({st['method']}, {metric['goal']} {metric['name']}): "
        f"{c['done']} done, {c.get('pruned', 0)} pruned, {c['running']} running, {c['pending']} pending, {c['failed']} failed; {alive}"
    )
    for col in ("trial", "state", "params", "node", "attempts", metric["name"], "note"):
        table.add_column(col, justify="right" if col in ("attempts", metric["name"]) else "left")
    best = st["best"]["id"] if st["best"] else None
    for r in st["trials"]:
        trial = f"[bold green]{r['id']} *[/]" if r["id"] == best else r["id"]
        table.add_row(
            trial,
            r["state"],
            format_params(r["params"]),
            r["node"] or "-",
            str(r["attempts"]),
            format_metric(r["metric"]),
            short_note(r),
        )
    out.print(table)
    for r in st["trials"]:  # a table cell squeezes a sentence into a column: the whole of each below
        if r["error"] and short_note(r) != r["error"]:
            out.print(f"{r['id']}: {r['error']}")
    if st["best"]:
        b = st["best"]
        out.print(
            f"best: trial {b['id']} {metric['name']}={format_metric(b['metric'])} ({format_params(b['params'])}) run {b['run']}"
        )
    for node, why in st["nodes_aside"].items():
        out.print(f"[yellow]node {node} set aside:[/] {why}")
    for w in st["warnings"]:
        out.print(f"[yellow]warning:[/] {w}")


NOTE_WIDTH = 40


def short_note(row: dict) -> str:
    """A trial's note as its table cell shows it: the decisive part, the whole sentence printed below the table."""
    if row["state"] == "pruned" and row.get("pruned_at_step") is not None:
        stopped = row.get("stopped_at_step")
        return f"pruned at step {row['pruned_at_step']}" + (f", stopped at {stopped}" if stopped is not None else "")
    note = row["error"] or ""
    return note if len(note) <= NOTE_WIDTH else note[: NOTE_WIDTH - 1] + "…"


@app.command("stop")
def stop(
    name: str = typer.Argument(..., help="Sweep name."),
    cluster: Optional[Path] = ClusterOpt,
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the controller to stop its trials."),
) -> None:
    """Stop a sweep's controller and its running trials.

    Example: corral sweep stop lr-search
    """
    from launcher.config import load_cluster
    from launcher.sweep.controller import load_spec
    from launcher.sweep.paths import sweep_paths
    from launcher.sweep.status import build_status, finished_summary
    from launcher.sweep.stop import stop_sweep

    cl = load_cluster(cluster)
    paths = sweep_paths(cl, name)
    st = build_status(load_spec(paths), paths)
    summary = finished_summary(st)
    if summary and not st["controller"].get("alive"):
        console().print(f"{summary}; nothing to stop")
        return
    stopped = stop_sweep(cl, name, timeout=timeout)
    console().print(f"sweep {name}: stopped ({stopped} running trial(s) stopped); run the sweep file again to resume")

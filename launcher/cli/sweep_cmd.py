"""``corral sweep``: hyperparameter sweeps over the cluster's nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.cli.common import ClusterOpt, DefaultCommandGroup, not_implemented

app = typer.Typer(
    cls=DefaultCommandGroup.make("run"),
    help="Run a sweep (corral sweep SWEEP.yaml; running it again resumes), or inspect/stop one.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    sweep: Path = typer.Argument(..., help="Sweep YAML file."),
    cluster: Optional[Path] = ClusterOpt,
) -> None:
    """Start or resume a sweep; its controller runs detached in tmux on the head node.

    Example: corral sweep sweep.yaml -c cluster.yaml
    """
    not_implemented("sweep")


@app.command("status")
def status(
    name: str = typer.Argument(..., help="Sweep name."),
    cluster: Optional[Path] = ClusterOpt,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write trials as JSON ('-' for stdout)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the metric per trial as a PNG."),
) -> None:
    """Trials sorted by the metric, the best one, and counts.

    Example: corral sweep status lr-search --json -
    """
    not_implemented("sweep status")


@app.command("stop")
def stop(name: str = typer.Argument(..., help="Sweep name."), cluster: Optional[Path] = ClusterOpt) -> None:
    """Stop a sweep's controller and its running trials.

    Example: corral sweep stop lr-search
    """
    not_implemented("sweep stop")

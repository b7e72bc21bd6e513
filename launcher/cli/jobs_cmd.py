"""Job commands: launch, ps, logs, attach, stop, preflight."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.cli.common import ClusterOpt, not_implemented


def launch(
    job: Path = typer.Argument(..., help="Job YAML file."),
    cluster: Optional[Path] = ClusterOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the job's name)."),
    set_: list[str] = typer.Option([], "--set", help="Override a job field: --set max_restarts=2 (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (per node: tmux session, env, torchrun argv) and touch nothing."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the logs until the job ends (Ctrl-C stops following, not the job)."),
) -> None:
    """Launch a job on every node inside tmux; returns once every node runs.

    Example: corral launch configs/demo.yaml -c cluster.yaml --set args.0=--lr=0.1
    """
    not_implemented("launch")


def ps(
    cluster: Optional[Path] = ClusterOpt,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the job list as JSON ('-' for stdout)."),
) -> None:
    """List jobs and their state on every node (running / exited N / missing).

    Example: corral ps --json -
    """
    not_implemented("ps")


def logs(
    name: str = typer.Argument(..., help="Job name."),
    cluster: Optional[Path] = ClusterOpt,
    node: Optional[str] = typer.Option(None, "--node", help="Only this node."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    lines: int = typer.Option(50, "--lines", "-n", help="Lines from the end of each log."),
) -> None:
    """Print a job's logs, every line prefixed with node and rank.

    Example: corral logs demo -n 20 -f
    """
    not_implemented("logs")


def attach(
    name: str = typer.Argument(..., help="Job name."),
    cluster: Optional[Path] = ClusterOpt,
    node: Optional[str] = typer.Option(None, "--node", help="Node to attach to (default: the first)."),
) -> None:
    """Attach to a job's tmux session on a node (detach with Ctrl-b d; the job goes on).

    Example: corral attach demo --node gpu2
    """
    not_implemented("attach")


def stop(
    name: str = typer.Argument(..., help="Job name."),
    cluster: Optional[Path] = ClusterOpt,
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds between SIGTERM and SIGKILL."),
) -> None:
    """Stop a job on every node: SIGTERM, then SIGKILL, to its process groups only.

    Example: corral stop demo --timeout 30
    """
    not_implemented("stop")


def preflight(
    job: Optional[Path] = typer.Argument(None, help="Job YAML file (optional: adds job-specific checks)."),
    cluster: Optional[Path] = ClusterOpt,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the checks as JSON ('-' for stdout)."),
) -> None:
    """Check every node before a launch: ssh, workdir, venv, torch, GPUs, rendezvous reachability.

    Example: corral preflight configs/demo.yaml -c cluster.yaml
    """
    not_implemented("preflight")


def register(app: typer.Typer) -> None:
    for fn in (launch, ps, logs, attach, stop, preflight):
        app.command(fn.__name__)(fn)

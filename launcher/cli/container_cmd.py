"""``corral container``: print container run configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.cli.common import ClusterOpt, not_implemented

app = typer.Typer(help="Container run configurations (InfiniBand devices, NCCL mounts).", no_args_is_help=True)


@app.command("config")
def config(
    job: Path = typer.Argument(..., help="Job YAML file with a container section."),
    cluster: Optional[Path] = ClusterOpt,
    node: Optional[str] = typer.Option(None, "--node", help="Node whose facts to use (default: the first)."),
    fmt: str = typer.Option("cli", "--format", help="cli (docker run argv) or json (docker SDK containers.run kwargs)."),
) -> None:
    """Print the container run configuration for a node.

    Example: corral container config job.yaml -c cluster.yaml --node gpu1 --format json
    """
    not_implemented("container config")

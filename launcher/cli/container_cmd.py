"""``corral container``: print container run configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from launcher.cli.common import ClusterOpt

app = typer.Typer(help="Container run configurations (InfiniBand devices, NCCL mounts).", no_args_is_help=True)

FORMATS = ("cli", "json")


@app.command("config")
def config(
    job: Path = typer.Argument(..., help="Job YAML file with a container section."),
    cluster: Optional[Path] = ClusterOpt,
    node: Optional[str] = typer.Option(None, "--node", help="Node whose facts to use (default: the first)."),
    fmt: Literal["cli", "json"] = typer.Option(
        "cli", "--format", help="cli: the docker run argv; json: the docker SDK's containers.run kwargs."
    ),
) -> None:
    """Print the container run configuration for a node.

    The node is probed (InfiniBand devices, NCCL files, GPUs, limits, Docker) and the
    configuration is built from the job's container section and those facts; missing
    InfiniBand paths and anything that would stop the run are reported on stderr.

    Example: corral container config job.yaml -c cluster.yaml --node gpu1 --format json
    """
    import json
    import sys

    from container.config_view import node_configuration
    from launcher.cli.output import console
    from launcher.errors import UserError

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    view = node_configuration(job, cluster, node)
    if fmt == "cli":
        sys.stdout.write(view.shell + "\n")
    else:
        sys.stdout.write(json.dumps(view.sdk_kwargs, indent=2) + "\n")
    err = console(stderr=True)
    for line in view.notes + [f"not in the SDK kwargs: {g}" for g in (view.sdk_gaps if fmt == "json" else [])]:
        err.print(f"note: {line}", markup=False)
    for line in view.problems:
        err.print(f"warning: {line}", markup=False)

"""``corral ckpt``: list, verify and prune checkpoint directories."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.cli.common import not_implemented

app = typer.Typer(help="Inspect checkpoint directories written by launcher.checkpoint.", no_args_is_help=True)


@app.command("ls")
def ls(
    root: Path = typer.Argument(..., help="Checkpoint root (e.g. checkpoints/<job>)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the list as JSON."),
) -> None:
    """List checkpoints: step, time, size, valid?

    Example: corral ckpt ls checkpoints/demo
    """
    not_implemented("ckpt ls")


@app.command("verify")
def verify(root: Path = typer.Argument(..., help="Checkpoint root.")) -> None:
    """Verify every checkpoint against its manifest; exit 1 naming each torn or corrupt file.

    Example: corral ckpt verify checkpoints/demo
    """
    not_implemented("ckpt verify")


@app.command("prune")
def prune(
    root: Path = typer.Argument(..., help="Checkpoint root."),
    keep_last: int = typer.Option(..., "--keep-last", help="Keep this many most recent valid checkpoints."),
) -> None:
    """Remove old checkpoints, always keeping the newest valid ones.

    Example: corral ckpt prune checkpoints/demo --keep-last 3
    """
    not_implemented("ckpt prune")

"""``corral ckpt``: list, verify and prune checkpoint directories."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.cli.common import JsonOpt, JsonOutOpt
from launcher.cli.output import console, emit_json

app = typer.Typer(help="Inspect checkpoint directories written by launcher.checkpoint.", no_args_is_help=True)


def _existing_root(root: Path) -> str:
    from launcher.errors import UserError

    if not root.is_dir():
        raise UserError(
            f"{root.absolute()}: no such checkpoint directory",
            hint="pass the job's checkpoint root, e.g. checkpoints/<job>",
        )
    return str(root)


def _when(unix: float | None) -> str:
    import datetime

    return "-" if unix is None else datetime.datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n} B"


@app.command("ls")
def ls(
    root: Path = typer.Argument(..., help="Checkpoint root (e.g. checkpoints/<job>)."),
    full: bool = typer.Option(False, "--full", help="Also checksum every data file (reads everything)."),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
) -> None:
    """List checkpoints: step, time, size, valid? (sizes checked; --full also checks checksums).

    Example: corral ckpt ls checkpoints/demo
    """
    from rich.table import Table

    from launcher.checkpoint.inspect import scan

    found = scan(_existing_root(root), full=full)
    if emit_json(
        {"root": found.root, "checkpoints": [c.to_json() for c in found.checkpoints], "leftovers": found.leftovers},
        as_json,
        json_out,
    ):
        return
    table = Table("step", "time", "size", "ranks", "valid", "problem")
    for c in found.checkpoints:
        m = c.manifest
        table.add_row(
            str(c.step),
            _when(m.created_unix if m else None),
            _size(c.size),
            str(m.world_size) if m else "-",
            "yes" if c.valid else "NO",
            c.problems[0] if c.problems else "",
        )
    out = console()
    out.print(table if found.checkpoints else f"no checkpoints in {found.root}")
    for left in found.leftovers:
        out.print(f"leftover of an interrupted save (removed by the next save): {left}")


@app.command("verify")
def verify(
    root: Path = typer.Argument(..., help="Checkpoint root."),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
) -> None:
    """Verify every checkpoint against its manifest; exit 1 naming each torn or corrupt file.

    Example: corral ckpt verify checkpoints/demo
    """
    from launcher.checkpoint.inspect import scan
    from launcher.errors import RunFailed

    found = scan(_existing_root(root), full=True)
    emit_json(
        {"root": found.root, "ok": not found.problems, "checkpoints": [c.to_json() for c in found.checkpoints]},
        as_json,
        json_out,
    )
    err = console(stderr=True)
    for c in found.checkpoints:
        for note in c.notes:
            err.print(f"note: {note}")
    if found.problems:
        for p in found.problems:
            err.print(f"BAD {p}")
        raise RunFailed(
            f"{len(found.problems)} problem(s) in {len(found.checkpoints) - len(found.valid_steps)} of {len(found.checkpoints)} checkpoint(s) under {found.root}"
        )
    if not as_json:
        console().print(f"ok: {len(found.checkpoints)} checkpoint(s) verified under {found.root}")


@app.command("prune")
def prune(
    root: Path = typer.Argument(..., help="Checkpoint root."),
    keep_last: int = typer.Option(..., "--keep-last", min=1, help="Keep this many most recent valid checkpoints."),
    keep_every: Optional[int] = typer.Option(
        None, "--keep-every", min=1, help="Also keep every step that is a multiple of this."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed, remove nothing."),
) -> None:
    """Remove old checkpoints, always keeping the newest valid ones (corrupt ones are left for you to inspect).

    Do not prune a root while its job is saving into it.

    Example: corral ckpt prune checkpoints/demo --keep-last 3
    """
    from launcher.checkpoint import layout
    from launcher.checkpoint.inspect import prune as prune_root

    path = _existing_root(root)
    removed = prune_root(path, keep_last, keep_every, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    out = console()
    for step in removed:
        out.print(f"{verb} {layout.step_dirname(step)}")
    out.print(f"{verb} {len(removed)} checkpoint(s)")

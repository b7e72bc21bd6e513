"""Helpers shared by the command modules: options, output, loading configs for a command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

ClusterOpt = typer.Option(
    None, "--cluster", "-c", help="Cluster file (default: the embedded localhost cluster, configs/local.yaml)."
)
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout instead of the table.")
JsonOutOpt = typer.Option(None, "--json-out", metavar="PATH", help="Also write the result as JSON to this file.")
ExcludeOpt = typer.Option([], "--exclude", metavar="NODE", help="Leave this node of the cluster file out (repeatable).")
ExcludeFromOpt = typer.Option(
    None,
    "--exclude-from",
    metavar="REPORT.json",
    help="Leave out the nodes that `corral bench cluster` failed (the report's exclude list).",
)


def corral_invocation(cwd: Path) -> tuple[str, Optional[str]]:
    """How a person types corral in a fresh shell, and a note when a bare ``corral`` would not be found.

    ``make demo`` runs ``.venv/bin/corral`` without activating the venv, so the shell that ran it
    knows no ``corral``: the commands we print must say ``.venv/bin/corral`` (relative to ``cwd``,
    where they tell the user to ``cd``), and how to put it on the PATH.
    """
    import os
    import shutil

    script = Path(sys.executable).parent / "corral"
    found = shutil.which("corral")
    if not script.exists() or (found is not None and Path(found).resolve() == script.resolve()):
        return "corral", None
    try:
        shown = str(script.relative_to(cwd))
    except ValueError:
        shown = str(script)
    activate = Path(shown).parent / "activate"
    note = (
        f"corral is not on this shell's PATH: `source {activate}` puts it there (in {cwd}), or call it as {shown}"
        if os.sep in shown
        else None
    )
    return shown, note


class DefaultCommandGroup:
    """Mixin factory: a group whose first argument, when it is not a subcommand, goes to ``default``.

    ``corral sweep SWEEP.yaml`` runs the sweep while ``corral sweep status NAME`` is a subcommand.
    """

    @staticmethod
    def make(default: str):
        from typer.core import TyperGroup

        class _Group(TyperGroup):
            def parse_args(self, ctx, args):  # type: ignore[override]
                if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
                    args = [default, *args]
                return super().parse_args(ctx, args)

        return _Group

"""Helpers shared by the command modules: options, output, loading configs for a command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

ClusterOpt = typer.Option(None, "--cluster", "-c", help="Cluster file (default: the embedded localhost cluster, configs/local.yaml).")
JsonOpt = typer.Option(None, "--json", help="Also write the results as JSON to this file ('-' for stdout).")


def console(stderr: bool = False):
    """A rich console; created on use so that importing the CLI stays cheap."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def write_json(obj: Any, target: Optional[Path | str]) -> None:
    """Write ``obj`` as indented JSON to a file, or to stdout for '-'."""
    if target is None:
        return
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text, encoding="utf-8")


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

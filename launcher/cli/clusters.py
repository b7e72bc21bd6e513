"""The cluster a command runs on: its file (or the embedded one) less the nodes left out. Free of typer, for
the quick paths (``launcher.cli.quick``) as for the typer commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from launcher.cli.output import console


def cluster_excluding(path: Optional[Path], exclude: list[str], exclude_from: Optional[Path]):
    """The cluster file (or the embedded one) without the ``--exclude``/``--exclude-from`` nodes, and who was
    left out and why (``launcher.config.exclude``: the one place nodes are left out)."""
    from launcher.config import load_cluster
    from launcher.config.exclude import exclude_nodes, exclusions

    left = exclusions(exclude or (), exclude_from)
    return exclude_nodes(load_cluster(path), left), left


def say_left_out(left, *, stdout: bool = False) -> None:
    """One line per node left out: on stdout in a dry run (part of the plan), else on stderr."""
    for item in left:
        if stdout:
            print(item.line())
        else:
            console(stderr=True).print(item.line(), markup=False, highlight=False)

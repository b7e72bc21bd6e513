"""``corral demo``: the embedded default job on the embedded default cluster."""

from __future__ import annotations

import typer

from launcher.cli.common import not_implemented


def demo() -> None:
    """Run the demo: a small model trained on 2 CPU processes on localhost, in tmux.

    Example: corral demo
    """
    not_implemented("demo")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

"""Progress on a terminal for commands that run longer than a few seconds.

A rich progress bar on stderr, only when stderr is a terminal: a pipe, a file or ``--json -``
on stdout get nothing of it (the bar is transient, so the terminal keeps only the results).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Update = Callable[..., None]
"""``update(completed=None, note=None, total=None)``: how far, and a short line of what runs now;
``update.active`` is False off a terminal (skip work done only to feed the bar)."""


def off_terminal(**_: object) -> None:
    """The update of a progress that is not shown (stderr is not a terminal)."""


off_terminal.active = False


@contextmanager
def progress(label: str, total: float | None = None) -> Iterator[Update]:
    from launcher.cli.output import console

    err = console(stderr=True)
    if not err.is_terminal:
        yield off_terminal
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
    ]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total, note="")

        def update(completed: float | None = None, note: str | None = None, total: float | None = None) -> None:
            fields = {"completed": completed, "total": total, "note": note}
            bar.update(task, **{k: v for k, v in fields.items() if v is not None})

        update.active = True
        yield update


def node_states(status) -> str:
    """``n1 running, n2 exited 0``: one poll of a job, for the progress line."""
    return ", ".join(f"{n.node} {n.state}{'' if n.exit_code is None else f' {n.exit_code}'}" for n in status.nodes)

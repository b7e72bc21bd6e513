"""What commands print: the rich console and the one ``--json`` convention. Free of typer, so that a
command that starts without it (``launcher.cli.quick``) prints as the others do."""

from __future__ import annotations

import json
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Optional


def console(stderr: bool = False):
    """A rich console; created on use so that importing the CLI stays cheap."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def status(text: str, stderr: bool = False) -> AbstractContextManager[Any]:
    """A spinner saying ``text`` while a step runs, on a terminal. Elsewhere nothing, as rich would draw
    nothing there either, but without importing rich first: a scripted launch's ranks wait for it."""
    if not (sys.stderr if stderr else sys.stdout).isatty():
        return nullcontext()
    return console(stderr=stderr).status(text)


def emit_json(obj: Any, as_json: bool, json_out: Optional[Path]) -> bool:
    """The one ``--json`` convention: ``--json`` prints JSON on stdout (the caller then prints no
    table), ``--json-out PATH`` writes it to a file besides the table. True when stdout got JSON."""
    if json_out is not None:
        write_json(obj, json_out)
    if as_json:
        write_json(obj, "-")
    return as_json


def json_target(as_json: bool, json_out: Optional[Path]) -> Optional[Path]:
    """For code that takes one target (``'-'`` = stdout instead of the table): ``--json`` wins."""
    return Path("-") if as_json else json_out


def write_json(obj: Any, target: Optional[Path | str]) -> None:
    """Write ``obj`` as indented JSON to a file, or to stdout for '-'."""
    if target is None:
        return
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text, encoding="utf-8")

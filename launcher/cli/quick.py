"""``corral ps`` without the command-line framework's start.

``ps`` is the command people repeat (under ``watch``, in scripts polling a job), and on a few nodes
its time is mostly the interpreter's start: typer, its click and its pydantic-built parameter
coercion cost ~35 ms of a ~0.25 s ``ps`` (docs/SCALE.md). An argv made only of the options below
runs ``ps`` directly; any other (``--help``, an unknown, repeated or misspelt option, a missing
value) goes to the typer app, which shows help or says what is wrong. ``tests/test_cli_quick.py``
checks that both read every argv here alike, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

ROOT_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet", "--debug": "debug"}
"""The root command's flags that may come before ``ps``."""

PS_FLAGS = {"-a": "all_", "--all": "all_", "--nodes": "nodes", "--json": "as_json"}
PS_VALUES = {"-c": "cluster", "--cluster": "cluster", "--json-out": "json_out"}
"""``ps``'s options, by the parameter names of ``launcher.cli.jobs_cmd.ps``."""

PS_DEFAULTS: dict[str, Any] = {"cluster": None, "all_": False, "nodes": False, "as_json": False, "json_out": None}


def parse_ps(args: list[str]) -> Optional[tuple[dict[str, bool], dict[str, Any]]]:
    """Pure: (root flags, ps parameters) when ``args`` is a ``ps`` command made only of the options
    above, each at most once; None for anything else."""
    root: dict[str, bool] = {}
    i = 0
    while i < len(args) and args[i] in ROOT_FLAGS:
        if ROOT_FLAGS[args[i]] in root:
            return None
        root[ROOT_FLAGS[args[i]]] = True
        i += 1
    if i >= len(args) or args[i] != "ps":
        return None
    params = dict(PS_DEFAULTS)
    seen: set[str] = set()
    rest = args[i + 1 :]
    j = 0
    while j < len(rest):
        arg, value = rest[j], None
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        name = PS_FLAGS.get(arg) or PS_VALUES.get(arg)
        if name is None or name in seen:
            return None
        seen.add(name)
        if arg in PS_FLAGS:
            if value is not None:
                return None
            params[name] = True
        else:
            if value is None:
                j += 1
                value = rest[j] if j < len(rest) else None
            if not value or value.startswith("-"):
                return None
            params[name] = Path(value)
        j += 1
    return root, params


def quick_command(args: list[str]) -> Optional[Callable[[], None]]:
    """The command to run for ``args`` without typer, or None when typer must read them."""
    parsed = parse_ps(args)
    if parsed is None:
        return None
    root, params = parsed

    def run() -> None:
        from launcher.cli.ps_view import show_jobs
        from launcher.cli.state import configure

        configure(**root)
        show_jobs(
            params["cluster"],
            all_=params["all_"],
            per_node=params["nodes"],
            as_json=params["as_json"],
            json_out=params["json_out"],
        )

    return run

"""``corral ps`` and ``corral launch`` without the command-line framework's start.

``ps`` is the command people repeat (under ``watch``, in scripts polling a job), and on a few nodes
its time is mostly the interpreter's start: typer, its click and its pydantic-built parameter
coercion cost ~35 ms of a ~0.25 s ``ps`` (docs/SCALE.md). ``launch`` is waited on by every rank of
the job: typer's start and its parsing of a launch argv cost ~50 ms before the first node is asked.

An argv made only of a command's options below (each single-valued one at most once) runs the command
directly; any other (``--help``, an unknown, repeated or misspelt option, a missing value, a second
argument, ``--``) goes to the typer app, which shows help or says what is wrong.
``tests/test_cli_quick.py`` checks that both read every argv here alike, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ROOT_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet", "--debug": "debug"}
"""The root command's flags that may come before the command."""


@dataclass(frozen=True)
class Spec:
    """One command's options, by the parameter names of its typer function."""

    flags: dict[str, str]
    """Options without a value (True when given)."""
    values: dict[str, str]
    """Options with one value, given at most once."""
    defaults: dict[str, Any]
    lists: dict[str, str] = field(default_factory=dict)
    """Options with a value that may be repeated (a list, in order)."""
    argument: Optional[str] = None
    """The one required argument, if the command has one."""
    paths: frozenset[str] = frozenset()
    """Parameters that typer reads as a ``Path``."""


PS = Spec(
    flags={"-a": "all_", "--all": "all_", "--nodes": "nodes", "--json": "as_json"},
    values={"-c": "cluster", "--cluster": "cluster", "--json-out": "json_out"},
    defaults={"cluster": None, "all_": False, "nodes": False, "as_json": False, "json_out": None},
    paths=frozenset({"cluster", "json_out"}),
)
LAUNCH = Spec(
    flags={"--dry-run": "dry_run", "-f": "follow", "--follow": "follow", "--json": "as_json"},
    values={"-c": "cluster", "--cluster": "cluster", "--name": "name", "--exclude-from": "exclude_from"},
    lists={"--set": "set_", "--exclude": "exclude"},
    defaults={
        "job": None,
        "cluster": None,
        "name": None,
        "set_": [],
        "dry_run": False,
        "follow": False,
        "as_json": False,
        "exclude": [],
        "exclude_from": None,
    },
    argument="job",
    paths=frozenset({"job", "cluster", "exclude_from"}),
)
SPECS = {"ps": PS, "launch": LAUNCH}


def parse(args: list[str]) -> Optional[tuple[str, dict[str, bool], dict[str, Any]]]:
    """Pure: (command, root flags, its parameters) when ``args`` is a quick command made only of its options
    above; None for anything else."""
    root: dict[str, bool] = {}
    i = 0
    while i < len(args) and args[i] in ROOT_FLAGS:
        if ROOT_FLAGS[args[i]] in root:
            return None
        root[ROOT_FLAGS[args[i]]] = True
        i += 1
    if i >= len(args) or args[i] not in SPECS:
        return None
    command, spec = args[i], SPECS[args[i]]
    params = {k: list(v) if isinstance(v, list) else v for k, v in spec.defaults.items()}
    seen: set[str] = set()
    rest = args[i + 1 :]
    j = 0
    while j < len(rest):
        arg, value = rest[j], None
        if not arg.startswith("-"):
            if spec.argument is None or spec.argument in seen:
                return None
            seen.add(spec.argument)
            params[spec.argument] = _value(spec, spec.argument, arg)
            j += 1
            continue
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        name = spec.flags.get(arg) or spec.values.get(arg) or spec.lists.get(arg)
        if name is None or (name in seen and arg not in spec.lists):
            return None
        seen.add(name)
        if arg in spec.flags:
            if value is not None:
                return None
            params[name] = True
        else:
            if value is None:
                j += 1
                value = rest[j] if j < len(rest) else None
            if not value or value.startswith("-"):
                return None
            if arg in spec.lists:
                params[name].append(value)
            else:
                params[name] = _value(spec, name, value)
        j += 1
    if spec.argument is not None and spec.argument not in seen:
        return None
    return command, root, params


def _value(spec: Spec, name: str, text: str) -> Any:
    return Path(text) if name in spec.paths else text


def quick_command(args: list[str]) -> Optional[Callable[[], int]]:
    """The command to run for ``args`` without typer, or None when typer must read them."""
    parsed = parse(args)
    if parsed is None:
        return None
    command, root, params = parsed

    def run() -> int:
        from launcher.cli.state import configure

        configure(**root)
        if command == "launch":
            from launcher.cli.launching import launch_job_file

            return launch_job_file(params.pop("job"), **params)
        from launcher.cli.ps_view import show_jobs

        show_jobs(
            params["cluster"],
            all_=params["all_"],
            per_node=params["nodes"],
            as_json=params["as_json"],
            json_out=params["json_out"],
        )
        return 0

    return run

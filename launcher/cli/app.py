"""The root typer app: global options and the command groups, each in its own module."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from launcher import __version__
from launcher.cli.state import configure


class LazyGroup(TyperGroup):
    """The root group: knows its commands' names up front (``COMMANDS``) and builds each on first use."""

    def list_commands(self, ctx) -> list[str]:  # type: ignore[override]
        return list(COMMANDS)

    def get_command(self, ctx, cmd_name: str):  # type: ignore[override]
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = _build_one(cmd_name)
        return self.commands.get(cmd_name)


app = typer.Typer(
    cls=LazyGroup,
    name="corral",
    help="corral: launch distributed training on GPU nodes inside tmux, and benchmark the nodes.\n\n"
    "Example: corral launch configs/demo.yaml --follow",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"corral {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what corral does (each ssh/tmux/docker command)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    configure(verbose, quiet, debug)


COMMANDS: dict[str, tuple[str, str]] = {
    "launch": ("launcher.cli.jobs_cmd", "launch"),
    "ps": ("launcher.cli.jobs_cmd", "ps"),
    "logs": ("launcher.cli.jobs_cmd", "logs"),
    "attach": ("launcher.cli.jobs_cmd", "attach"),
    "stop": ("launcher.cli.jobs_cmd", "stop"),
    "rm": ("launcher.cli.jobs_cmd", "rm"),
    "preflight": ("launcher.cli.jobs_cmd", "preflight"),
    "demo": ("launcher.cli.demo_cmd", "demo"),
    "top": ("launcher.cli.top_cmd", "top"),
    "bench": ("launcher.cli.bench_cmd", "app"),
    "container": ("launcher.cli.container_cmd", "app"),
    "ckpt": ("launcher.cli.ckpt_cmd", "app"),
    "sweep": ("launcher.cli.sweep_cmd", "app"),
    "config": ("launcher.cli.config_cmd", "app"),
}
"""Each command of ``corral``, in the order ``corral --help`` lists them: the module that defines it and the
function (a command) or typer app (a group of them) there. A command's module is imported, and its click
command built, only when that command runs or help lists it: building all ~115 commands and importing
their modules cost ~0.1 s of every ``corral ps``'s start (docs/results/scale.md)."""


def _build_one(name: str):
    import importlib

    from typer.main import get_command, get_group

    module, attr = COMMANDS[name]
    target = getattr(importlib.import_module(module), attr)
    if isinstance(target, typer.Typer):
        command = get_group(target)  # a group even with one command (`container config`), as add_typer made it
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = get_command(single)
    command.name = name
    _tidy(command)
    return command


def reflow(text: str | None) -> str | None:
    """Help text with each paragraph on one line, so the terminal wraps it at its own width
    (a docstring's hard line breaks would otherwise split phrases wherever the source did)."""
    if not text:
        return text
    paragraphs = [" ".join(line.strip() for line in p.splitlines()) for p in text.strip().split("\n\n")]
    return "\n\n".join(paragraphs)


ARGUMENT_NAMES = {"files": "FILE", "names": "NAME", "nodes": "NODE"}
"""A list argument's name in usage lines: one item, then ``...`` (``FILE...``, as click and man pages write it)."""


def _tidy_argument(param) -> None:
    """``FILE...`` / ``[NAME]...`` instead of typer's ``{files}...`` and ``<list[Path]>`` (docopt's and click's spelling)."""
    many = param.nargs != 1
    name = ARGUMENT_NAMES.get(param.name, param.name.upper())
    shown = f"{name}..." if many else name
    param.metavar = shown
    usage = shown if param.required else f"[{name}]..." if many else f"[{name}]"
    param._usage_display_name = lambda: usage  # typer wraps a required argument in {}, which no shell user writes
    _tidy_list_type(param)


def _tidy_list_type(param) -> None:
    """A repeatable value is shown by its item's type (``<str>``, ``<path>``), not Python's ``<list[str]>``."""
    if (
        not getattr(getattr(param, "type_descriptor", None), "is_list", False)
        or param.param_type_name == "option"
        and param.metavar
    ):
        return
    shown = param.display_type
    param.display_type = lambda ctx, _shown=shown: _shown(ctx).replace("list[", "").replace("]", "").lower()
    if param.param_type_name == "option":
        param.display_type_rich = param.display_type


def _tidy(command) -> None:
    """Flags shown as flags (no ``<bool>`` value, which invites ``--dry-run true``); argument names as
    people write them (``FILE...``); help reflowed."""
    command.help = reflow(command.help)
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.param_type_name == "argument":
            _tidy_argument(param)
        else:
            _tidy_list_type(param)
    make_help = command.get_help_option

    def help_option(ctx, _make=make_help):  # click builds -h/--help on demand: a flag like the others
        opt = _make(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)


def build_command(everything: bool = False):
    """The click command tree of ``app``, as ``corral`` shows and runs it: the root group, which builds a
    command when it is asked for; ``everything``: with every command built (the CLI's own tests)."""
    from typer.main import get_command

    command = get_command(app)
    _tidy(command)
    if everything:
        for name in COMMANDS:
            command.get_command(None, name)
    return command

"""The root command's options (``-v``, ``-q``, ``--debug``) and what they set: logging levels, and the
state every command may consult. Free of typer, so that ``launcher.cli.quick`` sets them alike."""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass
class CliState:
    """Options of the root command that every subcommand may consult."""

    verbose: bool = False
    quiet: bool = False
    debug: bool = False


state = CliState()

OWN_PACKAGES = ("launcher", "benchmarks", "container", "perf")
"""Loggers at the level -v/-q choose; every other (libraries) at WARNING unless -v."""


def configure(verbose: bool = False, quiet: bool = False, debug: bool = False) -> None:
    """Record the root options and set the log levels they choose."""
    state.verbose, state.quiet, state.debug = verbose, quiet, debug
    level = logging.DEBUG if (verbose or debug) else logging.WARNING if quiet else logging.INFO
    # corral's own packages log at `level`; a library's INFO (libtmux's "session created") is not the user's
    # business: libraries say only warnings unless --verbose
    logging.basicConfig(
        level=logging.DEBUG if (verbose or debug) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for package in OWN_PACKAGES:
        logging.getLogger(package).setLevel(level)

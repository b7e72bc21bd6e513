"""The ``corral`` command line. ``main(argv)`` is callable from tests and returns the exit code."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from launcher.errors import CorralError

log = logging.getLogger("launcher")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one readable message and exit 2, failed runs exit 1."""
    from launcher.cli.quick import quick_command

    args = sys.argv[1:] if argv is None else list(argv)
    quick = quick_command(args)
    if quick is not None:
        return _guarded(lambda: quick() or 0)
    return _guarded(lambda: _typer_main(args))


def _typer_main(args: list[str]) -> int:
    from typer import Abort, Exit
    from typer._click.exceptions import ClickException

    from launcher.cli.app import build_command

    try:
        result = build_command().main(args=args, prog_name="corral", standalone_mode=False)
    except Exit as exc:
        return exc.exit_code
    except Abort:
        print("aborted", file=sys.stderr)
        return 130
    except ClickException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0


def _guarded(run: Callable[[], int]) -> int:
    """``run``'s exit code; a user error is one line and its exit code, never a traceback (--debug shows it)."""
    from launcher.cli.state import state

    try:
        return run()
    except CorralError as exc:
        if state.debug:
            log.exception("error")
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence for people
        if state.debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc}\n  rerun with --debug for a traceback, and please report it",
            file=sys.stderr,
        )
        return 1


def run() -> NoReturn:
    """The ``corral`` program: :func:`main`, then an exit without the interpreter's teardown.

    Tearing down the modules and objects of a launch (pydantic's schemas, the plan) costs ~0.1 CPU-s
    after the command is done, on the machine whose cores the job's first ranks are starting on (the
    head node is usually a node). Output is flushed and logging shut down first; a thread still running
    (none should be) gets the ordinary exit, which waits for it."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # a closed pipe: the ordinary exit reports it as Python does
        sys.exit(code)
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()

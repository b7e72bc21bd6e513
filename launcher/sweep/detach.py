"""Running the controller detached in tmux on the head node, so closing the terminal does not stop the sweep.

``corral sweep FILE`` builds the controller's command (pure, quoted once here), starts it as
the command of a new tmux session, then waits until the controller either holds the lock
(it runs) or wrote why it refused (another controller has the sweep).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.errors import RunFailed, ToolError, ToolNotFound, UserError
from launcher.sweep.lock import read_lock
from launcher.sweep.paths import SweepPaths

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
TMUX_SOCKET_ENV = "CORRAL_TMUX_SOCKET"
"""tmux -L socket name, as for jobs (launcher.jobs.TMUX_SOCKET_ENV); unset: the user's default server."""


def session_name(sweep: str, token: str) -> str:
    return f"corral-sweep-{sweep}-{token[:8]}"


@dataclass(frozen=True)
class ControllerLaunch:
    """Everything needed to start one detached controller: printable with --dry-run."""

    session: str
    socket: Optional[str]
    workdir: str
    argv: list[str]

    def pane_command(self) -> str:
        """The shell line tmux runs: the only place the controller's argv is quoted."""
        env = [
            "env",
            f"PYTHONPATH={PACKAGE_ROOT}" + (f":{os.environ['PYTHONPATH']}" if os.environ.get("PYTHONPATH") else ""),
        ]
        return f"cd {shlex.quote(self.workdir)} && exec {shlex.join(env + self.argv)}"


def plan_controller(
    paths: SweepPaths, cluster_file: Optional[Path], token: str, sweep: str, exclude: Sequence[str] = ()
) -> ControllerLaunch:
    session = session_name(sweep, token)
    argv = [
        sys.executable,
        "-m",
        "launcher.sweep.controller",
        "--sweep-dir",
        str(paths.root),
        "--token",
        token,
        "--session",
        session,
    ]
    if cluster_file is not None:
        argv += ["--cluster", str(Path(cluster_file).absolute())]
    for node in exclude:  # the controller reloads the cluster file: it must leave out the same nodes
        argv += ["--exclude", node]
    return ControllerLaunch(session, os.environ.get(TMUX_SOCKET_ENV) or None, os.getcwd(), argv)


def start_session(launch: ControllerLaunch) -> None:
    """Start the controller as the command of a new session of this machine's tmux server (libtmux).

    The controller is the session's command (no remain-on-exit): the session ends with it, and
    its log and journal, not the pane, say what happened."""
    from libtmux import exc

    from launcher.tools import tmux

    log.debug("tmux new-session -s %s: %s", launch.session, launch.pane_command())
    try:
        tmux.local_server(launch.socket).new_session(
            session_name=launch.session,
            window_command=launch.pane_command(),
            x=tmux.WIDTH,
            y=tmux.HEIGHT,
            attach=False,
        )
    except exc.TmuxCommandNotFound:
        raise ToolNotFound("tmux") from None
    except exc.LibTmuxException as err:
        raise ToolError("tmux", ["tmux", "new-session", "-s", launch.session], None, str(err)) from None


def start_detached(launch: ControllerLaunch, paths: SweepPaths, token: str, *, timeout: float = 60.0) -> None:
    """Start the controller in tmux and wait until it holds the lock; raise if it refused or died."""
    start_session(launch)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = read_lock(paths.lock)
        if holder is not None and holder.token == token or _journal_names(paths, token):
            return  # it holds the lock (or held it and already finished: a re-run of a finished sweep)
        refusal = paths.refusal(token)
        if refusal.exists():
            text = refusal.read_text(encoding="utf-8").strip()
            refusal.unlink(missing_ok=True)
            raise UserError(text)
        if not session_exists(launch):
            raise RunFailed(f"the sweep controller exited at once; see {paths.log}", hint=_log_tail(paths.log))
        time.sleep(0.2)
    raise RunFailed(f"the sweep controller did not take the sweep's lock within {timeout:.0f} s; see {paths.log}")


def _journal_names(paths: SweepPaths, token: str) -> bool:
    from launcher.sweep.journal import Journal

    return any(r["ev"] == "controller" and r.get("token") == token for r in Journal(paths.journal).read())


def session_exists(launch: ControllerLaunch) -> bool:
    from launcher.tools import tmux

    return _has_session(tmux.local_server(launch.socket), launch.session)


def kill_session(socket: Optional[str], session: str) -> None:
    from launcher.tools import tmux

    server = tmux.local_server(socket)
    if _has_session(server, session):
        server.cmd("kill-session", "-t", tmux.target(session))


def _has_session(server, session: str) -> bool:
    from libtmux import exc

    try:
        return server.has_session(session, exact=True)
    except exc.TmuxCommandNotFound:
        raise ToolNotFound("tmux") from None
    except exc.LibTmuxException:
        return False  # no server on that socket: no session either


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return "last log lines:\n    " + "\n    ".join(path.read_text(encoding="utf-8").splitlines()[-lines:])
    except FileNotFoundError:
        return "no log was written"

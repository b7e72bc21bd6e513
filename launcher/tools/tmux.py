"""The one choke point for tmux: argv builders for every tmux command corral sends to a node.

Why builders and not libtmux: the same commands run on remote nodes where corral is not
installed; they are executed there by the node agent (``launcher/agent/node_agent.py``, which gets
them in its requests and builds none itself) over ssh, and locally by the same agent, so one
tested code path serves both. The tmux server on the machine corral runs on (the detached
sweep controller) is driven with libtmux instead: ``local_server``. Targets use tmux's
``=NAME`` form: an exact session match, so ``corral-demo`` never hits ``corral-demo2``.
"""

from __future__ import annotations

import logging
import shlex

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 220, 50
IDLE_COMMAND = ["sleep", "2147483647"]
"""The pane's first process, replaced by the wrapper once remain-on-exit is on. Pane commands are
argvs of two or more words, which tmux executes directly: no shell, so no rc file is read."""


def base(socket: str | None) -> list[str]:
    return ["tmux", *(["-L", socket] if socket else [])]


def target(session: str) -> str:
    return "=" + session


def pane_target(session: str) -> str:
    """The session's current window and pane (whatever the user's base-index is)."""
    return f"={session}:"


def literal(arg: str) -> str:
    """An argument tmux passes on as is: tmux reads a trailing ``;`` as the end of a command
    (and ``\\;`` as a literal ``;``), so a path or command ending in ``;`` gets it escaped."""
    return arg[:-1] + "\\;" if arg.endswith(";") else arg


def new_session(socket: str | None, session: str, workdir: str) -> list[str]:
    return [
        *base(socket),
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        str(WIDTH),
        "-y",
        str(HEIGHT),
        "-c",
        literal(workdir),
        *IDLE_COMMAND,
    ]


def set_remain_on_exit(socket: str | None, session: str) -> list[str]:
    return [*base(socket), "set-option", "-w", "-t", pane_target(session), "remain-on-exit", "on"]


def respawn(socket: str | None, session: str, argv: list[str]) -> list[str]:
    """Replace the pane's process with ``argv`` (two or more words: executed without a shell)."""
    if len(argv) < 2:
        raise ValueError(f"pane argv needs two or more words, or tmux hands it to a shell (got {argv!r})")
    return [*base(socket), "respawn-pane", "-k", "-t", pane_target(session), *map(literal, argv)]


def kill_session(socket: str | None, session: str) -> list[str]:
    return [*base(socket), "kill-session", "-t", target(session)]


PANE_FORMAT = "#{pane_dead} #{pane_dead_status} #{pane_pid}"
"""One line per pane, read by the node agent: dead flag (0/1), exit status once dead, the pane's process."""


def list_panes(socket: str | None, session: str) -> list[str]:
    """Every pane of the session as ``PANE_FORMAT`` lines (a failed command: no such session)."""
    return [*base(socket), "list-panes", "-s", "-t", target(session), "-F", PANE_FORMAT]


def local_server(socket: str | None):
    """The tmux server of this machine (libtmux), on socket ``-L socket`` or the user's default one."""
    import libtmux

    return libtmux.Server(socket_name=socket) if socket else libtmux.Server()


def attach(socket: str | None, session: str) -> list[str]:
    return [*base(socket), "attach-session", "-t", target(session)]


def chain(*commands: list[str]) -> list[str]:
    """One tmux client invocation running several commands in order (``tmux A ; B``): the
    server runs them back to back, and a node pays for one client process instead of several."""
    out = list(commands[0])
    for argv in commands[1:]:
        out += [";", *argv[len(_base_prefix(argv)) :]]
    return out


def _base_prefix(argv: list[str]) -> list[str]:
    """The ``tmux [-L socket]`` part of an argv built here."""
    return argv[:3] if len(argv) > 2 and argv[1] == "-L" else argv[:1]


def start_steps(socket: str | None, session: str, workdir: str, pane_command: list[str]) -> list[list[str]]:
    """The robust start: an idle process first, then remain-on-exit, then the real command
    (starting the command directly would race remain-on-exit and lose a fast exit); the three
    commands go to the server in one invocation."""
    steps = [
        chain(
            new_session(socket, session, workdir),
            set_remain_on_exit(socket, session),
            respawn(socket, session, pane_command),
        )
    ]
    for argv in steps:
        log.debug("tmux step: %s", shlex.join(argv))
    return steps

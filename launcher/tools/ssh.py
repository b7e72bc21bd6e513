"""The one choke point for running commands on nodes: the system OpenSSH client, or a local
process for ``localhost``.

Why the system client: it honours ``~/.ssh/config``, agents, jump hosts and known_hosts the
way users already set them up. Every call is an argv list; the remote command is quoted once,
here, with ``shlex.join``. Calls are asyncio subprocesses so a fan-out to many nodes costs one
round trip per window, and ControlMaster multiplexing makes the second and later calls to a node
cheap.

Fan-out window: like ``pdsh -f``, at most ``ssh.fanout`` connections are in flight at once per
event loop (:func:`slot`); nodes beyond it wait for a free slot. Transient failures of the
connection itself (sshd resetting a key exchange under load) are retried with backoff within
the caller's deadline (:func:`transient`, :func:`backoff_s`); a refused or timed-out connection
is not, so a dead node is still named after one connect timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import re
import resource
import shlex
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from launcher.config import NodeConfig, SSHConfig
from launcher.errors import ToolNotFound

log = logging.getLogger(__name__)

CONTROL_PERSIST_S = 300
"""How long a master outlives its last command (SkyPilot keeps 300 s too): the ``ps`` or ``logs`` a person
types minutes after a launch, whose ranks may take over a minute to start on 32 nodes, logs into no node."""
SOCKET_PATH_MAX = 100
"""sun_path holds 108 bytes; ssh adds a random suffix while creating the socket."""


@dataclass(frozen=True)
class Completed:
    """Result of one command on one node."""

    node: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error_line(self) -> str:
        """The last line of stderr, or the exit status: what people need to see."""
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


# ---------------------------------------------------------------------------- fan-out window


class Window:
    """A bounded window of ssh connections in flight on one event loop (``pdsh -f``).

    ``in_flight`` and ``peak`` are kept so tests and measurements can see the window respected."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._sem = asyncio.Semaphore(size)
        self.in_flight = 0
        self.peak = 0
        self.waited = 0
        """How many acquisitions found the window full (nodes queued behind it)."""

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem.locked():
            self.waited += 1
        async with self._sem:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1


_windows: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Window]] = weakref.WeakKeyDictionary()
"""One window per (event loop, size): an asyncio semaphore belongs to one loop, and the sweep
controller runs a loop per thread."""


def window(cfg: SSHConfig) -> Window:
    """This event loop's window for ``cfg.fanout`` (created on first use)."""
    per_loop = _windows.setdefault(asyncio.get_running_loop(), {})
    if cfg.fanout not in per_loop:
        per_loop[cfg.fanout] = Window(cfg.fanout)
        raise_fd_limit(cfg.fanout)
    return per_loop[cfg.fanout]


def slot(cfg: SSHConfig) -> contextlib.AbstractAsyncContextManager[None]:
    """Hold one of the window's slots while a connection is opened or a request is in flight."""
    return window(cfg).slot()


FDS_PER_CONNECTION = 6
"""Pipes the launcher holds per ssh client (stdin, stdout, stderr: both ends while starting)."""
FD_RESERVE = 256


def raise_fd_limit(fanout: int, kept: int = 0) -> int:
    """Raise the soft open-files limit towards the hard one when the window (plus ``kept`` idle
    sessions) could need more than it allows; returns the soft limit in force. A 1024 default
    soft limit is what many distributions ship, and 512 kept agent sessions need more."""
    need = (fanout + kept) * FDS_PER_CONNECTION + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            log.debug("could not raise the open-files limit from %s to %s", soft, target)
    return soft


# ---------------------------------------------------------------------------- transient failures

TRANSIENT_PATTERNS = re.compile(
    r"kex_exchange_identification|ssh_exchange_identification|banner exchange|mux_client_request_session"
)
"""What ssh says when sshd (or a ControlMaster being replaced) drops a connection before the
remote command started, one it could have taken a moment later: ``MaxStartups`` dropping an
unauthenticated connection, a reset during key exchange under load
(``kex_exchange_identification: read: Connection reset by peer``). Only failures before the
command ran are here, so a retry never runs a command twice. A refused connection, a connect
timeout, no route, a host key or an authentication failure are not: retrying them only delays
naming the node."""
RETRY_BASE_S = 0.25
RETRY_MAX_S = 4.0
RETRY_ATTEMPTS = 5


CONNECT_FAILED = re.compile(r"connect to host \S+ port \d+: ")
"""ssh's line for a failed TCP connect (refused, timed out, no route). It can follow a transient
line: a multiplexing master that died under a command makes ssh fall back to its own connection,
and that connection's failure is the verdict."""


def transient(returncode: int | None, stderr: str) -> bool:
    """Pure: did this ssh attempt fail before the remote command could start, for a reason that
    a new attempt may not meet? (ssh exits 255 for its own failures.)"""
    return returncode == 255 and bool(TRANSIENT_PATTERNS.search(stderr)) and not CONNECT_FAILED.search(stderr)


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter (attempt 0, 1, ...): many clients reset by one sshd
    must not come back in step."""
    cap = min(RETRY_MAX_S, RETRY_BASE_S * (2**attempt))
    return (rng or random).uniform(cap / 2, cap)


def clean_env() -> dict[str, str]:
    """The launcher's environment minus its activated venv, for local commands (a tmux server
    started from here would otherwise hand the venv's PATH to every pane)."""
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONHOME", None)
    env.pop("VIRTUAL_ENV_PROMPT", None)
    if venv:
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p != os.path.join(venv, "bin")
        )
    env.pop("TMUX", None)  # corral may run inside tmux; its commands target servers explicitly
    return env


def control_dir() -> Path:
    """Directory for ControlMaster sockets: short (socket path limit) and private (0700)."""
    candidates = [Path.home() / ".ssh" / "corral-cm", Path(f"/tmp/corral-cm-{os.getuid()}")]
    for d in candidates:
        if len(str(d)) + 1 + 16 + 20 <= SOCKET_PATH_MAX:
            try:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                return d
            except OSError:
                continue
    raise ToolNotFound("ssh", hint="no writable short directory for ssh control sockets (~/.ssh or /tmp)")


RETIRE_TIMEOUT_S = 5.0
"""How long ``ssh -O stop`` may take: the master answers on a local socket, at once unless it is stuck."""


async def retire_masters(cfg: SSHConfig, nodes: list[NodeConfig]) -> None:
    """Make the next connection to each node a new login: a multiplexing master an earlier command
    left open stops taking new sessions (``ssh -O stop``: the sessions it carries go on, and it
    leaves when they end). Only nodes with a master's socket are asked.

    Preflight calls this first, so that "ssh reachable" is answered by a real new connection, not
    by a master left open while the node's sshd is down; the connection it opens then serves the
    launch and the commands after it."""

    async def stop(node: NodeConfig) -> None:
        proc = await _exec(
            node,
            control_argv(cfg, node.host, "stop"),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await asyncio.wait_for(proc.communicate(), RETIRE_TIMEOUT_S)
        except asyncio.TimeoutError:  # a master that does not answer on its own socket: the probe's deadline rules
            proc.kill()
            await proc.wait()

    await asyncio.gather(*(stop(n) for n in nodes if not n.is_local and os.path.exists(control_path(cfg, n.host))))


def control_path(cfg: SSHConfig, host: str) -> str:
    """One socket per (user, host, port, key, options), not per process: a command reuses the connection
    an earlier one left open (``ControlPersist``), as Ansible's and SkyPilot's ssh do. ``corral ps`` after
    a launch, or under ``watch``, logs into no node again, and the launching machine keeps one master
    per node, not one per command. A 16-hex digest keeps the path short."""
    options = ",".join(f"{k}={v}" for k, v in sorted(cfg.options.items()))
    key = f"{cfg.user}|{host}|{cfg.port}|{cfg.identity_file}|{options}"
    return str(control_dir() / hashlib.sha1(key.encode()).hexdigest()[:16])


def control_argv(cfg: SSHConfig, host: str, command: str) -> list[str]:
    """``ssh -O command`` to the node's multiplexing master (``check``, ``stop``, ``exit``): the same options, so
    the same socket, as the commands that opened it."""
    return ["ssh", *ssh_options(cfg, host), "-O", command, host]


KEEPALIVE_COUNT = 3


def keepalive_interval_s(cfg: SSHConfig) -> int:
    """Seconds between keep-alives: a node silent for ``KEEPALIVE_COUNT`` of them (6 s; 3 s with a
    connect timeout of 3 s or less) is dropped. A shared master must not outlive its
    node's network for long: a later command's channel waits on it before ssh falls back to a
    connection of its own."""
    return 1 if cfg.connect_timeout <= KEEPALIVE_COUNT else 2


def ssh_options(cfg: SSHConfig, host: str, *, multiplex: bool = True) -> list[str]:
    argv = [
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={cfg.connect_timeout}",
    ]
    mine = {k.lower() for k in cfg.options}
    if "serveraliveinterval" not in mine and "serveralivecountmax" not in mine:  # ssh keeps an option's first value
        argv += [
            "-o",
            f"ServerAliveInterval={keepalive_interval_s(cfg)}",
            "-o",
            f"ServerAliveCountMax={KEEPALIVE_COUNT}",
        ]
    if multiplex:
        argv += [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={control_path(cfg, host)}",
            "-o",
            f"ControlPersist={CONTROL_PERSIST_S}",
        ]
    if cfg.port != 22:
        argv += ["-p", str(cfg.port)]
    if cfg.user:
        argv += ["-l", cfg.user]
    if cfg.identity_file:
        argv += ["-i", os.path.expanduser(cfg.identity_file)]
    for key, value in cfg.options.items():
        argv += ["-o", f"{key}={value}"]
    return argv


def ssh_argv(
    cfg: SSHConfig, host: str, remote_argv: list[str], *, tty: bool = False, multiplex: bool = True
) -> list[str]:
    """``ssh [options] HOST 'quoted remote argv'``: the remote shell sees exactly ``remote_argv``."""
    return [
        "ssh",
        *(["-t"] if tty else []),
        *ssh_options(cfg, host, multiplex=multiplex),
        host,
        shlex.join(remote_argv),
    ]


def node_argv(cfg: SSHConfig, node: NodeConfig, argv: list[str], *, tty: bool = False) -> list[str]:
    """The local argv that runs ``argv`` on the node (itself for localhost)."""
    return list(argv) if node.is_local else ssh_argv(cfg, node.host, argv, tty=tty)


async def _exec(
    node: NodeConfig, full: list[str], *, stdin: int, limit: int = 1 << 16, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    log.debug("[%s] %s", node.label, shlex.join(full))
    try:
        return await asyncio.create_subprocess_exec(
            *full,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=clean_env(),
            start_new_session=True,  # a Ctrl-C meant for corral must not reach ssh mid-handshake
            limit=limit,
        )
    except FileNotFoundError:
        raise ToolNotFound(full[0]) from None


async def spawn(
    cfg: SSHConfig, node: NodeConfig, argv: list[str], *, limit: int = 1 << 24
) -> asyncio.subprocess.Process:
    """Start ``argv`` on the node with stdin, stdout and stderr as pipes (a long-lived session:
    the caller talks to it and must wait for it). ``limit``: the longest line it may read."""
    return await _exec(node, node_argv(cfg, node, argv), stdin=asyncio.subprocess.PIPE, limit=limit)


async def stream(cfg: SSHConfig, node: NodeConfig, argv: list[str]) -> asyncio.subprocess.Process:
    """Start ``argv`` on the node for its stdout only (``tail -F``): the caller reads, then kills it."""
    return await _exec(
        node, node_argv(cfg, node, argv), stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


def exec_interactive(cfg: SSHConfig, node: NodeConfig, argv: list[str]) -> NoReturn:
    """Replace this process with ``argv`` on the node, on the user's terminal (``corral attach``):
    no multiplexing, so the session owns its own connection."""
    full = interactive_argv(cfg, node, argv)
    log.debug("[%s] exec %s", node.label, shlex.join(full))
    try:
        os.execvpe(full[0], full, clean_env())
    except FileNotFoundError:
        raise ToolNotFound(full[0]) from None


def interactive_argv(cfg: SSHConfig, node: NodeConfig, argv: list[str]) -> list[str]:
    """What ``exec_interactive`` runs (printed before it replaces the process)."""
    return list(argv) if node.is_local else ssh_argv(cfg, node.host, argv, tty=True, multiplex=False)


async def run(
    cfg: SSHConfig, node: NodeConfig, argv: list[str], *, input: bytes | None = None, timeout: float = 60.0
) -> Completed:
    """Run ``argv`` on the node and collect its output, within the fan-out window; a timeout
    (for every attempt together, counted from the node's first turn in the window: a node queued
    behind the window is not late) reads as exit status 124. A transient ssh failure is retried
    with backoff while the deadline allows."""
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    attempt = 0
    while True:
        async with slot(cfg):
            if deadline is None:
                deadline = loop.time() + timeout
            done = await _run_once(cfg, node, argv, input=input, timeout=max(0.1, deadline - loop.time()))
        pause = backoff_s(attempt)
        if node.is_local or done.stdout or not transient(done.returncode, done.stderr) or attempt + 1 >= RETRY_ATTEMPTS:
            return done
        if loop.time() + pause >= deadline:
            return done
        log.debug(
            "[%s] transient ssh failure (%s); retry %d in %.2fs", node.label, done.error_line(), attempt + 1, pause
        )
        await asyncio.sleep(pause)
        attempt += 1


async def _run_once(
    cfg: SSHConfig, node: NodeConfig, argv: list[str], *, input: bytes | None, timeout: float
) -> Completed:
    full = node_argv(cfg, node, argv)
    proc = await _exec(node, full, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL)
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return Completed(node.label, full, 124, "", f"no answer within {timeout:g}s")
    except asyncio.CancelledError:
        proc.kill()
        raise
    return Completed(
        node.label,
        full,
        proc.returncode if proc.returncode is not None else -1,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
    )


def close_masters(cfg: SSHConfig, nodes: list[NodeConfig]) -> None:
    """Close the multiplexing masters to these nodes, and the sessions they carry (tests; ``corral`` leaves them to expire)."""
    import subprocess

    for node in nodes:
        if node.is_local:
            continue
        argv = control_argv(cfg, node.host, "exit")
        subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )

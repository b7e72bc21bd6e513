"""Run the node agent (``launcher/agent/node_agent.py``) on nodes, in parallel, through ``tools.ssh``.

The agent's source and then each request travel on the agent's stdin as JSON lines; it answers
each with one JSON line. The command line is a fixed bootstrap, so nothing from a request
(paths, env values, secrets) is visible in ``ps`` on either side. Localhost runs the same agent
with this interpreter, without ssh.

An agent process answers any number of requests. Inside :func:`kept_sessions` (a launch, a wait
that polls), each node's agent stays open between calls, so every request of the block to one node
shares one ssh session and one interpreter: what a launch costs a node is one login, not two.
Outside it, every call starts an agent for one request. The ``status`` read needs no agent: outside
a kept block, and in ``ps``'s block (``shell_status``), it is one shell command on the node
(``launcher.agent.status_sh``), the reads of every job to one node at one moment together, so
``ps`` of ten jobs on 32 nodes is 32 logins, not 320, and no Python start on any node.

Every call holds one slot of the ssh fan-out window (``tools.ssh.slot``, ``ssh.fanout`` in the
cluster file) while its session is opened and its request is answered; an idle kept session
holds none. A session that ssh could not even set up (``kex_exchange_identification: read:
Connection reset by peer`` under load: the agent never started) is retried with backoff within
the call's deadline.

On a node the agent runs with the cluster's venv interpreter when there is one (a real binary;
``python3`` on PATH may be a version manager's shim that costs more than the agent's work), else
with ``python3``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import CodeType
from typing import Any

from launcher import aio
from launcher.config import ClusterConfig, NodeConfig
from launcher.tools import ssh

log = logging.getLogger(__name__)

BOOTSTRAP = (
    "import gc,sys;gc.disable();r=sys.stdin.readline;m,p=r().split();s=r();g={'__name__':'corral_agent'};"
    "exec(__import__('marshal').loads(__import__('binascii').a2b_base64(p))"
    " if m==sys.modules['_frozen_importlib_external'].MAGIC_NUMBER.hex()"
    " else compile(__import__('json').loads(s),'corral_node_agent','exec'),g);"
    "gc.freeze();gc.enable();g['serve'](sys.stdin);sys.stdout.flush();sys.stderr.flush();__import__('os')._exit(0)"
)
"""Reads the agent's first two lines (``_code_lines``): its bytecode runs where the node's Python has the
launcher's bytecode version (compiling the source costs ~10 ms of CPU per node and call, as much as the rest
of a ``ps`` status read), else its source is compiled there; only then is ``json`` imported for it. What the
start-up made is frozen out of the garbage collector's passes, and the process ends without tearing its
objects down: on every node of a launch, those were ~3 ms of CPU each."""
REMOTE_PYTHON = "python3"
AGENT_FLAGS = ("-I", "-S")
PICK_PYTHON = 'p="$1/bin/python3"; [ -x "$p" ] || p=python3; shift; exec "$p" "$@"'
"""The venv's interpreter if it exists, else python3 (the probe then reports the missing venv)."""
CLOSE_WAIT_S = 10.0


@lru_cache(maxsize=1)
def agent_source() -> str:
    return (Path(__file__).with_name("node_agent.py")).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _code_lines() -> bytes:
    """The agent's first two lines: the bytecode version of this Python and the agent's bytecode (base64),
    then its source as a JSON string (read by every node, decoded only by one whose Python differs)."""
    import base64
    import marshal
    from importlib.util import MAGIC_NUMBER

    pyc = base64.b64encode(marshal.dumps(agent_code())).decode()
    return f"{MAGIC_NUMBER.hex()} {pyc}\n{json.dumps(agent_source())}\n".encode()


def agent_code() -> CodeType:
    """The agent's bytecode, from the import system's cache of it when that is fresh (compiling its
    source costs ~12 ms, on the way to every node's first request)."""
    from importlib.util import find_spec

    spec = find_spec("launcher.agent.node_agent")
    code = spec.loader.get_code(spec.name) if spec is not None and spec.loader is not None else None
    return code if code is not None else compile(agent_source(), "corral_node_agent", "exec")


@dataclass
class AgentReply:
    """One node's answer: ``data`` on success, else ``error`` (ssh failure or agent failure)."""

    node: str
    data: dict[str, Any]
    error: str | None = None
    transient: bool = False
    """ssh failed before the agent started, for a reason a new attempt may not meet (safe to retry)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def agent_argv(cluster: ClusterConfig, node: NodeConfig) -> list[str]:
    """The agent's command: ``-I`` (no user site, no PYTHON* variables) and ``-S`` (no site
    packages): it needs only the standard library, and starts faster without them."""
    if node.is_local:
        return [sys.executable, *AGENT_FLAGS, "-c", BOOTSTRAP]
    if cluster.venv:
        return ["sh", "-c", PICK_PYTHON, "corral-agent", cluster.venv, *AGENT_FLAGS, "-c", BOOTSTRAP]
    return [REMOTE_PYTHON, *AGENT_FLAGS, "-c", BOOTSTRAP]


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()


@dataclass
class AgentSession:
    """One agent process on one node, answering requests one at a time."""

    node: NodeConfig
    proc: asyncio.subprocess.Process
    stderr: bytearray = field(default_factory=bytearray)
    broken: str | None = None
    broken_transient: bool = False
    answered: int = 0
    """Replies read so far: a session that never answered never ran a request."""
    _drain: asyncio.Task | None = None

    @classmethod
    async def open(cls, cluster: ClusterConfig, node: NodeConfig) -> AgentSession:
        proc = await ssh.spawn(cluster.ssh, node, agent_argv(cluster, node))
        session = cls(node, proc)
        session._drain = asyncio.create_task(session._collect_stderr())
        session._send(_code_lines())
        return session

    async def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr += chunk[: max(0, 65536 - len(self.stderr))]

    def _send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the process is gone; the read that follows reports why

    async def request(self, request: dict[str, Any], timeout: float) -> AgentReply:
        label = self.node.label
        if self.broken:
            return AgentReply(label, {}, self.broken, self.broken_transient)
        self._send(_line(request))
        try:
            line = await asyncio.wait_for(self._reply_line(), timeout)
        except asyncio.TimeoutError:
            self.broken = f"no answer within {timeout:g}s"
            await self.kill()
            return AgentReply(label, {}, self.broken)
        if line is None:
            self.broken = await self._exit_reason()
            self.broken_transient = not self.answered and ssh.transient(
                self.proc.returncode, self.stderr.decode(errors="replace")
            )
            return AgentReply(label, {}, self.broken, self.broken_transient)
        self.answered += 1
        data = json.loads(line)
        if "agent_error" in data:
            return AgentReply(label, data, f"node agent: {data['agent_error']}")
        return AgentReply(label, data)

    async def _reply_line(self) -> str | None:
        """The next JSON line on stdout; other lines (a login script's chatter) are skipped."""
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            text = raw.decode(errors="replace").strip()
            if text.startswith("{"):
                return text
            if text:
                log.debug("[%s] agent stdout: %s", self.node.label, text)
        return None

    async def _exit_reason(self) -> str:
        code = await self._wait(CLOSE_WAIT_S)
        lines = [ln for ln in self.stderr.decode(errors="replace").strip().splitlines() if ln.strip()]
        return _failure(self.node, code, lines[-1] if lines else f"exit status {code}")

    async def _wait(self, timeout: float) -> int | None:
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            code = self.proc.returncode
        if self._drain is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drain, 1.0)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    async def close(self) -> None:
        """End of input: the agent exits after its last answer."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        await self._wait(CLOSE_WAIT_S)


class _Kept:
    """The sessions of one :func:`kept_sessions` block and the event loop they live on."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, shell_status: bool = False) -> None:
        self.loop = loop or asyncio.new_event_loop()
        self.sessions: dict[tuple[str, str], AgentSession] = {}
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.shell_status = shell_status
        self.batches: dict[tuple[str, str], tuple[list[dict[str, Any]], asyncio.Future[list[AgentReply]]]] = {}

    def has_session(self, node: NodeConfig) -> bool:
        return (node.label, node.host) in self.sessions

    async def status_by_shell(
        self, cluster: ClusterConfig, node: NodeConfig, request: dict[str, Any], wait: float
    ) -> AgentReply:
        """The node's ``status`` requests of this moment (``ps``: one per job) answered together by one shell
        command: the first caller waits one turn of the loop for the others, then asks for them all."""
        key = (node.label, node.host)
        if key in self.batches:
            requests, future = self.batches[key]
            index = len(requests)
            requests.append(request)
            return (await asyncio.shield(future))[index]
        requests, future = self.batches[key] = ([request], self.loop.create_future())
        try:
            await asyncio.sleep(0)  # every job's read_status of this gather adds its request
        finally:
            del self.batches[key]  # a later request starts a batch of its own
        try:
            replies = await _statuses_by_shell(cluster, node, requests, wait)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: a batch of one has nobody else to see it
            raise
        future.set_result(replies)
        return replies[0]

    def lock(self, node: NodeConfig) -> asyncio.Lock:
        """The node's turn: its calls in this block go one at a time over its one session."""
        return self.locks.setdefault((node.label, node.host), asyncio.Lock())

    async def session(self, cluster: ClusterConfig, node: NodeConfig) -> AgentSession:
        """The node's open session, or a new one (the caller holds the node's lock and a window slot)."""
        key = (node.label, node.host)
        s = self.sessions.get(key)
        if s is not None and not s.broken and s.proc.returncode is None:
            return s
        if s is not None:
            await s.kill()
        ssh.raise_fd_limit(cluster.ssh.fanout, kept=len(self.sessions) + 1)
        s = self.sessions[key] = await AgentSession.open(cluster, node)
        return s

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions.values()), return_exceptions=True)
        self.sessions.clear()


_local = threading.local()
"""Per thread: the ``_Kept`` of the thread's open :func:`kept_sessions` block (the sweep
controller launches trials from several threads at once, each with its own sessions)."""


def _current() -> _Kept | None:
    return getattr(_local, "kept", None)


@contextlib.contextmanager
def kept_sessions(shell_status: bool = False) -> Iterator[None]:
    """Keep each node's agent (and its ssh session) open for every call inside the block.

    Calls inside must go through :func:`run_sync` (one event loop per block owns the sessions).
    Nested blocks share the outer one; each thread has its own. On exit each agent is told that
    input ended and is waited for. ``shell_status``: for a block that reads every job's status once
    (``ps``): the ``status`` requests made to a node at one moment are answered by one shell command
    there (``launcher.agent.status_sh``), unless the node already has an agent open in the block.
    """
    if _current() is not None:
        yield
        return
    kept = _local.kept = _Kept(shell_status=shell_status)
    try:
        yield
    finally:
        try:
            kept.loop.run_until_complete(kept.close_all())
            kept.loop.run_until_complete(kept.loop.shutdown_asyncgens())
        finally:
            kept.loop.close()
            _local.kept = None


@contextlib.asynccontextmanager
async def kept_sessions_here() -> AsyncIterator[None]:
    """:func:`kept_sessions` for code already running on an event loop (``logs -f``'s status
    polls): the sessions live on that loop and are closed when the block ends, cancelled or not."""
    if _current() is not None:
        yield
        return
    kept = _local.kept = _Kept(asyncio.get_running_loop())
    try:
        yield
    finally:
        _local.kept = None
        try:
            await kept.close_all()
        except BaseException:  # interrupted again while closing: end them without waiting
            for session in kept.sessions.values():
                with contextlib.suppress(ProcessLookupError):
                    session.proc.kill()
            raise


def run_sync(coro):
    """Run a coroutine from synchronous code (the API and the CLI are synchronous)."""
    kept = _current()
    if kept is not None:
        return kept.loop.run_until_complete(coro)
    return aio.run(coro)


RETRY_FLOOR_S = 1.0
"""A retry is worth starting only with this much of the deadline left."""


async def call(
    cluster: ClusterConfig, node: NodeConfig, request: dict[str, Any], *, timeout: float = 60.0
) -> AgentReply:
    """One request to the node's agent, within the fan-out window; ``timeout`` counts from the
    moment the node's turn comes (a node queued behind the window is not late). A session that
    failed before its agent started is retried with backoff while ``timeout`` allows."""
    wait = timeout + cluster.ssh.connect_timeout
    loop = asyncio.get_running_loop()
    kept = _current()
    if kept is not None and loop is kept.loop:
        if kept.shell_status and request.get("op") == "status" and not kept.has_session(node):
            return await kept.status_by_shell(cluster, node, request, wait)
        async with kept.lock(node):
            return await _with_retries(cluster, node, wait, lambda left: _kept_call(kept, cluster, node, request, left))
    if request.get("op") == "status":  # a shell on the node instead of a Python start
        return (await _statuses_by_shell(cluster, node, [request], wait))[0]
    return await _with_retries(cluster, node, wait, lambda left: _one_call(cluster, node, request, left))


async def _statuses_by_shell(
    cluster: ClusterConfig, node: NodeConfig, requests: list[dict[str, Any]], wait: float
) -> list[AgentReply]:
    """``status`` requests answered by one shell command (``launcher.agent.status_sh``); the fan-out window and
    the retry of a transient ssh failure are ``ssh.run``'s."""
    from launcher.agent import status_sh

    # the script on stdin: one job's read is ~0.7 kB, and a command line argument stops at 128 kB
    script = status_sh.script(requests).encode()
    done = await ssh.run(cluster.ssh, node, ["sh", "-s"], input=script, timeout=wait)
    answers = status_sh.parse(done.stdout, requests) if done.returncode == 0 else [None] * len(requests)
    if done.returncode == 124:
        reason = done.stderr
    else:
        reason = (
            _failure(node, done.returncode, done.error_line()) if done.returncode else "the status read ended early"
        )
    transient = ssh.transient(done.returncode, done.stderr)
    return [
        AgentReply(node.label, a) if a is not None else AgentReply(node.label, {}, reason, transient) for a in answers
    ]


def _failure(node: NodeConfig, code: int | None, last: str) -> str:
    """What a failed agent or status command says: its last stderr line; ssh's own messages (exit 255) already
    start with "ssh: ", say it once."""
    return f"ssh: {last.removeprefix('ssh: ')}" if code == 255 and not node.is_local else last


async def _with_retries(cluster: ClusterConfig, node: NodeConfig, wait: float, attempt_fn) -> AgentReply:
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    attempt = 0
    while True:
        async with ssh.slot(cluster.ssh):
            if deadline is None:  # the clock starts with the node's first turn in the window
                deadline = loop.time() + wait
            reply = await attempt_fn(max(RETRY_FLOOR_S, deadline - loop.time()))
        if not reply.transient or attempt + 1 >= ssh.RETRY_ATTEMPTS:
            return reply
        pause = ssh.backoff_s(attempt)
        if loop.time() + pause + RETRY_FLOOR_S >= deadline:
            return reply
        log.debug("[%s] %s; retry %d in %.2fs", node.label, reply.error, attempt + 1, pause)
        await asyncio.sleep(pause)
        attempt += 1


async def _kept_call(
    kept: _Kept, cluster: ClusterConfig, node: NodeConfig, request: dict[str, Any], wait: float
) -> AgentReply:
    return await (await kept.session(cluster, node)).request(request, wait)


async def _one_call(cluster: ClusterConfig, node: NodeConfig, request: dict[str, Any], wait: float) -> AgentReply:
    session = await AgentSession.open(cluster, node)
    try:
        reply = await session.request(request, wait)
    finally:
        await session.close()
    return reply


async def call_all(
    cluster: ClusterConfig, requests: list[tuple[NodeConfig, dict[str, Any]]], *, timeout: float = 60.0
) -> list[AgentReply]:
    """The same or different requests to several nodes at once; replies in the same order."""
    return list(await asyncio.gather(*(call(cluster, n, r, timeout=timeout) for n, r in requests)))

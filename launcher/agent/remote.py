"""Run the node agent (``launcher/agent/node_agent.py``) on nodes, in parallel, through ``tools.ssh``.

The agent's source and then each request travel on the agent's stdin as JSON lines; it answers
each with one JSON line. The command line is a fixed bootstrap, so nothing from a request
(paths, env values, secrets) is visible in ``ps`` on either side. Localhost runs the same agent
with this interpreter, without ssh.

An agent process answers any number of requests. Inside :func:`kept_sessions` (a launch), each
node's agent stays open between calls, so preflight and start share one ssh session and one
interpreter per node: what a launch costs a node is one login, not two. Outside it, every call
starts an agent for one request.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from launcher.config import ClusterConfig, NodeConfig
from launcher.tools import ssh

log = logging.getLogger(__name__)

BOOTSTRAP = (
    "import sys,json;d=json.loads(sys.stdin.readline());g={'__name__':'corral_agent'};"
    "exec(compile(d['code'],'corral_node_agent','exec'),g);g['serve'](sys.stdin)"
)
REMOTE_PYTHON = "python3"
AGENT_FLAGS = ("-I", "-S")
PICK_PYTHON = 'p="$1/bin/python3"; [ -x "$p" ] || p=python3; shift; exec "$p" "$@"'
"""The venv's interpreter if it exists, else python3 (the probe then reports the missing venv)."""
CLOSE_WAIT_S = 10.0


@lru_cache(maxsize=1)
def agent_source() -> str:
    return (Path(__file__).with_name("node_agent.py")).read_text(encoding="utf-8")


@dataclass
class AgentReply:
    """One node's answer: ``data`` on success, else ``error`` (ssh failure or agent failure)."""

    node: str
    data: dict[str, Any]
    error: str | None = None

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
    _drain: asyncio.Task | None = None

    @classmethod
    async def open(cls, cluster: ClusterConfig, node: NodeConfig) -> AgentSession:
        proc = await ssh.spawn(cluster.ssh, node, agent_argv(cluster, node))
        session = cls(node, proc)
        session._drain = asyncio.create_task(session._collect_stderr())
        session._send(_line({"code": agent_source()}))
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
            return AgentReply(label, {}, self.broken)
        self._send(_line(request))
        try:
            line = await asyncio.wait_for(self._reply_line(), timeout)
        except asyncio.TimeoutError:
            self.broken = f"no answer within {timeout:g}s"
            await self.kill()
            return AgentReply(label, {}, self.broken)
        if line is None:
            self.broken = await self._exit_reason()
            return AgentReply(label, {}, self.broken)
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
        last = lines[-1] if lines else f"exit status {code}"
        # ssh's own messages already start with "ssh: "; say it once
        return f"ssh: {last.removeprefix('ssh: ')}" if code == 255 and not self.node.is_local else last

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

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sessions: dict[tuple[str, str], AgentSession] = {}
        self.opening: dict[tuple[str, str], asyncio.Task] = {}

    async def session(self, cluster: ClusterConfig, node: NodeConfig) -> AgentSession:
        key = (node.label, node.host)
        s = self.sessions.get(key)
        if s is not None and not s.broken and s.proc.returncode is None:
            return s
        if key not in self.opening:
            self.opening[key] = asyncio.ensure_future(AgentSession.open(cluster, node))
        try:
            s = self.sessions[key] = await self.opening[key]
        finally:
            self.opening.pop(key, None)
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
def kept_sessions() -> Iterator[None]:
    """Keep each node's agent (and its ssh session) open for every call inside the block.

    Calls inside must go through :func:`run_sync` (one event loop per block owns the sessions).
    Nested blocks share the outer one; each thread has its own. On exit each agent is told that
    input ended and is waited for.
    """
    if _current() is not None:
        yield
        return
    kept = _local.kept = _Kept()
    try:
        yield
    finally:
        try:
            kept.loop.run_until_complete(kept.close_all())
            kept.loop.run_until_complete(kept.loop.shutdown_asyncgens())
        finally:
            kept.loop.close()
            _local.kept = None


def run_sync(coro):
    """Run a coroutine from synchronous code (the API and the CLI are synchronous)."""
    kept = _current()
    if kept is not None:
        return kept.loop.run_until_complete(coro)
    return asyncio.run(coro)


async def call(
    cluster: ClusterConfig, node: NodeConfig, request: dict[str, Any], *, timeout: float = 60.0
) -> AgentReply:
    wait = timeout + cluster.ssh.connect_timeout
    kept = _current()
    if kept is not None and asyncio.get_running_loop() is kept.loop:
        return await (await kept.session(cluster, node)).request(request, wait)
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

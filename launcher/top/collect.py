"""Sampling the nodes for ``corral top``: one kept agent session per node, all in parallel.

Each node has a :class:`NodePoller` holding one node agent session (``launcher.agent.remote``'s
``AgentSession``: one ssh login for as long as the screen is open). On its first request the
session is given ``launcher/top/node_sampler.py`` through the agent's ``load`` op; every refresh
is then one JSON line each way. A request that gets no answer within the timeout ends that
session (the node shows "unreachable"); the next refresh tries a new one. Refreshes never wait
for a slow node: :meth:`Collector.refresh` returns after its deadline with the nodes that
answered, and a node whose request is still running is shown as waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from launcher.agent.remote import AgentSession
from launcher.config import ClusterConfig, NodeConfig
from launcher.plan import resolve_path
from launcher.top.model import Frame, JobSpec, NodeRow, TopState, drop_finished, mark_stragglers

log = logging.getLogger(__name__)

ABANDON_GRACE_S = 1.0
CLOSE_WAIT_S = 3.0
REPLAY_ENV = "CORRAL_NVML_REPLAY_DIR"
"""A directory of NVML recordings named ``<node name>.json``: a node with a file there has its
GPUs answered from the recording by its agent (demos, tests, screenshots without GPUs)."""


@lru_cache(maxsize=1)
def sampler_source() -> str:
    return Path(__file__).with_name("node_sampler.py").read_text(encoding="utf-8")


def venv_python(cluster: ClusterConfig, node: NodeConfig) -> str:
    """The interpreter the NVML sampler runs with: the job's venv (where nvidia-ml-py would be);
    without one, this interpreter on this machine and ``python3`` on a remote node."""
    if cluster.venv:
        return os.path.join(resolve_path(os.getcwd(), cluster.venv), "bin", "python3")
    return sys.executable if node.is_local else "python3"


def sample_request(
    cluster: ClusterConfig, node: NodeConfig, jobs: list[JobSpec], replay_dir: str | None = None
) -> dict[str, Any]:
    """The ``top`` request for one node (pure)."""
    base = os.getcwd()
    req: dict[str, Any] = {
        "op": "top",
        "python": venv_python(cluster, node),
        "disks": [
            {"label": "runs", "path": resolve_path(base, cluster.storage.runs)},
            {"label": "ckpt", "path": resolve_path(base, cluster.storage.checkpoints)},
        ],
        "jobs": [j.request() for j in jobs if j.node == node.label],
    }
    if replay_dir:
        recording = os.path.join(replay_dir, f"{node.label}.json")
        if os.path.isfile(recording):
            req["nvml_replay"] = recording
    return req


class NodePoller:
    """One node's kept session and its request in flight."""

    def __init__(self, cluster: ClusterConfig, node: NodeConfig, request: dict[str, Any], timeout: float) -> None:
        self.cluster, self.node, self.request, self.timeout = cluster, node, request, timeout
        self.session: AgentSession | None = None
        self.loaded = False
        self.task: asyncio.Task | None = None
        self.since = 0.0
        self.logins = 0

    async def _ask(self, request: dict[str, Any], wait: float) -> tuple[dict[str, Any] | None, str | None]:
        """One request with a hard deadline. Through an ssh ControlMaster the master holds the
        session's pipes, so after a cut cable even a killed client's end waits for ssh's own
        keepalive (about a minute): past the deadline the session is abandoned, not waited for."""
        assert self.session is not None
        try:
            reply = await asyncio.wait_for(self.session.request(request, wait), wait + ABANDON_GRACE_S)
        except asyncio.TimeoutError:
            self._abandon()
            return None, f"no answer within {wait:g}s"
        return (reply.data, None) if reply.ok else (None, reply.error)

    def _abandon(self) -> None:
        s, self.session = self.session, None
        if s is None:
            return
        with contextlib.suppress(ProcessLookupError):
            s.proc.kill()
        transport = getattr(s.proc, "_transport", None)
        if transport is not None:
            transport.close()  # our ends of its pipes; nothing is left waiting on the node's side

    async def sample(self) -> tuple[dict[str, Any] | None, str | None]:
        s = self.session
        if s is None or s.broken or s.proc.returncode is not None:
            if s is not None:
                self._abandon()
            self.session, self.loaded = await AgentSession.open(self.cluster, self.node), False
            self.logins += 1
        if not self.loaded:
            # A new session also has to log in: give the first answer the ssh connect time too.
            wait = self.timeout + self.cluster.ssh.connect_timeout
            data, error = await self._ask({"op": "load", "name": "corral_top_sampler", "code": sampler_source()}, wait)
            if error:
                return None, error
            self.loaded = True
        return await self._ask(self.request, self.timeout)

    def start(self) -> None:
        if self.task is None:
            self.since = time.monotonic()
            self.task = asyncio.ensure_future(self.sample())

    async def close(self) -> None:
        """End of input for a healthy session (its agent exits); anything else is abandoned."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
            self._abandon()
        s = self.session
        if s is not None and not s.broken and s.proc.returncode is None:
            try:
                await asyncio.wait_for(s.close(), CLOSE_WAIT_S)
            except asyncio.TimeoutError:
                self._abandon()
        else:
            self._abandon()


@dataclass
class Target:
    node: NodeConfig
    jobs: list[JobSpec]


class Collector:
    """Every node's poller and the screen's memory; ``refresh`` gives the next frame."""

    def __init__(
        self,
        cluster: ClusterConfig,
        targets: list[Target],
        *,
        timeout: float,
        replay_dir: str | None = None,
        hide_finished: bool = False,
    ) -> None:
        self.state = TopState()
        self.hide_finished = hide_finished
        self.pollers = [
            NodePoller(cluster, t.node, sample_request(cluster, t.node, t.jobs, replay_dir), timeout) for t in targets
        ]
        self.rows: dict[str, NodeRow] = {}

    async def refresh(self, deadline_s: float) -> Frame:
        """Ask every idle node for a sample, wait until all answered or ``deadline_s`` passed."""
        for p in self.pollers:
            p.start()
        pending = [p.task for p in self.pollers if p.task is not None and not p.task.done()]
        if pending:
            await asyncio.wait(pending, timeout=deadline_s)
        now = time.monotonic()
        for p in self.pollers:
            label = p.node.label
            if p.task is not None and p.task.done():
                try:
                    data, error = p.task.result()
                except Exception as exc:  # noqa: BLE001 - one node's failure is that node's row
                    data, error = None, f"{type(exc).__name__}: {exc}"
                p.task = None
                self.rows[label] = self.state.update(label, p.node.host, data, error)
            else:
                self.rows[label] = self.state.waiting(label, p.node.host, now - p.since)
        nodes = [self.rows[p.node.label] for p in self.pollers]
        if self.hide_finished:
            nodes = drop_finished(nodes)
        return Frame(t=time.time(), nodes=nodes, stragglers=mark_stragglers(nodes))

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.pollers), return_exceptions=True)

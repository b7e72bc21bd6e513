"""Run the node agent (``launcher/node_agent.py``) on nodes, in parallel, through ``tools.ssh``.

The agent's source and the request travel on stdin as one JSON document; the command line is
a fixed bootstrap, so nothing from the request (paths, env values, secrets) is visible in
``ps`` on either side. Localhost runs the same agent with this interpreter, without ssh.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from launcher.config import ClusterConfig, NodeConfig
from launcher.tools import ssh

BOOTSTRAP = (
    "import sys,json;d=json.loads(sys.stdin.read());g={'__name__':'corral_agent'};"
    "exec(compile(d['code'],'corral_node_agent','exec'),g);g['main'](d['request'])"
)
REMOTE_PYTHON = "python3"


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


def agent_argv(node: NodeConfig) -> list[str]:
    python = sys.executable if node.is_local else REMOTE_PYTHON
    return [python, "-c", BOOTSTRAP]


async def call(cluster: ClusterConfig, node: NodeConfig, request: dict[str, Any], *, timeout: float = 60.0) -> AgentReply:
    payload = json.dumps({"code": agent_source(), "request": request}).encode()
    done = await ssh.run(cluster.ssh, node, agent_argv(node), input=payload, timeout=timeout + cluster.ssh.connect_timeout)
    line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
    if not done.ok or line is None:
        if done.returncode == 255 and not node.is_local:
            return AgentReply(node.label, {}, f"ssh: {done.error_line()}")
        return AgentReply(node.label, {}, done.error_line())
    data = json.loads(line)
    if "agent_error" in data:
        return AgentReply(node.label, data, f"node agent: {data['agent_error']}")
    return AgentReply(node.label, data)


async def call_all(cluster: ClusterConfig, requests: list[tuple[NodeConfig, dict[str, Any]]], *, timeout: float = 60.0) -> list[AgentReply]:
    """The same or different requests to several nodes at once; replies in the same order."""
    return list(await asyncio.gather(*(call(cluster, n, r, timeout=timeout) for n, r in requests)))


def run_sync(coro):
    """Run a coroutine from synchronous code (the API and the CLI are synchronous)."""
    return asyncio.run(coro)

"""Reading a job's logs from its nodes: the last lines, or a live stream of every node merged.

Logs live on each node at ``<run_dir>/logs/<node>.log`` (the same path everywhere, shared or
not). Following runs ``tail -F`` on every node through ``tools.ssh``; stopping the follower
(Ctrl-C, or the job ending) ends only those tail processes, never the job.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Callable, TextIO

from launcher.config import ClusterConfig
from launcher.jobs import JobStatus, _node_config, read_status
from launcher.plan import NodePlan
from launcher.remote import call_all
from launcher.runrecord import RunRecord
from launcher.tools import ssh


def pick_nodes(record: RunRecord, node: str | None) -> list[NodePlan]:
    return [record.plan.node(node)] if node else list(record.plan.nodes)


async def tail_lines(record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int) -> list[tuple[str, list[str] | None, str | None]]:
    """Per node: (name, last lines or None, error)."""
    nodes = pick_nodes(record, node)
    replies = await call_all(cluster, [(_node_config(cluster, n), {"op": "tail", "path": n.log_path, "lines": lines}) for n in nodes], timeout=30)
    out = []
    for n, r in zip(nodes, replies):
        if not r.ok:
            out.append((n.node, None, r.error))
        elif not r.data.get("ok"):
            out.append((n.node, None, r.data.get("error")))
        else:
            out.append((n.node, r.data["lines"], None))
    return out


async def _pump(proc: asyncio.subprocess.Process, write: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            return
        write(line.decode(errors="replace"))


async def follow(record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int, *, until_done: bool,
                 out: TextIO = sys.stdout, poll_s: float = 2.0) -> JobStatus | None:
    """Stream new log lines from the chosen nodes; with ``until_done`` return the final status
    once every node has exited (after letting the last lines arrive)."""
    procs = []
    for n in pick_nodes(record, node):
        argv = ssh.node_argv(cluster.ssh, _node_config(cluster, n), ["tail", "-n", str(lines), "-F", n.log_path])
        procs.append(await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=ssh.clean_env(), start_new_session=True,
        ))  # fmt: skip

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    pumps = [asyncio.ensure_future(_pump(p, write)) for p in procs]
    final = None
    try:
        if until_done:
            while True:
                st = await read_status(record, cluster)
                if st.done:
                    final = st
                    break
                await asyncio.sleep(poll_s)
            await asyncio.sleep(1.0)  # tail -F polls once a second: let the last lines arrive
        else:
            await asyncio.gather(*pumps)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
        for p in procs:
            await p.wait()
        for t in pumps:
            t.cancel()
    return final

"""Reading a job's logs from its nodes: the last lines, or a live stream of every node merged.

Logs live on each node at ``<run_dir>/logs/<node>.log`` (the same path everywhere, shared or
not). Following runs ``tail -F`` on every node through ``tools.ssh``; stopping the follower
(Ctrl-C, or the job ending) ends only those tail processes, never the job.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

from launcher.agent.remote import call_all, kept_sessions_here
from launcher.backends.ssh.execute import node_config, read_status
from launcher.config import ClusterConfig
from launcher.plan import NodePlan
from launcher.runs.record import RunRecord
from launcher.runs.state import JobStatus
from launcher.tools import ssh


def pick_nodes(record: RunRecord, node: str | None) -> list[NodePlan]:
    return [record.plan.node(node)] if node else list(record.plan.nodes)


async def tail_lines(
    record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int
) -> list[tuple[str, list[str] | None, str | None]]:
    """Per node: (name, last lines or None, error)."""
    nodes = pick_nodes(record, node)
    replies = await call_all(
        cluster,
        [(node_config(cluster, n), {"op": "tail", "path": n.log_path, "lines": lines}) for n in nodes],
        timeout=30,
    )
    out = []
    for n, r in zip(nodes, replies):
        if not r.ok:
            out.append((n.node, None, r.error))
        elif not r.data.get("ok"):
            out.append((n.node, None, r.data.get("error")))
        else:
            out.append((n.node, r.data["lines"], None))
    return out


FINAL_LINE = "] corral: exited with status "
"""The wrapper's last line in every node log (see wrapper.WRAPPER_TEMPLATE)."""
STOPPED_LINE = "] corral: stopped by corral stop"
"""The last line of a node log when ``corral stop`` ended the job (see node_agent.op_stop)."""
DRAIN_TIMEOUT_S = 15.0


STREAM_OPEN = "corral: log stream open"
"""The first line every stream prints (before ``tail``): the connection is up, its slot of the
ssh fan-out window can go to the next node."""
STREAM_OPEN_S = 10.0
"""How long a stream keeps its slot waiting for that line (after ssh's connect timeout): a node
slower than that streams when it can, and the window moves on."""


def stream_argv(lines: int, path: str) -> list[str]:
    return ["sh", "-c", 'echo "$0"; exec tail -n "$1" -F "$2"', STREAM_OPEN, str(lines), path]


async def _open_stream(cluster: ClusterConfig, n: NodePlan, lines: int) -> asyncio.subprocess.Process:
    """A node's ``tail -F``, started within the fan-out window: the slot is held until the
    stream is open (a stream lives until the job ends, so it cannot hold a slot that long)."""
    async with ssh.slot(cluster.ssh):
        proc = await ssh.stream(cluster.ssh, node_config(cluster, n), stream_argv(lines, n.log_path))
        try:
            await asyncio.wait_for(_until_open(proc), cluster.ssh.connect_timeout + STREAM_OPEN_S)
        except asyncio.TimeoutError:
            pass
    return proc


async def _until_open(proc: asyncio.subprocess.Process) -> None:
    """Read up to the STREAM_OPEN line (a login script's chatter before it is dropped)."""
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        if line.decode(errors="replace").strip() == STREAM_OPEN:
            return


async def _pump(proc: asyncio.subprocess.Process, write: Callable[[str], None], finished: asyncio.Event) -> None:
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            return
        text = line.decode(errors="replace")
        if text.strip() == STREAM_OPEN:
            continue  # a stream that opened after its slot's wait
        write(text)
        if FINAL_LINE in text or STOPPED_LINE in text:
            finished.set()


async def follow(
    record: RunRecord,
    cluster: ClusterConfig,
    node: str | None,
    lines: int,
    *,
    until_done: bool,
    out: TextIO | None = None,
    poll_s: float = 2.0,
) -> JobStatus | None:
    """Stream new log lines from the chosen nodes; with ``until_done`` return the final status
    once every node has exited (after letting the last lines arrive)."""
    procs = list(await asyncio.gather(*(_open_stream(cluster, n, lines) for n in pick_nodes(record, node))))

    def write(text: str) -> None:
        stream = out or sys.stdout  # looked up per call: the caller may have redirected stdout
        stream.write(text)
        stream.flush()

    finished = [asyncio.Event() for _ in procs]
    pumps = [asyncio.ensure_future(_pump(p, write, f)) for p, f in zip(procs, finished)]
    final = None
    try:
        if until_done:
            async with kept_sessions_here():  # one login per node for every poll, not one per poll
                while True:
                    st = await read_status(record, cluster)
                    if st.done:
                        final = st
                        break
                    await asyncio.sleep(poll_s)
            # tail -F polls about once a second: wait for every node's final line to arrive
            waits = [asyncio.ensure_future(f.wait()) for f in finished]
            await asyncio.wait(waits, timeout=DRAIN_TIMEOUT_S)
            for w in waits:
                w.cancel()
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

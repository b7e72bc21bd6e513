"""``corral bench net``, the executing half: validate against the cluster, run each planned pair's receiver and sender on their nodes.

Both ends go through ``launcher.api.run_on_node`` (the node command choke point, which runs
a localhost node's command directly); the peer script goes to ``python -`` on stdin, as the
launcher's node agent does, so a node needs no corral checkout. The receiver picks no port itself: the port is chosen
here at random in a high range so both ends can be started at once; a port already taken
on the receiving node makes the receiver exit with a distinct status and the pair is tried
again on another port. The sender retries its connection while the receiver starts and
sends nothing unless the listener greets it as a corral receiver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import random
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.net import plan as net
from benchmarks.net.peer import EXIT_PORT_IN_USE
from launcher import aio

log = logging.getLogger(__name__)

PORT_RANGE = (20000, 60000)
PORT_TRIES = 4


def peer_source() -> bytes:
    """The sender/receiver script, shipped on stdin: the nodes need Python 3, not corral."""
    return (Path(__file__).resolve().parent / "peer.py").read_bytes()


def _with_port(argv: list[str], port: int) -> list[str]:
    out = list(argv)
    out[out.index("--port") + 1] = str(port)
    return out


def _parse(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def _pair_once(cluster, plan: net.PairPlan, port: int, duration: float) -> tuple[dict | None, str | None, bool]:
    """(receiver report, error, port clash) for one attempt."""
    from launcher import api

    src, dst = cluster.node(plan.src), cluster.node(plan.dst)
    timeout = duration + 90
    code = peer_source()
    recv_task = asyncio.create_task(
        api.run_on_node(cluster, dst, _with_port(plan.recv_argv, port), input=code, timeout=timeout)
    )
    send_task = asyncio.create_task(
        api.run_on_node(cluster, src, _with_port(plan.send_argv, port), input=code, timeout=timeout)
    )
    done, _ = await asyncio.wait({recv_task, send_task}, return_when=asyncio.FIRST_COMPLETED)
    if recv_task in done and not recv_task.result().ok:
        await _cancel(send_task)  # nobody will accept: do not wait for the sender's connect timeout
        r = recv_task.result()
        return None, f"receiver on {plan.dst}: {r.error_line()}", r.returncode == EXIT_PORT_IN_USE
    if send_task in done and not send_task.result().ok:
        await _cancel(recv_task)  # the receiver gives up on its own after its accept timeout
        return None, f"sender on {plan.src}: {send_task.result().error_line()}", False
    recv, send = await asyncio.gather(recv_task, send_task)
    if not send.ok:
        return None, f"sender on {plan.src}: {send.error_line()}", False
    if not recv.ok:
        return None, f"receiver on {plan.dst}: {recv.error_line()}", recv.returncode == EXIT_PORT_IN_USE
    report = _parse(recv.stdout)
    if report is None:
        return None, f"receiver on {plan.dst} printed no result: {recv.stdout[-200:]!r}", False
    return report, None, False


async def measure_pair(cluster, plan: net.PairPlan, duration: float, rng: random.Random) -> dict:
    """One pair's result dict (``net.pair_result``) or a failed-pair dict naming the end that failed."""
    error = "not run"
    for _ in range(PORT_TRIES):
        port = rng.randrange(*PORT_RANGE)
        report, error, clash = await _pair_once(cluster, plan, port, duration)
        if report is not None:
            return net.pair_result(plan.src, plan.dst, report, duration)
        if not clash:
            break
        log.info("port %d busy on %s; trying another", port, plan.dst)
    return net.failed_pair(plan.src, plan.dst, error or "unknown failure")


def run_plan(
    cluster,
    plans: list[net.PairPlan],
    duration: float,
    *,
    on_pair: Callable[[net.PairPlan, dict], None] | None = None,
    seed: int | None = None,
    in_rounds: bool = False,
) -> list[dict]:
    """Measure the pairs one after another (concurrent pairs would share links and CPUs), or with
    ``in_rounds`` (a large cluster's ring) every round of disjoint pairs at once: no node sends or
    receives twice at a time, and a round's pairs start together in batches of ``ssh.fanout // 2``
    (two ssh connections per pair), so both ends of a pair always hold a window slot."""
    rng = random.Random(seed)
    by_pair = {(p.src, p.dst): p for p in plans}
    if in_rounds:
        batch = max(1, cluster.ssh.fanout // 2)
        groups = [
            [by_pair[pair] for pair in members[i : i + batch]]
            for members in net.pair_rounds(list(by_pair))
            for i in range(0, len(members), batch)
        ]
    else:
        groups = [[p] for p in plans]
    results: dict[tuple[str, str], dict] = {}

    async def measure_group(group: list[net.PairPlan]) -> list[dict]:
        return list(await asyncio.gather(*(measure_pair(cluster, p, duration, rng) for p in group)))

    for group in groups:
        for plan, result in zip(group, aio.run(measure_group(group))):
            results[(plan.src, plan.dst)] = result
            if on_pair is not None:
                on_pair(plan, result)
    return [results[(p.src, p.dst)] for p in plans]


def python_for(cluster, node) -> str:
    """The interpreter that runs the peer on ``node``: the cluster venv's, this one for localhost, else python3."""
    if cluster.venv:
        return posixpath.join(cluster.venv, "bin", "python")
    return sys.executable if node.is_local else "python3"


def prepare(cluster, *, duration: float, pairs: str) -> tuple[list[net.Endpoint], list[net.PairPlan]]:
    """Endpoints and per-pair argv; every bad input (addresses, --pairs, --duration) fails here, exit 2."""
    eps = net.endpoints(cluster)
    pythons = {n.label: python_for(cluster, n) for n in cluster.nodes}
    return eps, net.build_plan(eps, pairs, python=pythons, duration=duration)


def run(cluster, eps, plans, *, duration: float, pairs: str, progress=None) -> dict:
    """``auto`` on a large cluster measures its ring in rounds of disjoint pairs (bounded time)."""
    mode = net.resolve_mode(pairs, len(eps))
    in_rounds = pairs == "auto" and mode == "ring"
    results = run_plan(cluster, plans, duration, on_pair=progress, in_rounds=in_rounds)
    return net.build_result(eps, mode, duration, results)


ALLOCATION_MODULE = "benchmarks.net.allocation"


def allocation_job(name: str, *, pairs: str, duration: float):
    """The plain job that measures the pairs from inside a scheduler's allocation (``allocation.py``)."""
    from launcher.config import JobConfig

    args = ["--pairs", pairs, "--duration", f"{duration:g}"]
    return JobConfig(name=name, module=ALLOCATION_MODULE, args=args, nproc_per_node=1)


def describe_allocation(*, pairs: str, duration: float) -> str:
    """The dry run where the scheduler places the nodes: the pairs are chosen by node rank once they are known."""
    which = {
        "auto": f"every ordered pair up to {net.AUTO_ALL_MAX_NODES} nodes, the ring beyond",
        "all": "every ordered pair",
        "ring": "each node to the next",
    }[pairs]
    return (
        f"one job on the allocation: python3 -m {ALLOCATION_MODULE} --pairs {pairs} --duration {duration:g} on every node\n"
        f"node rank 0 coordinates on the job's rendezvous endpoint; the pairs ({which}, by node rank) run one at a time\n"
    )


def run_in_allocation(
    cluster, *, pairs: str, duration: float, timeout: float | None = None, say=lambda s: None
) -> dict:
    """bench net's result, measured by one job on the allocation where the scheduler places the nodes (Slurm):
    the cluster file names no nodes, so the pairs and addresses are known only inside the job."""
    import secrets
    import time

    from benchmarks.net.allocation import RESULT_FILE
    from launcher import api
    from launcher.errors import RunFailed

    net.resolve_mode(pairs, 2)  # a bad --pairs fails here, before anything is submitted
    name = f"bench-net-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    done = api.run_to_completion(
        allocation_job(name, pairs=pairs, duration=duration),
        cluster,
        name=name,
        plain=True,
        timeout=timeout,
        collect=[RESULT_FILE],
        on_start=lambda handle: say(f"launched {name} on the allocation; run dir {handle.run_dir}"),
    )
    raw = done.first(RESULT_FILE)
    if raw is None:
        why = "its time ran out" if done.timed_out else "no node wrote the result"
        raise RunFailed(f"bench net on the allocation: {why}", hint=f"`corral logs {name}` shows what each node said")
    doc = json.loads(raw)
    eps = [net.Endpoint(n["name"], n["addr"]) for n in doc["nodes"]]
    results = [
        net.pair_result(p["src"], p["dst"], p["recv"], duration)
        if "recv" in p
        else net.failed_pair(p["src"], p["dst"], p["error"])
        for p in doc["pairs"]
    ]
    return net.build_result(eps, doc["mode"], duration, results)


__all__ = ["measure_pair", "prepare", "run", "run_in_allocation", "run_plan"]

"""Executing container runs on a node: gather facts, check, pull, list and remove the job's containers.

Everything that touches a node or Docker for containers is here (docker itself only through
``container.docker.Docker``); the decisions are in ``container.builder`` and ``container.preflight``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from container.builder import build_plan
from container.docker import Docker
from container.facts import IbPaths, NodeFacts, probe_request
from container.plan import LABEL_JOB, LABEL_NODE, ContainerPlan, RunContext
from container.preflight import check_plan, raise_if_problems
from launcher import aio
from launcher.config import ClusterConfig
from launcher.config.job import ContainerConfig
from launcher.errors import CorralError, ToolError

log = logging.getLogger(__name__)


def paths_to_probe(cfg: ContainerConfig, ctx: RunContext) -> list[str]:
    """Every host path the plan may bind or pass through."""
    paths = [p for p in (ctx.workdir, ctx.venv, ctx.run_dir, ctx.ckpt_dir) if p]
    return paths + [m.source for m in cfg.mounts] + list(cfg.devices)


def gather_facts(
    cfg: ContainerConfig,
    ctx: RunContext,
    docker: Docker,
    *,
    ib: IbPaths = IbPaths(),
    gpus: int | None = None,
    create_dirs: bool = True,
) -> NodeFacts:
    """Probe ``docker``'s node (the node agent's one probe) and ask its engine.

    The run and checkpoint directories are created by the probe: they must exist to be bound.
    ``gpus`` (the cluster file's count) wins over detection.
    """
    ensure = [p for p in (ctx.run_dir, ctx.ckpt_dir) if p] if create_dirs else []
    request = probe_request(paths_to_probe(cfg, ctx), ib, ensure)
    data = probe_node(docker, request)
    try:
        dfacts = docker.facts([cfg.image])
    except CorralError as exc:
        log.debug("docker on %s: %s", ctx.node, exc)
        dfacts = None
    return NodeFacts.from_probe(ctx.node, data, ib, dfacts).with_gpus(gpus)


def probe_node(docker: Docker, request: dict) -> dict:
    """The ``container`` section of the node agent's probe on ``docker``'s node (``launcher.agent.remote``: one
    agent, the same GPU count and checks as preflight's)."""
    from launcher.agent import remote

    cluster = ClusterConfig(nodes=[docker.target], ssh=docker.ssh_cfg)
    reply = aio.run(remote.call(cluster, docker.target, {"op": "probe", "want": ["container"], "container": request}))
    error = reply.error or reply.data.get("agent_error")
    if error:
        raise ToolError(
            "ssh", ["corral-agent", "probe"], 255, error, hint=f"node {docker.node} must be reachable and have python3"
        )
    return reply.data["container"]


@dataclass(frozen=True)
class Prepared:
    plan: ContainerPlan
    facts: NodeFacts


def prepare(cfg: ContainerConfig, ctx: RunContext, docker: Docker, facts: NodeFacts) -> Prepared:
    """Build the plan, pull the image if allowed and missing, and fail with every problem before anything starts."""
    plan = build_plan(cfg, ctx, facts)
    pulled = False
    if facts.docker and not facts.docker.images.get(cfg.image) and cfg.pull == "missing":
        try:
            docker.pull(cfg.image)
            pulled = True
        except CorralError as exc:
            log.info("node %s: pulling %s failed: %s", ctx.node, cfg.image, exc)
    raise_if_problems(check_plan(plan, facts, image_pullable=pulled))
    return Prepared(plan, facts)


def job_containers(docker: Docker, job: str, node: str | None = None) -> list[dict]:
    """The job's containers on this engine (by label), as ``docker ps`` rows."""
    labels = {LABEL_JOB: job} | ({LABEL_NODE: node} if node else {})
    return docker.containers(labels)


def container_states(docker: Docker, job: str) -> list[dict]:
    """Per container of the job: node, name, state (running, exited, created, ...), exit code, status text."""
    return sorted(docker.states({LABEL_JOB: job}, LABEL_NODE), key=lambda x: (x["node"], x["name"]))


def remove_job_containers(docker: Docker, job: str, *, timeout: float = 10) -> list[str]:
    """Stop (SIGTERM, then SIGKILL after ``timeout``) and remove every container of the job; returns their names."""
    rows = job_containers(docker, job)
    names = [r["Names"] for r in rows]
    running = [r["Names"] for r in rows if r.get("State") == "running"]
    docker.stop(running, timeout)
    docker.remove(names)
    return names


def remove_stale(docker: Docker, plan: ContainerPlan) -> None:
    """A relaunch reuses the container name: remove an old container of that name (it has exited or is being replaced)."""
    if docker.inspect([plan.name]):
        log.info("node %s: removing the old container %s", plan.node, plan.name)
        docker.remove([plan.name])


# ---- the launch path's side: before start, ps, stop ---------------------------------------------------


T = TypeVar("T")


def on_every_node(fn: Callable[..., T], items: Sequence) -> list[T]:
    """``fn(item)`` for every node at once (each call waits on ssh and docker, not on this machine's CPU)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(fn, items))


@dataclass
class LaunchCheck:
    """What ``check_launch`` found: the facts by node label, and each node's docker with its plan."""

    facts: dict[str, NodeFacts]
    ready: list[tuple[Docker, ContainerPlan]]

    def remove_stale(self) -> None:
        """A container left from an earlier run of the same job and node is removed (its name is reused)."""
        on_every_node(lambda r: remove_stale(*r), self.ready)


def check_launch(job, cluster, nodes, *, name: str, base_dir: str, local_venv: str | None) -> LaunchCheck:
    """Before a launch: probe every node (all at once), build its plan, pull the image where allowed, check everything.

    Every problem of every node is reported at once (UserError, exit 2); nothing is started or removed.
    """
    import posixpath

    from launcher.config.paths import resolve_path
    from launcher.errors import UserError

    cfg = job.container

    def one(node) -> tuple[NodeFacts, Docker, ContainerPlan | None, list[str]]:
        ctx = RunContext(
            job=name,
            node=node.label,
            command=("torchrun",),
            workdir=resolve_path(base_dir, cluster.workdir),
            venv=cluster.venv or (local_venv if node.is_local else None),
            run_dir=resolve_path(base_dir, posixpath.join(cluster.storage.runs, name)),
            ckpt_dir=resolve_path(base_dir, posixpath.join(cluster.storage.checkpoints, name)),
        )
        docker = Docker.on(cluster, node)
        facts = gather_facts(cfg, ctx, docker, gpus=node.gpus)
        try:
            return facts, docker, prepare(cfg, ctx, docker, facts).plan, []
        except UserError as exc:
            return facts, docker, None, [ln.strip() for ln in exc.message.splitlines()[1:]] or [exc.message]

    answers = on_every_node(one, nodes)
    problems = [p for _, _, _, found in answers for p in found]
    if problems:
        raise UserError(
            f"{len(problems)} container problem(s), nothing was started:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return LaunchCheck({node.label: a[0] for node, a in zip(nodes, answers)}, [(a[1], a[2]) for a in answers])


def launch_facts(job, cluster, nodes, *, name: str, base_dir: str, local_venv: str | None) -> dict[str, NodeFacts]:
    """``check_launch``, then the stale containers removed; the facts by node label, for
    ``launcher.plan.PlanInputs.container_facts``."""
    check = check_launch(job, cluster, nodes, name=name, base_dir=base_dir, local_venv=local_venv)
    check.remove_stale()
    return check.facts


def launch_container_states(record, cluster) -> dict[str, dict]:
    """For ``ps``: node label -> its container's state row (missing when the container is gone); every node at once."""

    def one(n) -> dict:
        try:
            rows = container_states(Docker.on(cluster, _cluster_node(cluster, n)), record.name)
        except CorralError as exc:
            return {"state": "unknown", "detail": str(exc)}
        mine = [r for r in rows if r["node"] == n.node]
        return mine[0] if mine else {"state": "missing"}

    return dict(zip([n.node for n in record.plan.nodes], on_every_node(one, record.plan.nodes)))


def remove_launch_containers(record, cluster, timeout: float = 10) -> dict[str, list[str]]:
    """For ``stop``: remove the job's containers (by label) on every node of the run, all at once."""

    def one(n) -> list[str]:
        try:
            return remove_job_containers(Docker.on(cluster, _cluster_node(cluster, n)), record.name, timeout=timeout)
        except CorralError as exc:
            log.warning("node %s: could not remove the job's containers: %s", n.node, exc)
            return []

    return dict(zip([n.node for n in record.plan.nodes], on_every_node(one, record.plan.nodes)))


def _cluster_node(cluster, n):
    from launcher.config import NodeConfig

    for c in cluster.nodes:
        if c.label == n.node or c.host == n.host:
            return c
    return NodeConfig(host=n.host, name=n.node)

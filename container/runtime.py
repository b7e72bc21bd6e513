"""Executing container runs on a node: gather facts, check, pull, list and remove the job's containers.

Everything that touches a node or Docker for containers is here (docker itself only through
``container.docker.Docker``); the decisions are in ``container.builder`` and ``container.preflight``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from container.builder import build_plan
from container.docker import Docker
from container.facts import IbPaths, NodeFacts, probe_request, run_probe_local, run_probe_remote
from container.plan import LABEL_JOB, LABEL_NODE, ContainerPlan, RunContext
from container.preflight import check_plan, raise_if_problems
from launcher.config.job import ContainerConfig
from launcher.errors import CorralError

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
    ssh_argv: Sequence[str] | None = None,
    gpus: int | None = None,
    create_dirs: bool = True,
) -> NodeFacts:
    """Probe the node (in-process when local, over ``ssh_argv`` otherwise) and ask its Docker engine.

    The run and checkpoint directories are created by the probe: they must exist to be bound.
    ``gpus`` (the cluster file's count) wins over detection.
    """
    ensure = [p for p in (ctx.run_dir, ctx.ckpt_dir) if p] if create_dirs else []
    request = probe_request(paths_to_probe(cfg, ctx), ib, ensure)
    data = run_probe_remote(request, ssh_argv) if ssh_argv else run_probe_local(request)
    try:
        dfacts = docker.facts([cfg.image])
    except CorralError as exc:
        log.debug("docker on %s: %s", ctx.node, exc)
        dfacts = None
    return NodeFacts.from_probe(ctx.node, data, ib, dfacts).with_gpus(gpus)


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
    rows = job_containers(docker, job)
    details = {d["Name"].lstrip("/"): d for d in docker.inspect([r["Names"] for r in rows])}
    out = []
    for r in rows:
        d = details.get(r["Names"], {})
        state = d.get("State", {})
        out.append({
            "node": (d.get("Config", {}).get("Labels") or {}).get(LABEL_NODE, "?"),
            "name": r["Names"],
            "state": state.get("Status", r.get("State", "?")),
            "exit_code": state.get("ExitCode") if state.get("Status") == "exited" else None,
            "status": r.get("Status", ""),
            "image": r.get("Image", ""),
        })  # fmt: skip
    return sorted(out, key=lambda x: (x["node"], x["name"]))


def remove_job_containers(docker: Docker, job: str, *, timeout: float = 10) -> list[str]:
    """Stop (SIGTERM, then SIGKILL after ``timeout``) and remove every container of the job; returns their names."""
    names = [r["Names"] for r in job_containers(docker, job)]
    running = [r["Names"] for r in job_containers(docker, job) if r.get("State") == "running"]
    docker.stop(running, timeout)
    docker.remove(names)
    return names


def remove_stale(docker: Docker, plan: ContainerPlan) -> None:
    """A relaunch reuses the container name: remove an old container of that name (it has exited or is being replaced)."""
    if docker.inspect([plan.name]):
        log.info("node %s: removing the old container %s", plan.node, plan.name)
        docker.remove([plan.name])

"""What ``corral container config`` shows: a node's container run, rendered both ways, with its notes and problems."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from container.docker import Docker
from container.plan import ContainerPlan, RunContext
from launcher.config import ClusterConfig, JobConfig, NodeConfig
from launcher.errors import UserError


@dataclass(frozen=True)
class ConfigView:
    plan: ContainerPlan
    shell: str
    sdk_kwargs: dict
    sdk_gaps: list[str]
    notes: list[str]
    problems: list[str]


def _abs(base: str, path: str) -> str:
    return posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(base, path))


def _command(job: JobConfig) -> tuple[str, ...]:
    """What the container runs: torchrun on the job's script or module (the launch adds its rendezvous flags)."""
    entry = ["-m", job.module] if job.module else [job.script or ""]
    nproc = [] if job.nproc_per_node == "auto" else ["--nproc-per-node", str(job.nproc_per_node)]
    return ("torchrun", *nproc, *entry, *job.args)


def run_context(job: JobConfig, cluster: ClusterConfig, node: NodeConfig, base: str | None = None) -> RunContext:
    """The RunContext a launch of ``job`` on ``node`` would have (paths resolved like the launch resolves them)."""
    base = base or cluster.base_dir or os.getcwd()
    return RunContext(
        job=job.name,
        node=node.label,
        command=_command(job),
        workdir=_abs(base, cluster.workdir),
        venv=_abs(base, cluster.venv) if cluster.venv else None,
        run_dir=_abs(base, posixpath.join(cluster.storage.runs, job.name)),
        ckpt_dir=_abs(base, posixpath.join(cluster.storage.checkpoints, job.name)),
        env={**cluster.env, **node.env, **job.env},
    )


def pick_node(cluster: ClusterConfig, key: str | None) -> NodeConfig:
    if key is None:
        return cluster.nodes[0]
    try:
        return cluster.node(key)
    except KeyError:
        raise UserError(
            f"--node {key!r}: no such node",
            hint="the cluster's nodes are: " + ", ".join(n.label for n in cluster.nodes),
        ) from None


def node_configuration(job_path: Path, cluster_path: Path | None, node_key: str | None) -> ConfigView:
    from container.builder import build_plan
    from container.preflight import check_plan
    from container.render import render_sdk_kwargs, render_shell, sdk_gaps
    from container.runtime import gather_facts
    from launcher.config import load_cluster, load_job

    job = load_job(job_path)
    if job.container is None:
        raise UserError(
            f"{job_path}: the job has no container section", hint="add container: {image: IMAGE} to the job file"
        )
    cluster = load_cluster(cluster_path)
    node = pick_node(cluster, node_key)
    ctx = run_context(job, cluster, node)
    facts = gather_facts(job.container, ctx, Docker.on(cluster, node), gpus=node.gpus, create_dirs=False)
    plan = build_plan(job.container, ctx, facts)
    launch_makes = frozenset(p for p in (ctx.run_dir, ctx.ckpt_dir) if p)
    return ConfigView(
        plan=plan,
        shell=render_shell(plan, multiline=True),
        sdk_kwargs=render_sdk_kwargs(plan),
        sdk_gaps=sdk_gaps(plan),
        notes=list(plan.notes),
        problems=check_plan(plan, facts, will_create=launch_makes),
    )

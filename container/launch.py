"""The seam the launch path calls: the argv a node's tmux pane runs instead of torchrun itself.

``launcher.plan.container_command`` calls ``node_argv`` while building the (pure) launch plan:
the result is ``docker run ... IMAGE torchrun ...``, run attached in the pane, so logs reach the
pane and the run survives a dropped connection exactly as without a container. The job's
environment is exported by the pane's wrapper and passed into the container by name only
(``--env NAME``): values, secrets included, never appear on the docker command line.

Facts (IB paths, devices) come from ``container.runtime.gather_facts`` run before planning; without
them the plan mounts no InfiniBand paths (as with ``infiniband: off``) and says so in the plan notes.
"""

from __future__ import annotations

from collections.abc import Sequence

from container.builder import build_plan
from container.facts import NodeFacts
from container.plan import ContainerPlan, RunContext
from container.render import render_docker_argv
from launcher.config.job import ContainerConfig
from launcher.errors import UserError


def node_context(
    inner_argv: Sequence[str],
    *,
    job_name: str,
    node: str,
    env_names: Sequence[str],
    workdir: str,
    mounts: Sequence[str] = (),
    venv: str | None = None,
    labels: dict[str, str] | None = None,
    aliases: Sequence[str] = (),
) -> RunContext:
    """The RunContext for a launch: ``mounts`` is [run_dir, ckpt_dir, ...more paths bound at the same place]."""
    run_dir, ckpt_dir = (list(mounts) + [None, None])[:2]
    return RunContext(
        job=job_name,
        node=node,
        command=tuple(inner_argv),
        workdir=workdir,
        venv=venv,
        run_dir=run_dir,
        ckpt_dir=ckpt_dir,
        env={k: None for k in env_names},
        labels=dict(labels or {}),
        aliases=tuple(aliases),
    )


def node_plan(container: ContainerConfig, ctx: RunContext, facts: NodeFacts | None, gpus: int) -> ContainerPlan:
    if facts is None:
        if container.infiniband == "required":
            raise UserError(
                f"node {ctx.node}: container.infiniband is 'required' but the node's facts were not gathered"
            )
        facts = NodeFacts(node=ctx.node, gpu_count=gpus)
        container = container.model_copy(update={"infiniband": "off"})
    return build_plan(container, ctx, facts)


def node_argv(
    container: ContainerConfig,
    inner_argv: list[str],
    *,
    node: str,
    env_names: Sequence[str],
    workdir: str,
    gpus: int,
    mounts: Sequence[str] = (),
    job_name: str | None = None,
    venv: str | None = None,
    facts: NodeFacts | None = None,
    labels: dict[str, str] | None = None,
) -> list[str]:
    """``docker run ...`` around ``inner_argv`` for one node (see the module docstring)."""
    if not job_name:
        raise UserError("container: the launch path must pass job_name to container.launch.node_argv")
    ctx = node_context(
        inner_argv,
        job_name=job_name,
        node=node,
        env_names=env_names,
        workdir=workdir,
        mounts=mounts,
        venv=venv,
        labels=labels,
    )
    return render_docker_argv(node_plan(container, ctx, facts, gpus))

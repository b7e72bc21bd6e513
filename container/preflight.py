"""Checks on a plan against the node's facts, before any container starts. Pure: facts in, problems out.

Each problem names the node and the config field, and says what to do: a run that would fail at
``docker run`` on one node of sixteen after the others started is worse than no run.
"""

from __future__ import annotations

from container.docker import NVIDIA_HINT
from container.facts import NodeFacts
from container.plan import UNLIMITED, ContainerPlan
from launcher.errors import UserError
from launcher.units import format_size

KIND_WORDS = {
    "file": "a regular file",
    "dir": "a directory",
    "other": "not a device",
    "missing": "missing",
    None: "not probed",
}


def check_plan(
    plan: ContainerPlan, facts: NodeFacts, *, image_pullable: bool = False, will_create: frozenset[str] = frozenset()
) -> list[str]:
    """Every reason this plan cannot run on this node (empty: go); ``will_create``: directories a launch makes first."""
    n = facts.node
    problems: list[str] = []
    if facts.docker is None:
        problems.append(f"node {n}: Docker is not reachable; install it and start dockerd")
        return problems
    if not facts.docker.images.get(plan.image, False) and not image_pullable:
        problems.append(
            f"node {n}: container.image {plan.image!r} is not present on the node and could not be pulled; "
            f"build or load it there (docker build / docker load), or fix the name"
        )
    problems += _mount_problems(plan, facts, will_create)
    problems += _device_problems(plan, facts)
    if plan.gpus is not None and not facts.gpu_capable_docker:
        problems.append(f"node {n}: container.gpus requests GPUs but {NVIDIA_HINT}")
    problems += _ulimit_problems(plan, facts)
    return problems


def _mount_problems(plan: ContainerPlan, facts: NodeFacts, will_create: frozenset[str]) -> list[str]:
    out = []
    for m in plan.mounts:
        if m.source in will_create:
            continue
        if m.source in facts.mkdir_errors:
            out.append(
                f"node {facts.node}: cannot create the {m.why} directory {m.source}: {facts.mkdir_errors[m.source]}"
            )
        elif facts.kind(m.source) in ("missing", None):
            field = "container.mounts" if m.why == "extra" else f"the cluster's {m.why}"
            out.append(
                f"node {facts.node}: mount source {m.source} ({m.why}) does not exist on the node; create it or fix {field}"
            )
    return out


def _device_problems(plan: ContainerPlan, facts: NodeFacts) -> list[str]:
    out = []
    for d in plan.devices:
        kind = facts.kind(d.host) or facts.devices.get(facts.ib.dev_dir, {}).get(d.host)
        if kind not in ("char", "block"):
            out.append(
                f"node {facts.node}: device {d.host} is {KIND_WORDS.get(kind, kind)}, not a device node; fix container.devices"
            )
    return out


def _ulimit_problems(plan: ContainerPlan, facts: NodeFacts) -> list[str]:
    rl = facts.rlimits
    if rl is None or rl.can_raise:
        return []
    out = []
    for name, hard in (("memlock", rl.memlock_hard), ("stack", rl.stack_hard)):
        want = plan.ulimits.get(name)
        if want is None or hard == UNLIMITED:
            continue
        if want == UNLIMITED or want > hard:
            asked = "unlimited" if want == UNLIMITED else format_size(want)
            out.append(
                f"node {facts.node}: container.ulimits.{name} {asked} is above the node's hard limit of {format_size(hard)} "
                f"({rl.source}), which the container runtime cannot raise; set container.ulimits.{name}: {format_size(hard)} "
                f"(works here) or raise the limit for dockerd (e.g. LimitMEMLOCK=infinity in its systemd unit)"
            )
    return out


def raise_if_problems(problems: list[str]) -> None:
    if problems:
        raise UserError(
            f"{len(problems)} container problem(s), nothing was started:\n" + "\n".join(f"  {p}" for p in problems)
        )

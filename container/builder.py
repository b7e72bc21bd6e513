"""The pure builder: a job's ``container`` section + one node's facts + its run context -> a ContainerPlan.

Rules (docs/CONTAINERS.md explains why each exists):
- InfiniBand devices and NCCL mounts from the cloud's guidance, only those the node has; a missing
  one is a note, an error only with ``infiniband: required``;
- GPUs ('all' or a list; none on a CPU-only node); host network and host IPC by default;
- ulimits memlock unlimited and stack 64 MiB (configurable); the IPC_LOCK capability;
- workdir, venv, run dir and checkpoint dir bind-mounted at the same paths, so checkpoints land on
  the node's disk and not in the container layer;
- labels naming the job and node; never privileged unless asked.
No side effects: every fact comes in through ``NodeFacts``.
"""

from __future__ import annotations

import re

from container.facts import NodeFacts
from container.plan import LABEL_JOB, LABEL_NODE, UNLIMITED, ContainerPlan, Device, Mount, RunContext
from launcher.config.job import ContainerConfig
from launcher.errors import UserError

ALWAYS_CAPS = ("IPC_LOCK",)
"""RDMA pins memory (ibv_reg_mr); IPC_LOCK lets it exceed RLIMIT_MEMLOCK where the host allows."""

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_name(job: str, node: str) -> str:
    """``corral-<job>-<node>``: one container per job and node, so a relaunch replaces the old one by name."""
    return "corral-" + re.sub(r"[^A-Za-z0-9_.-]", "-", f"{job}-{node}")


def build_plan(cfg: ContainerConfig, ctx: RunContext, facts: NodeFacts) -> ContainerPlan:
    """Decide the whole container run for one node; raises UserError for a rule the node cannot meet."""
    ib_mounts, ib_devices, notes = _infiniband(cfg, facts)
    extra_devices = tuple(Device(d, d) for d in cfg.devices)
    return ContainerPlan(
        node=ctx.node,
        name=container_name(ctx.job, ctx.node),
        image=cfg.image,
        command=tuple(ctx.command),
        workdir=ctx.workdir,
        mounts=_dedupe(_run_mounts(ctx) + ib_mounts + _extra_mounts(cfg)),
        devices=ib_devices + extra_devices,
        env=_env(cfg, ctx),
        env_file=ctx.env_file,
        labels={**cfg.labels, **ctx.labels, LABEL_JOB: ctx.job, LABEL_NODE: ctx.node},
        gpus=_gpus(cfg, facts),
        network=cfg.network,
        aliases=() if cfg.network == "host" else tuple(dict.fromkeys((ctx.node, *ctx.aliases))),
        ipc=cfg.ipc,
        shm_size=_shm(cfg),
        ulimits={name: _ulimit(getattr(cfg.ulimits, name)) for name in ("memlock", "stack")},
        cap_add=tuple(dict.fromkeys((*ALWAYS_CAPS, *cfg.cap_add))),
        privileged=cfg.privileged,
        user=cfg.user,
        extra_args=tuple(cfg.extra_args),
        notes=tuple(notes),
    )


def _run_mounts(ctx: RunContext) -> tuple[Mount, ...]:
    wanted = [
        ("workdir", ctx.workdir, False),
        ("venv", ctx.venv, True),
        ("runs", ctx.run_dir, False),
        ("checkpoints", ctx.ckpt_dir, False),
    ]
    return tuple(Mount(path, path, ro, why) for why, path, ro in wanted if path)


def _extra_mounts(cfg: ContainerConfig) -> tuple[Mount, ...]:
    return tuple(Mount(m.source, m.target or m.source, m.read_only, "extra") for m in cfg.mounts)


def _dedupe(mounts: tuple[Mount, ...]) -> tuple[Mount, ...]:
    """One mount per container path (docker refuses duplicates); the first one wins (run paths before extras)."""
    seen: dict[str, Mount] = {}
    for m in mounts:
        seen.setdefault(m.target.rstrip("/") or "/", m)
    return tuple(seen.values())


def _infiniband(cfg: ContainerConfig, facts: NodeFacts) -> tuple[tuple[Mount, ...], tuple[Device, ...], list[str]]:
    """The cloud's guidance, filtered by what the node has: devices, /dev/infiniband, sysfs, /etc/nccl, nccl.conf (ro)."""
    if cfg.infiniband == "off":
        return (), (), []
    expected = {"dev_dir": "dir", "sys_dir": "dir", "nccl_dir": "dir", "nccl_conf": "file"}
    mounts: list[Mount] = []
    missing: list[str] = []
    for role, host, target in facts.ib.items():
        kind = facts.kind(host)
        if kind != expected[role]:
            missing.append(
                f"{host} ({kind or 'not probed'}, expected a {'directory' if expected[role] == 'dir' else 'file'})"
            )
            continue
        why = "nccl" if role.startswith("nccl") else "infiniband"
        mounts.append(Mount(host, target, role == "nccl_conf", why))
    devices = _ib_devices(facts)
    if facts.kind(facts.ib.dev_dir) == "dir" and not devices:
        missing.append(f"{facts.ib.dev_dir}/* (no device nodes in it)")
    if missing and cfg.infiniband == "required":
        raise UserError(
            f"node {facts.node}: container.infiniband is 'required' but the node lacks: {'; '.join(missing)}",
            hint="check the node's InfiniBand driver (ibv_devices) and NCCL configuration, or set container.infiniband: auto",
        )
    notes = [f"node {facts.node}: InfiniBand/NCCL paths missing, not mounted: {'; '.join(missing)}"] if missing else []
    return tuple(mounts), devices, notes


def _ib_devices(facts: NodeFacts) -> tuple[Device, ...]:
    """Each device node under the IB device directory, at the standard container path."""
    entries = facts.devices.get(facts.ib.dev_dir, {})
    std = "/dev/infiniband"
    return tuple(
        Device(path, std + path[len(facts.ib.dev_dir) :])
        for path, kind in sorted(entries.items())
        if kind in ("char", "block")
    )


def _gpus(cfg: ContainerConfig, facts: NodeFacts):
    if cfg.gpus == "none" or (cfg.gpus == "all" and facts.gpu_count == 0):
        return None
    if cfg.gpus == "all":
        return "all"
    too_big = [i for i in cfg.gpus if i >= facts.gpu_count]
    if too_big:
        raise UserError(
            f"node {facts.node}: container.gpus lists GPU(s) {too_big} but the node has {facts.gpu_count} GPU(s)",
            hint="use gpus: all, or indices from 0 to the node's GPU count - 1"
            if facts.gpu_count
            else "use gpus: none on a CPU-only node",
        )
    return tuple(cfg.gpus)


def _env(cfg: ContainerConfig, ctx: RunContext) -> dict[str, str | None]:
    env: dict[str, str | None] = dict(ctx.env)
    if ctx.venv:
        # No shell inside the container to `source activate`: put the venv first on PATH instead.
        env["VIRTUAL_ENV"] = ctx.venv
        env["PATH"] = f"{ctx.venv}/bin:{DEFAULT_PATH}"
    env.update(cfg.env)
    return env


def _shm(cfg: ContainerConfig) -> int | None:
    if cfg.shm_size is None:
        return None
    from launcher.units import parse_size

    return parse_size(cfg.shm_size, what="container.shm_size")


def _ulimit(value: int | str) -> int:
    return UNLIMITED if value == "unlimited" else int(value)

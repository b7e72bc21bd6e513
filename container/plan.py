"""The container run plan: plain data from which both the ``docker run`` argv and the SDK kwargs are rendered.

Nothing here touches docker. ``RunContext`` is what the launch path knows about one node's run
(job name, paths, env, the torchrun argv); ``ContainerPlan`` is what the builder decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LABEL_JOB = "corral.job"
LABEL_NODE = "corral.node"
UNLIMITED = -1
"""docker's spelling of an unlimited ulimit."""


@dataclass(frozen=True)
class RunContext:
    """One node's run as the launch path sees it; every path is absolute and the same on node and container."""

    job: str
    node: str
    command: tuple[str, ...]
    workdir: str
    venv: str | None = None
    run_dir: str | None = None
    ckpt_dir: str | None = None
    env: dict[str, str | None] = field(default_factory=dict)
    """Values, or None for a name passed through from the environment ``docker run`` itself runs in
    (the launch wrapper exports the job's env, secrets included, so no value lands on a command line)."""
    env_file: str | None = None
    """A KEY=VALUE file on the node (0600, written by the launch path): secrets stay off command lines."""
    labels: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    """Extra names other containers resolve this one by on a user-defined network (e.g. the node's host)."""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool
    why: str
    """workdir, venv, runs, checkpoints, infiniband, nccl or extra: shown in plans and errors."""


@dataclass(frozen=True)
class Device:
    host: str
    container: str
    perms: str = "rwm"


@dataclass(frozen=True)
class ContainerPlan:
    node: str
    name: str
    image: str
    command: tuple[str, ...]
    workdir: str
    mounts: tuple[Mount, ...]
    devices: tuple[Device, ...]
    env: dict[str, str | None]
    env_file: str | None
    labels: dict[str, str]
    gpus: Literal["all"] | tuple[int, ...] | None
    network: str
    aliases: tuple[str, ...]
    ipc: str
    shm_size: int | None
    ulimits: dict[str, int]
    cap_add: tuple[str, ...]
    privileged: bool
    user: str | None
    extra_args: tuple[str, ...]
    init: bool = True
    """Run docker's tiny init as PID 1 so torchrun's exited workers are reaped and signals are forwarded."""
    notes: tuple[str, ...] = ()
    """Things people should know (an InfiniBand path the node lacks); not errors."""

    @property
    def hostname(self) -> str | None:
        """On a user-defined network the container gets its own name as hostname; with the host network it keeps the node's."""
        return None if self.network == "host" else self.name

    def to_dict(self) -> dict:
        """A printable, JSON-ready form of the plan (for --dry-run and --json)."""
        from dataclasses import asdict

        return asdict(self) | {"hostname": self.hostname}

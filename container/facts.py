"""What we know about one node before building its container run: paths, devices, GPUs, limits, docker.

Facts are plain data, so the builder and the preflight checks stay pure and tests can hand them
stand-in paths (a mknod'ed ``uverbs0`` under a temp dir) instead of the real ``/dev/infiniband``.
They are gathered by ``container.runtime.gather_facts``: the node agent's one probe (its
``container`` section, through ``launcher.agent.remote``) plus docker queries through ``container.docker``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IbPaths:
    """The cloud's InfiniBand/NCCL paths on the node (host side); inside the container they keep the standard paths.

    ``IbPaths.under(root)`` points every host path at a stand-in tree, for tests.
    """

    dev_dir: str = "/dev/infiniband"
    sys_dir: str = "/sys/class/infiniband"
    nccl_dir: str = "/etc/nccl"
    nccl_conf: str = "/etc/nccl.conf"

    @classmethod
    def under(cls, root: str | Path) -> IbPaths:
        std = cls()
        return cls(**{k: f"{str(root).rstrip('/')}{v}" for k, v in std.__dict__.items()})

    def items(self) -> list[tuple[str, str, str]]:
        """(role, host path, container path), in the order of the cloud's guidance."""
        std = IbPaths()
        return [(k, getattr(self, k), getattr(std, k)) for k in ("dev_dir", "sys_dir", "nccl_dir", "nccl_conf")]


@dataclass(frozen=True)
class DockerFacts:
    """The node's Docker engine as far as a run needs it."""

    server_version: str
    runtimes: tuple[str, ...]
    images: dict[str, bool] = field(default_factory=dict)
    """image reference -> present locally."""

    @property
    def has_nvidia(self) -> bool:
        return "nvidia" in self.runtimes


@dataclass(frozen=True)
class Rlimits:
    """Hard limits a container can get on this node (-1 = unlimited) and whether they can be raised."""

    memlock_hard: int
    stack_hard: int
    can_raise: bool
    source: str


@dataclass(frozen=True)
class NodeFacts:
    node: str
    gpu_count: int
    ib: IbPaths = field(default_factory=IbPaths)
    paths: dict[str, str] = field(default_factory=dict)
    """path -> 'char' | 'block' | 'dir' | 'file' | 'other' | 'missing'."""
    devices: dict[str, dict[str, str]] = field(default_factory=dict)
    """device directory -> {entry path: kind}."""
    rlimits: Rlimits | None = None
    docker: DockerFacts | None = None
    tools: dict[str, str | None] = field(default_factory=dict)
    """NVIDIA container toolkit binaries found on the node (name -> path or None)."""
    mkdir_errors: dict[str, str] = field(default_factory=dict)
    """Run/checkpoint directories the probe could not create, with the reason."""

    @property
    def gpu_capable_docker(self) -> bool:
        """dockerd offers --gpus only with the NVIDIA container toolkit's hook on its PATH (or an 'nvidia' runtime)."""
        return bool(self.tools.get("nvidia-container-runtime-hook")) or bool(self.docker and self.docker.has_nvidia)

    def kind(self, path: str) -> str | None:
        """A path's kind, or None when it was not probed."""
        return self.paths.get(path)

    @classmethod
    def from_probe(cls, node: str, data: dict, ib: IbPaths, docker: DockerFacts | None = None) -> NodeFacts:
        rl = data.get("rlimits") or {}
        limits = rl.get("limits") or {}
        rlimits = None
        if limits:
            rlimits = Rlimits(
                memlock_hard=int(limits["memlock"][1]),
                stack_hard=int(limits["stack"][1]),
                can_raise=bool(rl.get("can_raise")),
                source=str(rl.get("source", "")),
            )
        return cls(
            node=node,
            gpu_count=int(data.get("gpu_count", 0)),
            ib=ib,
            paths=dict(data.get("paths", {})),
            devices={d: dict(e) for d, e in data.get("devices", {}).items()},
            rlimits=rlimits,
            docker=docker,
            tools=dict(data.get("tools", {})),
            mkdir_errors=dict(data.get("mkdir_errors", {})),
        )

    def with_gpus(self, count: int | None) -> NodeFacts:
        """The cluster file's gpus count wins over detection when given."""
        return self if count is None else replace(self, gpu_count=count)


def probe_request(paths: Sequence[str], ib: IbPaths, ensure_dirs: Sequence[str] = ()) -> dict:
    """What to ask the probe: every path the run will use, the IB device directory to list, the dirs to create."""
    wanted = [p for _, p, _ in ib.items()]
    return {
        "paths": sorted(set(wanted) | set(paths) | set(ensure_dirs)),
        "device_dirs": [ib.dev_dir],
        "ensure_dirs": list(ensure_dirs),
    }

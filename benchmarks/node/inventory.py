"""What a node is made of, besides its GPUs: CPU, memory, disks, network, InfiniBand, NCCL config, NUMA, versions.

The standard-library facts come from the node agent's one probe (``launcher.agent.node_agent``: the same
readers and the same GPU count that preflight and the container facts use); only the torch/CUDA/NCCL
versions are read here, in the worker that has torch. Every reader takes ``root`` (default ``/``) so
tests can point it at a small tree laid out like sysfs; nothing raises for a missing file.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from launcher.agent import node_agent
from launcher.agent.node_agent import cpu_info, disks, infiniband, memory_bytes, nccl_config, network_interfaces, numa

__all__ = [
    "cpu_info",
    "disks",
    "host_inventory",
    "infiniband",
    "memory_bytes",
    "nccl_config",
    "network_interfaces",
    "numa",
    "versions",
]


def versions() -> dict[str, Any]:
    """Python, torch and its CUDA/NCCL builds (imported here: the probe runs apart from the CLI)."""
    out: dict[str, Any] = {"python": platform.python_version(), "kernel": platform.release()}
    try:
        import torch
    except ImportError:
        out["torch"] = None
        return out
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    nccl = None
    if torch.cuda.is_available():
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
        except Exception as exc:  # noqa: BLE001 - a version string is informational
            nccl = f"unknown ({exc})"
    out["nccl"] = nccl
    return out


def host_inventory(root: Path | str = "/") -> dict[str, Any]:
    """The agent's stdlib inventory, with torch's versions added."""
    inv = node_agent.host_inventory(root)
    inv["versions"] = {**inv["versions"], **versions()}
    return inv

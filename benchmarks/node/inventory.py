"""What a node is made of, besides its GPUs: CPU, memory, disks, network, InfiniBand, NCCL config, NUMA, versions.

Every reader takes ``root`` (default ``/``) so tests can point it at a small tree laid out like sysfs;
nothing here raises for a missing file: absent facts read as ``None`` or an empty list, and the
reason is said where a person would want it (NUMA, InfiniBand).
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpu_info(root: Path) -> dict[str, Any]:
    model = None
    for line in (_read(root / "proc/cpuinfo") or "").splitlines():
        if line.startswith("model name") and ":" in line:
            model = line.split(":", 1)[1].strip()
            break
    return {"model": model or platform.processor() or None, "count": os.cpu_count()}


def memory_bytes(root: Path) -> int | None:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def disks(root: Path) -> list[dict[str, Any]]:
    """Block devices (not loop, ram or device-mapper children), size and whether rotational."""
    out = []
    block = root / "sys/block"
    for dev in sorted(block.iterdir()) if block.is_dir() else []:
        if dev.name.startswith(("loop", "ram", "zram")):
            continue
        sectors = _int(_read(dev / "size"))
        out.append({
            "name": dev.name,
            "size_bytes": sectors * 512 if sectors is not None else None,
            "rotational": _read(dev / "queue/rotational") == "1",
            "model": _read(dev / "device/model"),
        })
    return out


def network_interfaces(root: Path) -> list[dict[str, Any]]:
    """Interfaces with MTU, state and link speed (Mb/s; virtual NICs often report none)."""
    out = []
    net = root / "sys/class/net"
    for dev in sorted(net.iterdir()) if net.is_dir() else []:
        if dev.name == "lo":
            continue
        speed = _int(_read(dev / "speed"))
        out.append({
            "name": dev.name,
            "mtu": _int(_read(dev / "mtu")),
            "state": _read(dev / "operstate"),
            "speed_mbps": speed if speed is not None and speed > 0 else None,
            "virtual": not (dev / "device").exists(),
        })
    return out


def infiniband(root: Path) -> dict[str, Any]:
    """HCAs from /sys/class/infiniband: per port state (e.g. '4: ACTIVE'), rate ('400 Gb/sec (4X NDR)'), link layer."""
    base = root / "sys/class/infiniband"
    if not base.is_dir():
        return {"present": False, "reason": "no /sys/class/infiniband (no InfiniBand or RoCE HCA, or its driver is not loaded)", "hcas": []}
    hcas = []
    for hca in sorted(base.iterdir()):
        ports = []
        for port in sorted((hca / "ports").iterdir()) if (hca / "ports").is_dir() else []:
            state = _read(port / "state")
            ports.append({
                "port": _int(port.name),
                "state": state.split(":", 1)[-1].strip() if state else None,
                "physical_state": (_read(port / "phys_state") or "").split(":", 1)[-1].strip() or None,
                "rate": _read(port / "rate"),
                "link_layer": _read(port / "link_layer"),
            })
        hcas.append({"name": hca.name, "firmware": _read(hca / "fw_ver"), "ports": ports})
    return {"present": bool(hcas), "reason": None if hcas else "/sys/class/infiniband is empty", "hcas": hcas}


def nccl_config(root: Path) -> dict[str, Any]:
    """System NCCL settings: /etc/nccl.conf and files under /etc/nccl/, plus NCCL_* in the environment."""
    files = {}
    conf = root / "etc/nccl.conf"
    if conf.is_file():
        files[str(Path("/") / conf.relative_to(root))] = _read(conf)
    d = root / "etc/nccl"
    for f in sorted(d.rglob("*")) if d.is_dir() else []:
        if f.is_file():
            files[str(Path("/") / f.relative_to(root))] = _read(f)
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")}
    return {"files": files, "env": env}


def numa(root: Path) -> dict[str, Any]:
    """NUMA nodes as the kernel exposes them, and whether CPU affinity can be queried at all."""
    nodes_dir = root / "sys/devices/system/node"
    nodes = sorted(p.name for p in nodes_dir.glob("node[0-9]*")) if nodes_dir.is_dir() else []
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    if not nodes:
        reason = "NUMA topology is not exposed (no /sys/devices/system/node): CPU/GPU affinity cannot be set"
    elif len(nodes) == 1:
        reason = "one NUMA node exposed: CPU affinity per GPU is not available (common on cloud VMs)"
    else:
        reason = None
    return {"nodes": len(nodes), "exposed": len(nodes) > 1, "cpu_affinity": affinity, "reason": reason}


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
    root = Path(root)
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_info(root),
        "memory_bytes": memory_bytes(root),
        "disks": disks(root),
        "network": network_interfaces(root),
        "infiniband": infiniband(root),
        "nccl_config": nccl_config(root),
        "numa": numa(root),
        "versions": versions(),
    }

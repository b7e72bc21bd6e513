"""Host inventory: read from this machine for real, and from a small tree laid out like sysfs for what it lacks (InfiniBand, NUMA)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.node import inventory
from benchmarks.node.judge import PASS, SKIP, WARN, _check_infiniband


def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def test_this_machine_inventory_is_complete_and_never_raises():
    inv = inventory.host_inventory()
    assert inv["cpu"]["count"] >= 1 and inv["memory_bytes"] > 0
    assert isinstance(inv["disks"], list) and isinstance(inv["network"], list)
    assert inv["versions"]["python"] and inv["versions"]["torch"]
    assert inv["numa"]["nodes"] >= 0 and ("reason" in inv["numa"])
    assert set(inv["infiniband"]) == {"present", "reason", "hcas"}


def test_sysfs_tree_with_infiniband_numa_nccl_and_nics(tmp_path):
    root = tmp_path
    _write(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    _write(root, "proc/meminfo", "MemTotal:       2113378304 kB\nMemFree: 1 kB")
    _write(root, "sys/block/nvme0n1/size", "7501476528")
    _write(root, "sys/block/nvme0n1/queue/rotational", "0")
    _write(root, "sys/block/loop0/size", "8")
    _write(root, "sys/class/net/ens7/mtu", "9000")
    _write(root, "sys/class/net/ens7/speed", "100000")
    _write(root, "sys/class/net/ens7/operstate", "up")
    (root / "sys/class/net/ens7/device").mkdir()
    _write(root, "sys/class/net/veth0/speed", "-1")
    for port, state, phys in ((1, "4: ACTIVE", "5: LinkUp"), (2, "1: DOWN", "3: Disabled")):
        _write(root, f"sys/class/infiniband/mlx5_0/ports/{port}/state", state)
        _write(root, f"sys/class/infiniband/mlx5_0/ports/{port}/phys_state", phys)
        _write(root, f"sys/class/infiniband/mlx5_0/ports/{port}/rate", "400 Gb/sec (4X NDR)")
        _write(root, f"sys/class/infiniband/mlx5_0/ports/{port}/link_layer", "InfiniBand")
    _write(root, "sys/class/infiniband/mlx5_0/fw_ver", "28.39.1002")
    _write(root, "etc/nccl.conf", "NCCL_IB_HCA=mlx5")
    _write(root, "etc/nccl/topo.xml", "<system/>")
    (root / "sys/devices/system/node/node0").mkdir(parents=True)
    (root / "sys/devices/system/node/node1").mkdir(parents=True)

    assert inventory.cpu_info(root)["model"] == "AMD EPYC 9654 96-Core Processor"
    assert inventory.memory_bytes(root) == 2113378304 * 1024
    assert inventory.disks(root) == [
        {"name": "nvme0n1", "size_bytes": 7501476528 * 512, "rotational": False, "model": None}
    ]
    nics = {n["name"]: n for n in inventory.network_interfaces(root)}
    assert nics["ens7"] == {"name": "ens7", "mtu": 9000, "state": "up", "speed_mbps": 100000, "virtual": False}
    assert nics["veth0"]["speed_mbps"] is None and nics["veth0"]["virtual"] is True
    ib = inventory.infiniband(root)
    assert ib["present"] and ib["hcas"][0]["firmware"] == "28.39.1002"
    assert ib["hcas"][0]["ports"][0] == {
        "port": 1,
        "state": "ACTIVE",
        "physical_state": "LinkUp",
        "rate": "400 Gb/sec (4X NDR)",
        "link_layer": "InfiniBand",
    }
    check = _check_infiniband(ib)
    assert check.status == WARN and check.reason == "not active: mlx5_0 port 2 DOWN"
    nccl = inventory.nccl_config(root)
    assert nccl["files"] == {"/etc/nccl.conf": "NCCL_IB_HCA=mlx5", "/etc/nccl/topo.xml": "<system/>"}
    numa = inventory.numa(root)
    assert numa["exposed"] and numa["nodes"] == 2 and numa["reason"] is None


def test_missing_numa_and_infiniband_are_said_not_raised(tmp_path):
    numa = inventory.numa(tmp_path)
    assert not numa["exposed"] and "not exposed" in numa["reason"]
    ib = inventory.infiniband(tmp_path)
    assert not ib["present"] and "/sys/class/infiniband" in ib["reason"]
    assert _check_infiniband(ib).status == SKIP
    _write(tmp_path, "sys/class/infiniband/mlx5_0/ports/1/state", "4: ACTIVE")
    assert _check_infiniband(inventory.infiniband(tmp_path)).status == PASS


def test_cpu_limit_is_the_tightest_quota_on_the_cgroup_path_v1(tmp_path):
    _write(tmp_path, "proc/self/cgroup", "5:memory:/a\n3:cpu,cpuacct:/job/step\n0::/")
    grp = "sys/fs/cgroup/cpu,cpuacct"
    _write(tmp_path, f"{grp}/cpu.cfs_quota_us", "-1")
    _write(tmp_path, f"{grp}/cpu.cfs_period_us", "100000")
    _write(tmp_path, f"{grp}/job/cpu.cfs_quota_us", "5000")  # the parent's 5% binds the child's 200%
    _write(tmp_path, f"{grp}/job/cpu.cfs_period_us", "100000")
    _write(tmp_path, f"{grp}/job/cpu.stat", "nr_periods 40\nnr_throttled 31\nthrottled_time 99")
    _write(tmp_path, f"{grp}/job/step/cpu.cfs_quota_us", "200000")
    _write(tmp_path, f"{grp}/job/step/cpu.cfs_period_us", "100000")
    limit = inventory.node_agent.cpu_limit(tmp_path)
    assert limit["quota_cpus"] == 0.05 and limit["nr_throttled"] == 31
    assert limit["cgroup"] == "/sys/fs/cgroup/cpu,cpuacct/job" and (limit["quota_us"], limit["period_us"]) == (
        5000,
        100000,
    )


def test_cpu_limit_v2_cpu_max_and_no_limit(tmp_path):
    _write(tmp_path, "proc/self/cgroup", "0::/system.slice/train.service")
    _write(tmp_path, "sys/fs/cgroup/cgroup.controllers", "cpu memory")
    _write(tmp_path, "sys/fs/cgroup/system.slice/train.service/cpu.max", "400000 100000")
    _write(tmp_path, "sys/fs/cgroup/system.slice/train.service/cpu.stat", "usage_usec 5\nnr_throttled 0")
    limit = inventory.node_agent.cpu_limit(tmp_path)
    assert limit["quota_cpus"] == 4.0 and limit["nr_throttled"] == 0
    _write(tmp_path, "sys/fs/cgroup/system.slice/train.service/cpu.max", "max 100000")
    assert inventory.node_agent.cpu_limit(tmp_path)["quota_cpus"] is None
    nothing = inventory.node_agent.cpu_limit(tmp_path / "absent")
    assert nothing["readable"] is False and nothing["quota_cpus"] is None


def test_this_process_under_a_real_cfs_quota_reads_it():
    """A child started in a cgroup v1 ``cpu`` group with a 5% quota reads that quota (skipped where the host
    has no v1 cpu hierarchy to write)."""
    import os
    import subprocess
    import sys

    import pytest

    from tests.infra import faults

    base = faults.CGROUP_V1 / "cpu"
    if not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
        pytest.skip("no writable cgroup v1 cpu hierarchy")
    with faults.group("cpu", "quota-read", {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "5000"}) as group:
        code = "from pathlib import Path; from launcher.agent.node_agent import cpu_limit; print(cpu_limit(Path('/')))"
        out = subprocess.run(
            [sys.executable, "-c", code],
            preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert "'quota_cpus': 0.05" in out and group.name in out

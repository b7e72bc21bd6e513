"""Faults injected into one simulated node (or one link), for the acceptance tests of ``corral bench cluster``.

Each is a context manager that undoes exactly what it did, on any exit:
- ``cpu_quota``: a cgroup v1 ``cpu`` group with a CFS quota (e.g. 15% of one core); the node's sshd goes in,
  so everything later started over that node's ssh (the tmux server of a fresh socket, the jobs) inherits it;
- ``write_cap``: a cgroup v1 ``blkio`` group capping writes to one block device, the same way;
- ``link_cap``: a ``tbf`` qdisc on the node's ``eth0`` (what it sends) and on its host-side veth (what it
  receives);
- ``pair_cap``: the link between two nodes only: an ``htb`` qdisc on each end's ``eth0`` with an unlimited default
  class and a capped one, and a ``u32`` filter sending the traffic to the other end's address into the capped
  class (``prio`` is not in this machine's kernel).

On exit the processes in a group (the sshd and whatever it started meanwhile) go back to the root group
before the group is removed; qdiscs are deleted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup")


def sshd_pid(sim, node) -> int:
    """The PID of the node's sshd (``nsenter`` execs it, so the Popen's PID is sshd's)."""
    return sim._sshds[sim.node(node).index].pid


def _procs(group: Path) -> list[int]:
    try:
        return [int(x) for x in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


@contextlib.contextmanager
def group(controller: str, tag: str, settings: dict[str, str], pid: int | None = None) -> Iterator[Path]:
    """A fresh cgroup v1 group of ``controller`` with ``settings``, holding ``pid`` if given (else the caller
    puts processes in); on exit its processes go back to the root group and it is removed."""
    made = CGROUP_V1 / controller / f"corral-fault-{tag}-{os.getpid()}-{secrets.token_hex(3)}"
    made.mkdir()
    try:
        for name, value in settings.items():
            (made / name).write_text(value)
        if pid is not None:
            (made / "cgroup.procs").write_text(str(pid))
        yield made
    finally:
        root = CGROUP_V1 / controller / "cgroup.procs"
        for _ in range(50):
            for p in _procs(made):
                with contextlib.suppress(OSError):  # a process that exited meanwhile
                    root.write_text(str(p))
            try:
                made.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def cpu_quota(sim, node, percent: int) -> Iterator[Path]:
    """At most ``percent`` % of one core for everything started over ``node``'s ssh from now on."""
    period = 100_000
    settings = {"cpu.cfs_period_us": str(period), "cpu.cfs_quota_us": str(period * percent // 100)}
    with group("cpu", "cpu", settings, sshd_pid(sim, node)) as g:
        yield g


def block_device_of(path: str | os.PathLike) -> str:
    """MAJ:MIN of the whole disk holding ``path`` (blkio throttles whole devices, not partitions)."""
    dev = os.stat(path).st_dev
    majmin = f"{os.major(dev)}:{os.minor(dev)}"
    part = Path(f"/sys/dev/block/{majmin}")
    if (part / "partition").exists():
        return (part.resolve().parent / "dev").read_text().strip()
    return majmin


@contextlib.contextmanager
def write_cap(sim, node, path: str | os.PathLike, mibps: float) -> Iterator[Path]:
    """Writes by ``node``'s processes to the disk holding ``path`` capped at ``mibps`` MiB/s (O_DIRECT writes)."""
    settings = {"blkio.throttle.write_bps_device": f"{block_device_of(path)} {int(mibps * (1 << 20))}"}
    with group("blkio", "blkio", settings, sshd_pid(sim, node)) as g:
        yield g


def _tbf(mbit: int) -> list[str]:
    return ["tbf", "rate", f"{mbit}mbit", "burst", "64kb", "latency", "100ms"]


@contextlib.contextmanager
def link_cap(sim, node, mbit: int) -> Iterator[None]:
    n = sim.node(node)
    try:
        sim.exec_in_ns(n, ["tc", "qdisc", "replace", "dev", "eth0", "root", *_tbf(mbit)], check=True)
        subprocess.run(["tc", "qdisc", "replace", "dev", n.host_veth, "root", *_tbf(mbit)], check=True)
        yield
    finally:
        sim.exec_in_ns(n, ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        subprocess.run(["tc", "qdisc", "del", "dev", n.host_veth, "root"], check=False, capture_output=True)


@contextlib.contextmanager
def pair_cap(sim, a, b, mbit: int) -> Iterator[None]:
    """Only traffic between ``a`` and ``b`` is capped (each end's sends to the other)."""
    ends = [(sim.node(a), sim.node(b)), (sim.node(b), sim.node(a))]
    steps = [
        ["qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10"],
        ["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "100gbit", "quantum", "60000"],
        ["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:30", "htb", "rate", f"{mbit}mbit", "ceil",
         f"{mbit}mbit", "quantum", "1514"],
    ]  # fmt: skip
    try:
        for me, other in ends:
            for step in steps:
                sim.exec_in_ns(me, ["tc", *step], check=True)
            sim.exec_in_ns(
                me,
                ["tc", "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                 "match", "ip", "dst", f"{other.addr}/32", "flowid", "1:30"],
                check=True,
            )  # fmt: skip
        yield
    finally:
        for me, _ in ends:
            sim.exec_in_ns(me, ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)

"""Real write caps: cgroup v1 ``blkio.throttle.write_bps_device`` on the disk behind the test directory.

Only the worker process is put into a unique cgroup (before it starts, from ``preexec_fn``);
the cgroup is removed in a finalizer.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

import pytest

from benchmarks.units import MIB
from tests.volume_helpers import Worker, remove_tree, unique_dir

BLKIO = Path("/sys/fs/cgroup/blkio")


def disk_of(path: Path) -> str:
    """MAJ:MIN of the whole disk holding ``path`` (throttling is set per disk, not per partition)."""
    dev = os.stat(path).st_dev
    sysdir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sysdir.exists():
        pytest.skip(f"{path} is not on a block device (st_dev {os.major(dev)}:{os.minor(dev)})")
    if (sysdir / "partition").exists():
        return (sysdir.resolve().parent / "dev").read_text().strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


@pytest.fixture
def capped():
    """(test directory, cgroup directory, MAJ:MIN); the cgroup and the directory are removed afterwards."""
    if os.geteuid() != 0 or not (BLKIO / "blkio.throttle.write_bps_device").exists():
        pytest.skip("needs root and cgroup v1 blkio throttling")
    d = unique_dir()
    group = BLKIO / f"corral-voltest-{os.getpid()}-{secrets.token_hex(4)}"
    group.mkdir()
    workers: list[Worker] = []
    try:
        yield d, group, disk_of(d), workers
    finally:
        for w in workers:
            w.kill()
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        remove_tree(d)


def set_cap(group: Path, majmin: str, mibps: float) -> None:
    (group / "blkio.throttle.write_bps_device").write_text(f"{majmin} {int(mibps * MIB)}\n")


def start_in(group: Path, args: list[str]) -> Worker:
    procs = group / "cgroup.procs"

    def enter_group():  # runs in the child before exec: only the worker is capped
        procs.write_text(str(os.getpid()))

    return Worker(args, preexec_fn=enter_group)


def test_write_cap_is_measured_and_judged_at_limit(capped, tmp_path):
    d, group, majmin, workers = capped
    set_cap(group, majmin, 24)
    out = tmp_path / "r.json"
    # a cap far below the disk's speed, so that other work on the shared disk cannot pull the rate under it
    w = start_in(group, [str(d), "--size", "32M", "--bs", "256K", "--mode", "seqwrite", "--duration", "3", "--limit-mibps", "24", "--out", str(out)])
    workers.append(w)
    rc, _, err = w.finish()
    assert rc == 0, err
    (r,) = json.loads(out.read_text())["results"]
    assert r["mib_per_s"] == pytest.approx(24, rel=0.10), r["series_mib_per_s"]
    assert r["verdict"] == "at limit"
    assert os.listdir(d) == []


def test_cap_applied_mid_run_is_found_as_burst_then_cap(capped, tmp_path):
    """64 MiB/s for two seconds, then 16 MiB/s: both rates known, so both can be checked."""
    d, group, majmin, workers = capped
    set_cap(group, majmin, 64)
    out = tmp_path / "r.json"
    w = start_in(group, [str(d), "--size", "32M", "--mode", "seqwrite", "--duration", "6", "--limit-mibps", "16", "--out", str(out)])
    workers.append(w)
    tick = re.compile(r"seqwrite:\s+(\d+\.\d)s")
    w.wait_for(lambda line: (m := tick.search(line)) is not None and float(m.group(1)) >= 1.95)
    set_cap(group, majmin, 16)
    rc, _, err = w.finish()
    assert rc == 0, err
    (r,) = json.loads(out.read_text())["results"]
    th = r["throttle"]
    assert th is not None, r["series_mib_per_s"]
    assert th["rate_before"] == pytest.approx(64, rel=0.15), r["series_mib_per_s"]
    assert th["rate_after"] == pytest.approx(16, rel=0.15), r["series_mib_per_s"]
    assert 1.5 <= th["change_at_s"] <= 3.5
    assert r["verdict"] == "at limit"  # the sustained rate is judged, not the burst

"""Real write caps: cgroup v1 ``blkio.throttle.write_bps_device`` on the disk behind the test directory.

Only the worker process is put into a unique cgroup (before it starts, from ``preexec_fn``);
the cgroup is removed in a finalizer. The cgroup helpers are ``tests/infra/capped_volume.py``'s.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from launcher.errors import UserError
from tests.infra.capped_volume import blkio_group, blkio_missing, disk_of, set_write_cap
from tests.volume_helpers import Worker, remove_tree, unique_dir


@pytest.fixture
def capped():
    """(test directory, cgroup directory, MAJ:MIN); the cgroup and the directory are removed afterwards."""
    missing = blkio_missing()
    if missing:
        pytest.skip(missing)
    d = unique_dir()
    workers: list[Worker] = []
    try:
        try:
            majmin = disk_of(d)
        except UserError as exc:
            pytest.skip(str(exc))
        with blkio_group("corral-voltest") as group:
            try:
                yield d, group, majmin, workers
            finally:
                for w in workers:
                    w.kill()
    finally:
        remove_tree(d)


def start_in(group: Path, args: list[str]) -> Worker:
    procs = group / "cgroup.procs"

    def enter_group():  # runs in the child before exec: only the worker is capped
        procs.write_text(str(os.getpid()))

    return Worker(args, preexec_fn=enter_group)


STALL_RETRIES = 2
"""The disk is shared with every other test suite on the machine: an fsync storm elsewhere can
stall it for a second, which shows (correctly) as a dip under the cap. A test whose series has
such a stall, a full second below 3/4 of the cap in force, is run once more, and says so."""


def stalled(series: list[float], cap_at) -> bool:
    """Whether a whole second (not the last, partial one) fell below 3/4 of ``cap_at(i)`` (None: not checked)."""
    return any(cap_at(i) is not None and x < 0.75 * cap_at(i) for i, x in enumerate(series[:-1]))


def run_capped(
    group: Path,
    majmin: str,
    d: Path,
    out: Path,
    args: list[str],
    workers: list,
    *,
    first_cap: float,
    then_cap: float | None = None,
) -> dict:
    """Run the worker in the capped group (the cap lowered after the 2 s tick when ``then_cap``)."""
    set_write_cap(group, majmin, first_cap)
    w = start_in(group, [str(d), *args, "--out", str(out)])
    workers.append(w)
    if then_cap is not None:
        tick = re.compile(r"seqwrite:\s+(\d+\.\d)s")
        w.wait_for(lambda line: (m := tick.search(line)) is not None and float(m.group(1)) >= 1.95)
        set_write_cap(group, majmin, then_cap)
    rc, _, err = w.finish()
    assert rc == 0, err
    (r,) = json.loads(out.read_text())["results"]
    return r


def test_write_cap_is_measured_and_judged_at_limit(capped, tmp_path):
    """A 24 MiB/s cap, far below the disk's speed; 32 x 256K in flight so a slow shared disk is not the limit."""
    d, group, majmin, workers = capped
    args = [
        "--size",
        "32M",
        "--bs",
        "256K",
        "--iodepth",
        "32",
        "--mode",
        "seqwrite",
        "--duration",
        "4",
        "--limit-mibps",
        "24",
    ]
    for attempt in range(STALL_RETRIES):
        r = run_capped(group, majmin, d, tmp_path / f"r{attempt}.json", args, workers, first_cap=24)
        if not stalled(r["series_mib_per_s"], lambda i: 24):
            break
        print(f"shared disk stalled, running again: {r['series_mib_per_s']}")
    assert r["mib_per_s"] == pytest.approx(24, rel=0.10), r["series_mib_per_s"]
    assert r["verdict"] == "at limit"
    assert os.listdir(d) == []


def test_cap_applied_mid_run_is_found_as_burst_then_cap(capped, tmp_path):
    """32 MiB/s for two seconds, then 8 MiB/s: both rates known, so both can be checked.

    Rates far below the disk's speed (other work shares the disk), 128K blocks (a few hundred
    requests per second, so a request landing in the next second moves little) and 32 in
    flight (so that a slow shared disk, not the cap, cannot be what limits the rate).
    """
    d, group, majmin, workers = capped
    args = [
        "--size",
        "32M",
        "--bs",
        "128K",
        "--iodepth",
        "32",
        "--mode",
        "seqwrite",
        "--duration",
        "6",
        "--limit-mibps",
        "8",
    ]
    for attempt in range(STALL_RETRIES):
        r = run_capped(group, majmin, d, tmp_path / f"r{attempt}.json", args, workers, first_cap=32, then_cap=8)
        if not stalled(r["series_mib_per_s"], lambda i: 32 if i < 2 else None if i == 2 else 8):
            break
        print(f"shared disk stalled, running again: {r['series_mib_per_s']}")
    th = r["throttle"]
    assert th is not None, r["series_mib_per_s"]
    assert th["rate_before"] == pytest.approx(32, rel=0.15), r["series_mib_per_s"]
    assert th["rate_after"] == pytest.approx(8, rel=0.15), r["series_mib_per_s"]
    assert 1.5 <= th["change_at_s"] <= 3.5
    assert r["verdict"] == "at limit", (r["series_mib_per_s"], th)  # the sustained rate is judged, not the burst
    assert os.listdir(d) == []

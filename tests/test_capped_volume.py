"""The capped volume the benchmarks use: real loop device, ext4, cgroup v1 blkio; nothing left behind.

No timing here (the checkpoint benchmark measures the rate it gets and reports it): these tests
check that the process's writes are charged to the capped group and that every piece is removed,
also when the body raises.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.infra.capped_volume import BLKIO, blkio_missing, capped_volume, loop_missing, own_blkio_group


@pytest.fixture
def can_cap():
    missing = loop_missing() or blkio_missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the capped-volume test: {missing}")
        pytest.skip(missing)


def _loop_attached(device: str) -> bool:
    return Path(f"/sys/block/{os.path.basename(device)}/loop/backing_file").exists()


def _mounted(path: str) -> bool:
    return any(line.split()[4] == path for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _charged_writes(group: Path, majmin: str) -> int:
    for line in (group / "blkio.throttle.io_service_bytes").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == majmin and parts[1] == "Write":
            return int(parts[2])
    return 0


def test_fsynced_writes_are_charged_to_the_capped_group_and_everything_is_removed(can_cap):
    home = own_blkio_group()
    with capped_volume(512, 64 << 20) as fs:
        group = own_blkio_group()
        assert group != home and group.parent == BLKIO
        assert f"{fs.majmin} {512 << 20}" in (group / "blkio.throttle.write_bps_device").read_text()
        with open(os.path.join(fs.mountpoint, "data"), "wb") as f:
            f.write(os.urandom(8 << 20))
            f.flush()
            os.fsync(f.fileno())  # written back by this process: charged to (and throttled by) its group
        assert _charged_writes(group, fs.majmin) >= 8 << 20
        assert _mounted(fs.mountpoint) and _loop_attached(fs.device)
    assert own_blkio_group() == home
    assert not group.exists()
    assert not _mounted(fs.mountpoint) and not _loop_attached(fs.device)
    assert not os.path.exists(os.path.dirname(fs.mountpoint))


def test_everything_is_removed_when_the_body_raises(can_cap):
    home = own_blkio_group()
    seen = {}
    with pytest.raises(KeyboardInterrupt):
        with capped_volume(64, 32 << 20) as fs:
            seen["fs"], seen["group"] = fs, own_blkio_group()
            raise KeyboardInterrupt  # Ctrl-C in the middle of a measurement
    fs = seen["fs"]
    assert own_blkio_group() == home and not seen["group"].exists()
    assert not _mounted(fs.mountpoint) and not _loop_attached(fs.device)
    assert not os.path.exists(os.path.dirname(fs.mountpoint))

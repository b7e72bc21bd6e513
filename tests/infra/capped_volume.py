"""A volume capped the way the target cloud caps them, made on this machine for benchmarks and tests.

The target cloud caps each volume's writes (128 MiB/s documented). Here: a sparse image under
/var/tmp, ext4 on a loop device (direct I/O to the image, so the image's page cache does not
double every byte), and a cgroup v1 ``blkio.throttle.write_bps_device`` on that loop device for
the processes put into the group. cgroup v1 charges a bio to the cgroup of the task that submits
it, so writes the benchmark's own threads push out (``fsync``, ``sync_file_range``, O_DIRECT) are
throttled; pages the kernel's flusher threads write back on their own are not (v1 has no
cgroup writeback): a measurement must check its raw write+fsync baseline really runs at the cap.

Everything made here is removed on exit from the context managers, also on an exception or
Ctrl-C: the process goes back to its own cgroup, the group is removed, the file system
unmounted, the loop device detached and the image deleted.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import ToolError, ToolNotFound, UserError

log = logging.getLogger(__name__)

BLKIO = Path("/sys/fs/cgroup/blkio")
"""cgroup v1 blkio hierarchy (cgroup v2's ``io.max`` is not handled: this project's machines run v1)."""
MIB = 1 << 20
TOOLS = ("losetup", "mkfs.ext4", "mount", "umount")


def run_tool(argv: list[str]) -> str:
    """The one choke point for losetup/mkfs/mount/umount: argv list in, stdout out, ToolError on failure."""
    log.debug("%s", shlex.join(argv))
    if shutil.which(argv[0]) is None:
        raise ToolNotFound(argv[0], hint="install util-linux and e2fsprogs")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolError(argv[0], argv, proc.returncode, proc.stderr)
    return proc.stdout.strip()


def disk_of(path: str | os.PathLike) -> str:
    """MAJ:MIN of the whole disk holding ``path`` (blkio throttling is set per disk, not per partition)."""
    dev = os.stat(path).st_dev
    sysdir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sysdir.exists():
        raise UserError(f"{path} is not on a block device (st_dev {os.major(dev)}:{os.minor(dev)})")
    if (sysdir / "partition").exists():
        return (sysdir.resolve().parent / "dev").read_text().strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


def blkio_missing() -> str | None:
    """Why write throttling cannot be set up here, or None."""
    if os.geteuid() != 0:
        return "needs root (cgroup blkio throttling)"
    if not (BLKIO / "blkio.throttle.write_bps_device").exists():
        return f"no cgroup v1 blkio throttling at {BLKIO} (cgroup v2 io.max is not supported)"
    return None


def loop_missing() -> str | None:
    """Why a loop-mounted file system cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (losetup, mount)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} (util-linux, e2fsprogs)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control)"
    return None


def set_write_cap(group: Path, majmin: str, mibps: float) -> None:
    """Cap the group's writes to the device MAJ:MIN at ``mibps`` MiB/s (0 removes the cap)."""
    (group / "blkio.throttle.write_bps_device").write_text(f"{majmin} {int(mibps * MIB)}\n")


def own_blkio_group(pid: int | str = "self") -> Path:
    """The blkio cgroup directory ``pid`` is in now (where it goes back to)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "blkio" in controllers.split(","):
            return BLKIO / path.lstrip("/")
    return BLKIO


@contextmanager
def blkio_group(tag: str = "corral") -> Iterator[Path]:
    """A fresh, uniquely named blkio cgroup; removed on exit (after its processes left it)."""
    group = BLKIO / f"{tag}-{os.getpid()}-{secrets.token_hex(4)}"
    group.mkdir()
    try:
        yield group
    finally:
        for _ in range(50):  # a process that just left may linger in the group for a moment
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        else:
            log.warning("could not remove cgroup %s; remove it with rmdir once its processes exit", group)


@contextmanager
def process_in_group(group: Path, pid: int | None = None) -> Iterator[None]:
    """Move process ``pid`` (default: this one, all its threads) into ``group``; move it back on exit."""
    pid = os.getpid() if pid is None else pid
    home = own_blkio_group(pid)
    (group / "cgroup.procs").write_text(str(pid))
    try:
        yield
    finally:
        (home / "cgroup.procs").write_text(str(pid))


@dataclass(frozen=True)
class LoopFs:
    mountpoint: str
    device: str
    majmin: str


@contextmanager
def loop_ext4(base_dir: str | os.PathLike, size_bytes: int, *, tag: str = "corral-loopfs") -> Iterator[LoopFs]:
    """ext4 on a loop device over a sparse image in a fresh directory under ``base_dir``; all removed on exit."""
    base = Path(base_dir) / f"{tag}-{os.getpid()}-{secrets.token_hex(4)}"
    mnt = base / "mnt"
    mnt.mkdir(parents=True)
    image = base / "fs.img"
    loop = None
    mounted = False
    try:
        with open(image, "wb") as f:
            f.truncate(size_bytes)
        run_tool(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)])
        try:  # direct I/O to the image: no second page cache copy behind the loop device
            loop = run_tool(["losetup", "-f", "--show", "--direct-io=on", str(image)])
        except ToolError:
            loop = run_tool(["losetup", "-f", "--show", str(image)])
        run_tool(["mount", "-t", "ext4", loop, str(mnt)])
        mounted = True
        st = os.stat(loop)
        yield LoopFs(str(mnt), loop, f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def capped_volume(mibps: float, size_bytes: int, base_dir: str | os.PathLike = "/var/tmp") -> Iterator[LoopFs]:
    """A loop-mounted ext4 whose writes by this process are capped at ``mibps`` MiB/s while inside."""
    missing = loop_missing() or blkio_missing()
    if missing:
        raise UserError(f"cannot make a capped volume: {missing}")
    with loop_ext4(base_dir, size_bytes) as fs, blkio_group("corral-capvol") as group:
        set_write_cap(group, fs.majmin, mibps)
        with process_in_group(group):
            yield fs

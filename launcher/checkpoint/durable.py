"""Durable file operations: every byte fsynced before anything points at it.

The writer streams chunks with large ``os.write`` calls straight from the caller's memory
(no intermediate copy), starts the kernel's writeback of each chunk right away
(``sync_file_range``), and computes the CRC32 (ISA-L's when installed) in a helper thread, so the disk, the page
cache copy and the checksum overlap instead of running one after the other.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

CHUNK = 16 << 20
"""Write/read size: large enough that syscalls cost nothing, small enough to pipeline."""

_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4

try:  # ISA-L's CRC32 (carry-less multiply) is several times faster than zlib's and gives the same values
    from isal.isal_zlib import crc32 as crc32
except ImportError:  # pragma: no cover - isal is a dependency, but a training image may lack it
    from zlib import crc32 as crc32


def _load_sync_file_range():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int, *, wait: bool = False) -> None:
    """Ask the kernel to start writing this range now (Linux); ``wait`` also waits for it.

    Only a hint for durability: the final fsync is what guarantees it. Without it a 1 GiB
    file sits in the page cache until fsync, and the disk idles while we copy and checksum.
    """
    if _sync_file_range is None or length <= 0:
        return
    flags = _SFR_WRITE | ((_SFR_WAIT_BEFORE | _SFR_WAIT_AFTER) if wait else 0)
    _sync_file_range(fd, offset, length, flags)


class RunningCrc:
    """CRC32 of a byte stream, computed in order in a helper thread (zlib releases the GIL)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-crc")
        self._crc = 0
        self._last = None

    def _step(self, data) -> None:
        self._crc = crc32(data, self._crc)

    def update(self, data) -> None:
        """Queue ``data``; the caller must not modify it until :meth:`value` returns."""
        self._last = self._pool.submit(self._step, data)

    def value(self) -> int:
        self._pool.shutdown(wait=True)
        if self._last is not None:
            self._last.result()
        return self._crc


class Pacer:
    """Caps the write rate of one process: waits for each chunk to reach the disk, then sleeps.

    Waiting for writeback matters: pacing only the copies into the page cache would still let
    the kernel flush everything at full speed at fsync time, starving the volume.
    """

    def __init__(self, bytes_per_s: float | None) -> None:
        self.bytes_per_s = bytes_per_s
        self._start = time.monotonic()
        self._done = 0

    @property
    def chunk(self) -> int:
        if not self.bytes_per_s:
            return CHUNK
        return int(max(64 << 10, min(CHUNK, self.bytes_per_s / 8)))

    def after_write(self, fd: int, offset: int, length: int) -> None:
        if not self.bytes_per_s:
            start_writeback(fd, offset, length)
            return
        start_writeback(fd, offset, length, wait=True)
        self._done += length
        ahead = self._done / self.bytes_per_s - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(ahead)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file_durably(path: str, chunks: Iterable, *, pacer: Pacer | None = None) -> tuple[int, int]:
    """Create ``path`` (must not exist), write every chunk, fsync; return (size, crc32).

    Chunks are bytes-like objects that stay unmodified until this returns.
    """
    pacer = pacer or Pacer(None)
    crc = RunningCrc()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        for chunk in chunks:
            n = memoryview(chunk).nbytes
            if not n:
                continue
            _write_all(fd, chunk)
            crc.update(chunk)
            pacer.after_write(fd, size, n)
            size += n
        os.fsync(fd)
    finally:
        os.close(fd)
        value = crc.value()
    return size, value


def read_file_into(path: str, out) -> int:
    """Read the whole file into the writable buffer ``out`` (exactly its size); return its crc32."""
    view = memoryview(out).cast("B")
    crc = RunningCrc()
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size != view.nbytes:
            raise ValueError(f"size {size} bytes, expected {view.nbytes}")
        pos = 0
        while pos < size:
            n = f.readinto(view[pos : pos + CHUNK])
            if not n:
                raise ValueError(f"file ended at byte {pos} of {size}")
            crc.update(view[pos : pos + n])
            pos += n
    return crc.value()


def crc_of_file(path: str) -> tuple[int, int]:
    """(size, crc32) of a file, read in chunks with a bounded buffer (for verification)."""
    crc = 0
    size = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            crc = crc32(block, crc)
            size += len(block)
    return size, crc


def fsync_dir(path: str) -> None:
    """Make a directory's entries (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(directory: str, name: str, tmp_name: str, data: bytes) -> None:
    """Replace ``directory/name`` atomically: write a temporary file, fsync, rename, fsync the directory."""
    tmp = os.path.join(directory, tmp_name)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, name))
    fsync_dir(directory)


def remove_tree_atomically(root: str, name: str, trash_name: str) -> None:
    """Remove ``root/name`` so that no crash can leave it half-deleted under its own name.

    The directory is first renamed to a hidden trash name (atomic, fsynced); only then are its
    files deleted. A crash in between leaves a trash directory that the next save removes.
    """
    src, dst = os.path.join(root, name), os.path.join(root, trash_name)
    if os.path.lexists(dst):
        shutil.rmtree(dst)
    os.rename(src, dst)
    fsync_dir(root)
    shutil.rmtree(dst)


def describe_os_error(exc: OSError) -> str:
    """Short words for the I/O errors people meet while saving."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)

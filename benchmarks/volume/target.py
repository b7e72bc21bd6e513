"""The directory under test: checks before writing, a private work directory, cleanup on any exit.

corral only ever writes inside ``PATH/.corral-volume-<host>-<pid>-<random>/`` and removes that
directory when the run ends, fails, or is interrupted (Ctrl-C, SIGTERM, SIGHUP: the handlers
turn the signal into an exception so every ``finally`` runs).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from launcher.errors import UserError
from launcher.units import format_size

log = logging.getLogger(__name__)

WORKDIR_PREFIX = ".corral-volume-"


class Interrupted(BaseException):
    """A termination signal arrived; a BaseException so that broad ``except Exception`` cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def check_target(path: str | Path) -> Path:
    """PATH must be an existing directory: never a raw device, a plain file or a missing path."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise UserError(f"{p}: no such directory; give a directory on the volume to test") from None
    except PermissionError:
        raise UserError(f"{p}: permission denied; give a directory you can write to") from None
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        raise UserError(
            f"{p} is a raw device: corral never writes to devices",
            hint="mount the volume and give a directory on it, e.g. corral bench volume /mnt/data",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{p} is not a directory; give a directory on the volume to test")
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{p}: not writable; give a directory you can write to")
    return p


def check_free_space(path: str | Path, required: int) -> str | None:
    """Refuse up front, before any file exists, when the filesystem cannot hold the test file.

    A filesystem that reports no capacity at all (ramfs, some FUSE filesystems: zero blocks)
    cannot be checked; that is returned as a notice instead of a refusal.
    """
    st = os.statvfs(path)
    if st.f_blocks == 0:
        return f"{path}: the filesystem reports no capacity, so free space could not be checked"
    free = st.f_bavail * st.f_frsize
    if free < required:
        raise UserError(
            f"{path}: not enough free space: the benchmark needs {format_size(required)} ({required} bytes: "
            f"the test file plus 64M headroom) and {format_size(free) if free else 0} ({free} bytes) are free",
            hint="free some space or pass a smaller --size",
        )
    return None


def supports_direct(directory: str | Path) -> bool:
    """Whether files in ``directory`` can be opened with O_DIRECT (tmpfs, for one, refuses)."""
    probe = Path(directory) / f".direct-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    else:
        os.close(fd)
        return True
    finally:
        try:
            os.unlink(probe)
        except FileNotFoundError:
            pass


def workdir_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]
    return f"{WORKDIR_PREFIX}{host}-{os.getpid()}-{secrets.token_hex(4)}"


@contextmanager
def private_workdir(path: str | Path) -> Iterator[Path]:
    """A fresh subdirectory of ``path`` that is removed on every way out of the block."""
    wd = Path(path) / workdir_name()
    wd.mkdir(mode=0o700)
    try:
        yield wd
    finally:
        # A second Ctrl-C must not cut the removal short: hold the signals until it is done.
        held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            shutil.rmtree(wd, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if wd.exists():  # pragma: no cover - only on a filesystem that refuses the removal
            log.warning("could not remove %s; remove it by hand", wd)


@contextmanager
def signals_raise(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)) -> Iterator[None]:
    """Turn termination signals into :class:`Interrupted` in the main thread while the block runs.

    Outside the main thread (where handlers cannot be installed) this does nothing.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

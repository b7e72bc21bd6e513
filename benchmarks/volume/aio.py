"""Linux kernel AIO (the interface fio's ``libaio`` engine uses) through ctypes and raw system calls.

Why: a Python thread per in-flight request pays the interpreter and the GIL on every request;
with kernel AIO one thread per job keeps ``iodepth`` requests queued with one ``io_submit``
and one ``io_getevents`` per batch, as fio does, so small random requests cost little Python
time. No package is needed: the four system calls are made through libc's ``syscall``.
``available()`` says whether this machine has them (x86_64 and aarch64 Linux).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

_SYSCALLS = {
    "x86_64": {"io_setup": 206, "io_destroy": 207, "io_getevents": 208, "io_submit": 209},
    "aarch64": {"io_setup": 0, "io_destroy": 1, "io_submit": 2, "io_getevents": 4},
}
IOCB_CMD_PREAD = 0
IOCB_CMD_PWRITE = 1


class IOCB(ctypes.Structure):
    """``struct iocb`` from linux/aio_abi.h (little-endian layout, 64 bytes)."""

    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class IOEvent(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64), ("res2", ctypes.c_int64)]


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


assert ctypes.sizeof(IOCB) == 64 and ctypes.sizeof(IOEvent) == 32

_libc = None


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # CDLL calls release the GIL
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def _nr(name: str) -> int:
    return _SYSCALLS[platform.machine()][name]


def available() -> bool:
    """Whether kernel AIO can be used here: a known architecture and an io_setup that succeeds."""
    if os.uname().sysname != "Linux" or platform.machine() not in _SYSCALLS or ctypes.sizeof(ctypes.c_void_p) != 8:
        return False
    try:
        ctx = Context(1)
    except OSError:
        return False
    ctx.close()
    return True


class Context:
    """One AIO context with room for ``depth`` requests in flight."""

    def __init__(self, depth: int) -> None:
        self._sys = _syscall()
        self.ctx = ctypes.c_ulong(0)
        if self._sys(_nr("io_setup"), depth, ctypes.byref(self.ctx)) < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"io_setup: {os.strerror(e)}")
        self._submit, self._getevents = _nr("io_submit"), _nr("io_getevents")

    def submit(self, n: int, ptrs, done: int = 0) -> None:
        """Queue requests ``done..n-1`` of the array of iocb pointers; all of them, retrying on EAGAIN/EINTR."""
        while done < n:
            arr = (
                ptrs
                if done == 0
                else ctypes.cast(
                    ctypes.byref(ptrs, done * ctypes.sizeof(ctypes.c_void_p)), ctypes.POINTER(ctypes.c_void_p)
                )
            )
            r = self._sys(self._submit, self.ctx, n - done, arr)
            if r < 0:
                e = ctypes.get_errno()
                if e in (errno.EINTR, errno.EAGAIN):
                    continue
                raise OSError(e, f"io_submit: {os.strerror(e)}")
            done += r

    def getevents(self, min_nr: int, nr: int, events, timeout: Timespec | None) -> int:
        """Reap between ``min_nr`` and ``nr`` completions (fewer when ``timeout`` passes or a signal arrives)."""
        r = self._sys(
            self._getevents, self.ctx, min_nr, nr, events, ctypes.byref(timeout) if timeout is not None else None
        )
        if r < 0:
            e = ctypes.get_errno()
            if e == errno.EINTR:
                return 0
            raise OSError(e, f"io_getevents: {os.strerror(e)}")
        return r

    def reaper(self, events, nr: int, timeout: Timespec):
        """A prebound ``io_getevents(ctx, 1, nr, events, timeout)``: the number reaped (0 on EINTR or timeout)."""
        sysc, num, ctx, tref = self._sys, self._getevents, self.ctx, ctypes.byref(timeout)

        def reap() -> int:
            r = sysc(num, ctx, 1, nr, events, tref)
            if r < 0:
                e = ctypes.get_errno()
                if e == errno.EINTR:
                    return 0
                raise OSError(e, f"io_getevents: {os.strerror(e)}")
            return r

        self._keep = (events, timeout)
        return reap

    def submitter(self, ptrs):
        """A prebound ``io_submit(ctx, n, ptrs)`` that falls back to :meth:`submit` on a partial submission."""
        sysc, num, ctx = self._sys, self._submit, self.ctx

        def submit(n: int) -> None:
            r = sysc(num, ctx, n, ptrs)
            if r != n:  # an error before the first request, or a partial submission: the careful path
                self.submit(n, ptrs, done=max(r, 0))

        return submit

    def submitter_one(self, addrs: list[int]):
        """A prebound ``io_submit(ctx, 1, &iocb[s])`` for slot ``s``."""
        sysc, num, ctx = self._sys, self._submit, self.ctx
        singles = [(ctypes.c_void_p * 1)(a) for a in addrs]

        def submit_one(s: int) -> None:
            one = singles[s]
            if sysc(num, ctx, 1, one) != 1:
                self.submit(1, one)

        self._singles = singles
        return submit_one

    def close(self) -> None:
        if self.ctx.value:
            self._sys(_nr("io_destroy"), self.ctx)
            self.ctx = ctypes.c_ulong(0)

"""corral's I/O engine: ``jobs`` workers, each keeping ``iodepth`` requests in flight.

Two ways to keep requests in flight, chosen by ``engine``:

- ``threads`` (default): ``iodepth`` threads per job, each with one blocking
  ``os.pwrite``/``os.preadv`` in flight; those calls release the GIL, so N threads queue N
  requests. Measured within a few percent of fio's libaio in every mode.
- ``aio`` (``CORRAL_VOLUME_ENGINE=aio``): one thread drives a kernel AIO context
  (:mod:`benchmarks.volume.aio`) as fio's libaio engine does; as close as threads on random
  reads, but behind on sequential reads (see docs/BENCH_VOLUME.md), so not the default.

Buffers are anonymous ``mmap`` regions (page aligned, as O_DIRECT requires). Every completed
request appends its latency to its worker's ``array`` (compact, no locks); the main thread
samples the total once per ``tick_s`` for the time series and is the one that receives
signals, so an interruption stops the workers and re-raises.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import mmap
import os
import random
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.volume import aio
from benchmarks.volume.plan import ModeSpec
from launcher.errors import RunFailed
from launcher.units import MIB

log = logging.getLogger(__name__)

_NEVER = 1 << 62


@dataclass
class ModeRun:
    """What one mode measured: bytes moved, requests, elapsed time (closing fsync included)."""

    spec: ModeSpec
    bytes: int
    ops: int
    elapsed_s: float
    engine: str = "threads"
    series_mib_per_s: list[float] = field(default_factory=list)
    lat_p50_us: float | None = None
    lat_p99_us: float | None = None

    @property
    def mib_per_s(self) -> float:
        return self.bytes / self.elapsed_s / MIB if self.elapsed_s > 0 else 0.0

    @property
    def iops(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0


def percentile(sorted_values, q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, min(n, int(-(-q * n // 100))))
    return float(sorted_values[rank - 1])


class _Worker:
    """State shared by the threads of one mode."""

    def __init__(self, spec: ModeSpec, fds: list[int], deadline_ns: int, engine: str) -> None:
        self.spec = spec
        self.engine = engine
        # aio: one thread reaps and resubmits for every job (each job keeps its own file
        # descriptor); several reapers would spend their time waiting for each other's GIL
        self.workers = 1 if engine == "aio" else spec.threads
        self.fds = fds
        self.deadline_ns = deadline_ns
        self.total = spec.total_ops if spec.total_ops is not None else _NEVER
        self.nblocks = spec.size // spec.bs
        self.counter = itertools.count()
        self.halt = [False]
        self.lats = [array("q") for _ in range(self.workers)]
        self.errors: list[BaseException] = []
        self.start = threading.Event()
        self.remaining = self.workers
        self.lock = threading.Lock()
        self.finished = threading.Event()

    def done_ops(self) -> int:
        return sum(len(a) for a in self.lats)

    def run(self, k: int) -> None:
        try:
            (self._loop_aio if self.engine == "aio" else self._loop)(k)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.errors.append(exc)
            self.halt[0] = True
        finally:
            with self.lock:
                self.remaining -= 1
                if self.remaining == 0:
                    self.finished.set()

    def _loop(self, k: int) -> None:
        spec = self.spec
        bs, nblocks, total, halt = spec.bs, self.nblocks, self.total, self.halt
        fd = self.fds[k // spec.iodepth]
        buf = mmap.mmap(-1, bs)
        if spec.is_write:
            buf.write(os.urandom(bs))
        view = memoryview(buf)
        bufs = [view]
        counter = self.counter
        record = self.lats[k].append
        clock = time.perf_counter_ns
        pick = random.Random(os.urandom(8)).randrange if spec.is_random else None
        write, readv = os.pwrite, os.preadv
        is_write = spec.is_write
        self.start.wait()
        deadline = self.deadline_ns  # set by the main thread just before it starts the clock
        try:
            while not halt[0]:
                i = next(counter)
                if i >= total:
                    break
                off = (pick(nblocks) if pick else i % nblocks) * bs
                t = clock()
                if t >= deadline:
                    break
                n = write(fd, view, off) if is_write else readv(fd, bufs, off)
                record(clock() - t)
                if n != bs:
                    raise RunFailed(f"short {'write' if is_write else 'read'} at offset {off}: {n} of {bs} bytes")
        finally:
            view.release()
            buf.close()

    def _loop_aio(self, k: int) -> None:
        """All ``jobs x iodepth`` requests on one kernel AIO context, each refilled as soon as it completes.

        Slot s belongs to job s // iodepth and uses that job's file descriptor, as fio's jobs do.
        The loop is written for few interpreter steps per request: prebound system calls,
        iocb objects made once, completions read from a flat int64 array.
        """
        spec = self.spec
        bs, nblocks, total, halt, depth = spec.bs, self.nblocks, self.total, self.halt, spec.threads
        counter = self.counter
        record = self.lats[k].append
        clock = time.perf_counter_ns
        rand = random.Random(os.urandom(8)).random if spec.is_random else None
        bufs = [mmap.mmap(-1, bs) for _ in range(depth)]
        anchors = [ctypes.c_char.from_buffer(b) for b in bufs]
        iocbs = (aio.IOCB * depth)()
        cbs = [iocbs[s] for s in range(depth)]
        addrs = [ctypes.addressof(cb) for cb in cbs]
        ptrs = (ctypes.c_void_p * depth)()
        events = (ctypes.c_int64 * (4 * depth))()  # struct io_event: data, obj, res, res2
        opcode = aio.IOCB_CMD_PWRITE if spec.is_write else aio.IOCB_CMD_PREAD
        for s, cb in enumerate(cbs):
            if spec.is_write:
                bufs[s].write(os.urandom(bs))
            cb.aio_data, cb.aio_lio_opcode, cb.aio_fildes = s, opcode, self.fds[s // spec.iodepth]
            cb.aio_buf, cb.aio_nbytes = ctypes.addressof(anchors[s]), bs
        t_sub = [0] * depth
        ctx = aio.Context(depth)
        reap = ctx.reaper(events, depth, aio.Timespec(0, 200_000_000))  # wakes to notice a halt on a stalled device
        submit = ctx.submitter(ptrs)
        submit_one = ctx.submitter_one(addrs)
        try:
            self.start.wait()
            deadline = self.deadline_ns
            n, now = 0, clock()
            for s in range(depth):
                i = next(counter)
                if i >= total or halt[0]:
                    break
                cbs[s].aio_offset = (int(rand() * nblocks) if rand else i % nblocks) * bs
                t_sub[s] = now
                ptrs[n] = addrs[s]
                n += 1
            if n:
                submit(n)
            inflight = n
            while inflight:
                got = reap()
                now = clock()
                more = not halt[0] and now < deadline
                for j in range(0, 4 * got, 4):
                    s = events[j]
                    inflight -= 1
                    if events[j + 2] != bs:
                        res = events[j + 2]
                        if res < 0:
                            raise OSError(-res, os.strerror(-res))
                        raise RunFailed(f"short {'write' if spec.is_write else 'read'}: {res} of {bs} bytes")
                    record(now - t_sub[s])
                    if more:
                        i = next(counter)
                        if i >= total:
                            more = False
                            continue
                        cbs[s].aio_offset = (int(rand() * nblocks) if rand else i % nblocks) * bs
                        t_sub[s] = now
                        # one request per io_submit, at once, as fio does: requests queued
                        # together tend to complete together, which empties the queue
                        submit_one(s)
                        inflight += 1
        finally:
            ctx.close()  # waits for anything still in flight before the buffers go
            del anchors, cbs, iocbs
            for b in bufs:
                b.close()


_DEFAULT_ENGINE: str | None = None


def default_engine() -> str:
    """``threads``, which measured closest to fio in every mode (docs/BENCH_VOLUME.md);
    ``CORRAL_VOLUME_ENGINE=aio`` selects kernel AIO where the kernel offers it."""
    global _DEFAULT_ENGINE
    if os.environ.get("CORRAL_VOLUME_ENGINE") == "aio":
        if _DEFAULT_ENGINE is None:
            _DEFAULT_ENGINE = "aio" if aio.available() else "threads"
        return _DEFAULT_ENGINE
    return "threads"


def _open_flags(spec: ModeSpec) -> int:
    flags = os.O_WRONLY if spec.is_write else os.O_RDONLY
    return flags | (os.O_DIRECT if spec.direct else 0)


def create_file(file: Path, size: int) -> None:
    """A fresh file of ``size`` bytes with its blocks allocated but not written, as fio lays out a write job's file."""
    try:
        file.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise RunFailed(f"{file.parent}: no space left for a {size} byte test file") from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


def drop_cached_pages(file: Path) -> None:
    """Write back and drop ``file``'s pages so a buffered read comes from the volume, not memory."""
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_mode(
    spec: ModeSpec,
    file: Path,
    *,
    tick_s: float = 1.0,
    on_tick: Callable[[float, float], None] | None = None,
    engine: str | None = None,
) -> ModeRun:
    """Run one mode on ``file`` (which must exist with ``spec.size`` bytes) and measure it.

    The clock starts when every thread is ready and stops after the closing fsync of a write
    mode. ``on_tick(elapsed_s, mib_per_s)`` is called once per interval (progress output).
    """
    if not spec.is_write and not spec.direct:
        drop_cached_pages(file)
    fds = [os.open(file, _open_flags(spec)) for _ in range(spec.jobs)]
    deadline = _NEVER
    # Buffered requests make io_submit block until done (no queue): threads keep them overlapping.
    w = _Worker(spec, fds, deadline, engine or (default_engine() if spec.direct else "threads"))
    threads = [threading.Thread(target=w.run, args=(k,), name=f"corral-io-{k}", daemon=True) for k in range(w.workers)]
    series: list[float] = []
    started: list[threading.Thread] = []
    try:
        for t in threads:
            t.start()
            started.append(t)
        t0 = time.perf_counter()
        if spec.duration_s:
            w.deadline_ns = time.perf_counter_ns() + int(spec.duration_s * 1e9)
        w.start.set()
        last_t, last_ops = t0, 0
        next_tick = t0 + tick_s
        while not w.finished.wait(max(0.0, next_tick - time.perf_counter())):
            now, ops = time.perf_counter(), w.done_ops()
            rate = (ops - last_ops) * spec.bs / (now - last_t) / MIB
            series.append(rate)
            if on_tick:
                on_tick(now - t0, rate)
            last_t, last_ops = now, ops
            next_tick += tick_s
        if w.errors:
            err = w.errors[0]
            if isinstance(err, OSError):  # e.g. ENOSPC, EIO: a failed run, said in one line
                raise RunFailed(f"{spec.mode} on {file.parent}: {err.strerror or err}") from err
            raise err
        if spec.is_write:
            for fd in fds:
                os.fsync(fd)
        t1 = time.perf_counter()
    except BaseException:
        w.halt[0] = True
        w.start.set()
        for t in started:
            t.join(timeout=30)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    ops = w.done_ops()
    if t1 - last_t > 1e-3:
        series.append((ops - last_ops) * spec.bs / (t1 - last_t) / MIB)
    lats = sorted(itertools.chain.from_iterable(w.lats))
    p50, p99 = percentile(lats, 50), percentile(lats, 99)
    return ModeRun(
        spec=spec,
        bytes=ops * spec.bs,
        ops=ops,
        elapsed_s=t1 - t0,
        series_mib_per_s=series,
        engine=w.engine,
        lat_p50_us=p50 / 1000 if p50 is not None else None,
        lat_p99_us=p99 / 1000 if p99 is not None else None,
    )

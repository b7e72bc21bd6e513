"""Checkpoint save throughput, async blocked time and async memory, against a raw baseline.

Run: python -m perf.checkpoint_throughput --size 1G --repeats 5 [--dir /var/tmp/X] [--json docs/results/checkpoint-throughput.json]  (appends a dated run)
     python -m perf.checkpoint_throughput --size 1G --cap-mibps 128 ...   (root: a capped volume)

``--cap-mibps N`` measures on a volume capped the way the target cloud caps them: a loop-mounted
ext4 under /var/tmp whose writes by this process are throttled to N MiB/s by cgroup v1 blkio
(tests/infra/capped_volume.py; removed on exit, Ctrl-C and SIGTERM included). The raw baseline of
that run shows whether the cap really applied to buffered writes + fsync.

Each round, interleaved so that a noisy shared disk hits every variant alike:
  raw        the same tensor bytes written with plain 16 MiB os.write calls + one fsync (the bar)
  raw+wb     the same plus early writeback (sync_file_range) - what the checkpointer does
  sync       Checkpointer.save(step, state): header, checksum, fsyncs, manifest, rename, dir fsyncs
  async      save(blocking=False): time the caller is blocked (the CPU copy), then wait()
  overlapped save(blocking=False, snapshot="background") then a simulated forward/backward of
             --step-seconds (a sleep: an accelerator-bound step where the host CPU waits), then
             wait_snapshot() as an optimizer guard would; blocked = save call + wait_snapshot
Per round: throughput ratio sync/raw and blocked/sync; the report gives medians over rounds, and
over rounds 1.. ("steady": the kept snapshot buffer already faulted in) apart from round 0, whose
async save allocates and faults in the buffer. After the rounds, ``Checkpointer.reserve`` (which
moves that first-save cost before a training loop) is timed on its own.
Memory: peak RSS growth of the process (sampled every 2 ms from /proc/self/statm) during the
first async save of a fresh Checkpointer, which allocates its snapshot buffer, and of a later one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import torch

from launcher.checkpoint import Checkpointer
from launcher.checkpoint.durable import CHUNK, start_writeback
from launcher.checkpoint.shardfile import tensor_bytes
from launcher.units import parse_size
from perf import results_log
from tests.infra.capped_volume import capped_volume

MiB = 1 << 20


def make_state(nbytes: int) -> dict:
    """~nbytes of tensors (fp32 and bf16, 32 MiB each, one odd-sized) plus small tensors and Python values."""
    tensors, left, i = {}, nbytes, 0
    while left > 0:
        n = min(left, 32 * MiB)
        dtype = torch.float32 if i % 2 == 0 else torch.bfloat16
        tensors[f"layer{i}.weight"] = torch.rand(
            n // torch.empty((), dtype=dtype).element_size(), dtype=torch.float32
        ).to(dtype)
        left -= n
        i += 1
    return {"model": tensors, "optim": {"step": torch.tensor(1000), "lr": 3e-4}, "rng": list(range(100))}


def state_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state["model"].values())


def raw_write(path: str, views: list[memoryview], writeback: bool) -> float:
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pos = 0
    for v in views:
        for p in range(0, v.nbytes, CHUNK):
            n = os.write(fd, v[p : p + CHUNK])
            if writeback:
                start_writeback(fd, pos, n)
            pos += n
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - t0


class RssSampler:
    """Peak resident set size of this process while running (page cache is not counted)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def async_round(ckpt: Checkpointer, step: int, state: dict) -> tuple[float, float, int]:
    """(blocked seconds, total seconds, peak RSS growth bytes) of one async save."""
    with RssSampler() as mem:
        t0 = time.perf_counter()
        ckpt.save(step, state, blocking=False)
        blocked = time.perf_counter() - t0
        ckpt.wait()
        total = time.perf_counter() - t0
    return blocked, total, mem.peak - mem.base


def overlapped_round(ckpt: Checkpointer, step: int, state: dict, step_seconds: float) -> float:
    """Seconds a training step is blocked when the copy overlaps its forward/backward."""
    t0 = time.perf_counter()
    ckpt.save(step, state, blocking=False, snapshot="background")
    blocked = time.perf_counter() - t0
    time.sleep(step_seconds)
    t1 = time.perf_counter()
    ckpt.wait_snapshot()
    blocked += time.perf_counter() - t1
    ckpt.wait()
    return blocked


def timed_reserve(root: str, state: dict) -> tuple[float, int]:
    """(seconds, RSS growth) of reserving a fresh Checkpointer's snapshot buffer (the first save's allocation)."""
    ckpt = Checkpointer(root, write_latest=False)
    with RssSampler() as mem:
        t0 = time.perf_counter()
        ckpt.reserve(state)
        took = time.perf_counter() - t0
    ckpt.close()
    return took, mem.peak - mem.base


def run(size: int, repeats: int, workdir: str, step_seconds: float = 0.5) -> dict:
    os.makedirs(workdir, exist_ok=True)
    state = make_state(size)
    nbytes = state_bytes(state)
    views = [tensor_bytes(t) for t in state["model"].values()]
    rows = []
    ckpt_sync = Checkpointer(os.path.join(workdir, "sync"), write_latest=False)
    ckpt_async = Checkpointer(os.path.join(workdir, "async"), write_latest=False)
    mem_first = None
    for r in range(repeats):
        row = {}
        raw_path = os.path.join(workdir, "raw.bin")
        row["raw_s"] = raw_write(raw_path, views, writeback=False)
        os.unlink(raw_path)
        row["raw_wb_s"] = raw_write(raw_path, views, writeback=True)
        os.unlink(raw_path)
        t0 = time.perf_counter()
        ckpt_sync.save(r, state)
        row["sync_s"] = time.perf_counter() - t0
        shutil.rmtree(os.path.join(ckpt_sync.root, f"step-{r:08d}"))
        row["blocked_s"], row["async_total_s"], row["async_rss_growth"] = async_round(ckpt_async, r, state)
        if mem_first is None:
            mem_first = row["async_rss_growth"]
        shutil.rmtree(os.path.join(ckpt_async.root, f"step-{r:08d}"))
        row["overlapped_blocked_s"] = overlapped_round(ckpt_async, r, state, step_seconds)
        shutil.rmtree(os.path.join(ckpt_async.root, f"step-{r:08d}"))
        row["overlapped_vs_sync"] = row["overlapped_blocked_s"] / row["sync_s"]
        row["sync_vs_raw"] = row["raw_s"] / row["sync_s"]
        row["sync_vs_raw_wb"] = row["raw_wb_s"] / row["sync_s"]
        row["blocked_vs_sync"] = row["blocked_s"] / row["sync_s"]
        rows.append(row)
        print(
            f"round {r}: raw {nbytes / row['raw_s'] / MiB:7.0f} MiB/s  raw+wb {nbytes / row['raw_wb_s'] / MiB:7.0f}  "
            f"sync save {nbytes / row['sync_s'] / MiB:7.0f} MiB/s (x{row['sync_vs_raw']:.2f} raw)  "
            f"async blocked {row['blocked_s'] * 1000:6.0f} ms ({row['blocked_vs_sync'] * 100:4.1f}% of sync)  "
            f"rss +{row['async_rss_growth'] / MiB:6.0f} MiB  overlapped blocked {row['overlapped_blocked_s'] * 1000:5.0f} ms "
            f"({row['overlapped_vs_sync'] * 100:4.1f}%)",
            flush=True,
        )
    ckpt_async.close()
    reserve_s, reserve_growth = timed_reserve(os.path.join(workdir, "reserve"), state)

    def med(key: str, first: int = 0) -> float:
        return statistics.median(row[key] for row in rows[first:])

    steady = 1 if repeats > 1 else 0

    return {
        "state_bytes": nbytes,
        "repeats": repeats,
        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, {'GPU' if torch.cuda.is_available() else 'no GPU'}",
        "dir": workdir,
        "median_raw_mibps": nbytes / med("raw_s") / MiB,
        "median_raw_writeback_mibps": nbytes / med("raw_wb_s") / MiB,
        "median_sync_save_mibps": nbytes / med("sync_s") / MiB,
        "median_sync_vs_raw": med("sync_vs_raw"),
        "median_sync_vs_raw_writeback": med("sync_vs_raw_wb"),
        "torch_threads": torch.get_num_threads(),
        "first_async_blocked_ms": rows[0]["blocked_s"] * 1000,
        "median_blocked_ms": med("blocked_s") * 1000,
        "median_blocked_vs_sync": med("blocked_vs_sync"),
        "median_steady_blocked_ms": med("blocked_s", steady) * 1000,
        "median_steady_blocked_vs_sync": med("blocked_vs_sync", steady),
        "max_steady_blocked_vs_sync": max(row["blocked_vs_sync"] for row in rows[steady:]),
        "reserve_ms": reserve_s * 1000,
        "reserve_rss_growth_vs_state": reserve_growth / nbytes,
        "step_seconds": step_seconds,
        "median_overlapped_blocked_ms": med("overlapped_blocked_s") * 1000,
        "median_overlapped_blocked_vs_sync": med("overlapped_vs_sync"),
        "first_async_peak_rss_growth_vs_state": mem_first / nbytes,
        "max_later_async_peak_rss_growth_vs_state": max(row["async_rss_growth"] for row in rows[1:]) / nbytes
        if repeats > 1
        else None,
        "rounds": rows,
    }


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="state size (e.g. 1G, 256M)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--dir", default=None, help="directory on the disk to measure (default /var/tmp/corral-ckbench-<id>)"
    )
    ap.add_argument("--json", type=Path, default=None, help="measurement file to append this run to")
    results_log.add_conditions_argument(ap)
    ap.add_argument(
        "--step-seconds", type=float, default=0.5, help="simulated forward/backward for the overlapped variant"
    )
    ap.add_argument(
        "--cap-mibps",
        type=float,
        default=None,
        help="measure on a loop-mounted ext4 whose image lies in --dir (default /var/tmp), writes capped at this rate (cgroup v1 blkio; root)",
    )
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # cleanup of the capped volume runs on kill too
    size = parse_size(args.size)
    if args.cap_mibps:
        base = args.dir or "/var/tmp"
        with capped_volume(args.cap_mibps, 2 * size + (512 << 20), base) as fs:
            print(
                f"capped volume: {fs.device} ({fs.majmin}) at {fs.mountpoint}, writes capped at {args.cap_mibps:g} MiB/s",
                flush=True,
            )
            result = run(size, args.repeats, os.path.join(fs.mountpoint, "bench"), args.step_seconds)
        result["cap_mibps"] = args.cap_mibps
        result["median_raw_vs_cap"] = result["median_raw_mibps"] / args.cap_mibps
    else:
        workdir = args.dir or f"/var/tmp/corral-ckbench-{uuid.uuid4().hex[:8]}"
        os.makedirs(workdir, exist_ok=True)
        try:
            result = run(size, args.repeats, workdir, args.step_seconds)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {k: v for k, v in result.items() if k != "rounds"}
    print(json.dumps(summary, indent=2))
    if args.json:
        results_log.append_run(
            args.json,
            result,
            measurement="Checkpointer save throughput and blocking time against raw writes of the same bytes",
            script="perf/checkpoint_throughput.py",
            command=results_log.current_command("perf.checkpoint_throughput", argv),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tiny rank for the 32-node tests and perf/scale_bench.py: join the gloo group, say so, wait.

argv: OUT_DIR [MAX_SECONDS]. Writes OUT_DIR/ready-RANK once the process group is up, then waits
until OUT_DIR/release exists (or MAX_SECONDS pass) and exits 0. The file holds four wall-clock
times: ready, then when torchrun and this rank started (from /proc) and when torch was imported,
so the benchmark can tell where a launch's time went. Nothing else: at 32 nodes on a 2-core
machine every byte and import counts.
"""

import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

imported = time.time()


def started(pid: int) -> float:
    """A process's start as wall-clock time: its start in clock ticks after boot (field 22 of stat)."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


dist.init_process_group("gloo")
ready = time.time()
out = Path(sys.argv[1])
limit = time.monotonic() + (float(sys.argv[2]) if len(sys.argv) > 2 else 600.0)
rank = dist.get_rank()
tmp = out / f".ready-{rank}.tmp"
tmp.write_text(" ".join(repr(t) for t in (ready, started(os.getppid()), started(os.getpid()), imported)))
os.replace(tmp, out / f"ready-{rank}")  # readers poll the directory: never a half-written file
while time.monotonic() < limit and not (out / "release").exists():
    time.sleep(0.5)

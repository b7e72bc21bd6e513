"""Tiny rank for the 32-node tests and perf/scale_bench.py: join the gloo group, say so, wait.

argv: OUT_DIR [MAX_SECONDS]. Writes OUT_DIR/ready-RANK once the process group is up, then waits
until OUT_DIR/release exists (or MAX_SECONDS pass) and exits 0. Nothing else: at 32 nodes on a
2-core machine every byte and import counts.
"""

import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

dist.init_process_group("gloo")
out = Path(sys.argv[1])
limit = time.monotonic() + (float(sys.argv[2]) if len(sys.argv) > 2 else 600.0)
rank = dist.get_rank()
tmp = out / f".ready-{rank}.tmp"
tmp.write_text(repr(time.time()))
os.replace(tmp, out / f"ready-{rank}")  # readers poll the directory: never a half-written file
while time.monotonic() < limit and not (out / "release").exists():
    time.sleep(0.5)

"""Worker of perf/launch_latency.py: records when its process group is initialised."""

import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

dist.init_process_group("gloo")
out = Path(sys.argv[1])
ready = repr(time.time())
tmp = out / f".ready-{dist.get_rank()}.tmp"
tmp.write_text(ready)
os.replace(tmp, out / f"ready-{dist.get_rank()}")  # the launcher polls: never let it read half a file
dist.barrier()
(out / f"done-{dist.get_rank()}").write_text(os.environ.get("CORRAL_NODE", "-"))
dist.destroy_process_group()

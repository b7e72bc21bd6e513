"""A sweep trial whose loss is a known function of its parameters and its step (perf/sweep_objective.py).

Reports ``loss(params, step)`` for steps 1..--steps, sleeping --step-sleep between them; no torch.
Every execution appends a line to --executions (tests count how often each trial really ran) and
writes its pid to --pid-dir/<trial id> (tests check a pruned trial left no process).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from launcher.report import report  # noqa: E402
from perf.sweep_objective import loss  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--momentum", type=float, default=0.8)
p.add_argument("--opt", default="adam")
p.add_argument("--steps", type=int, default=3)
p.add_argument("--step-sleep", type=float, default=0.2)
p.add_argument("--executions", default=None)
p.add_argument("--pid-dir", default=None)
a = p.parse_args()

trial = os.environ.get("CORRAL_TRIAL_ID", "manual")
if a.executions:
    with open(a.executions, "a") as f:
        f.write(
            json.dumps({"trial": trial, "attempt": os.environ.get("CORRAL_TRIAL_ATTEMPT"), "pid": os.getpid()}) + "\n"
        )
if a.pid_dir:
    Path(a.pid_dir, trial).write_text(str(os.getpid()))

params = {"lr": a.lr, "momentum": a.momentum, "opt": a.opt}
for step in range(1, a.steps + 1):
    time.sleep(a.step_sleep)
    report(step=step, loss=loss(params, step, a.steps))
print("trial done", flush=True)

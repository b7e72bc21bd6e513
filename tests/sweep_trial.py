"""A tiny CPU 'training' for sweep tests: no torch import, a second of work, reports a loss.

loss at step s = ((lr - 0.01)**2 + wd) * (1 + 1/(s + 1)); the best (last) value is
((lr - 0.01)**2 + wd) * 4/3. ``--fail-lr X`` makes the trial with lr == X exit 3 after
reporting once. Every execution appends a line to ``--executions FILE`` so tests can count
how many times each trial really ran.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from launcher.report import report  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--sleep", type=float, default=1.0)
p.add_argument("--fail-lr", type=float, default=None)
p.add_argument("--no-report", action="store_true")
p.add_argument("--executions", default=None)
a = p.parse_args()

if a.executions:
    line = json.dumps(
        {
            "trial": os.environ.get("CORRAL_TRIAL_ID"),
            "attempt": os.environ.get("CORRAL_TRIAL_ATTEMPT"),
            "node": os.environ.get("CORRAL_NODE"),
            "params": json.loads(os.environ.get("CORRAL_TRIAL_PARAMS", "{}")),
        }
    )
    with open(a.executions, "a") as f:
        f.write(line + "\n")

base = (a.lr - 0.01) ** 2 + a.wd
for step in range(3):
    time.sleep(a.sleep / 3)
    if not a.no_report:
        report(step=step, loss=base * (1 + 1 / (step + 1)))
    if a.fail_lr is not None and abs(a.lr - a.fail_lr) < 1e-12:
        print("failing on purpose", flush=True)
        sys.exit(3)
print("trial done", flush=True)

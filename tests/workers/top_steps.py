"""A job for ``corral top``'s tests: reports a step every TOP_STEP_S seconds (default 0.2) on an
absolute schedule, so each node's true rate is exactly 1 / TOP_STEP_S whatever the load; no torch."""

from __future__ import annotations

import os
import time

from launcher.report import report

step_s = float(os.environ.get("TOP_STEP_S", "0.2"))
steps = int(os.environ.get("TOP_STEPS", "100000"))
start = time.monotonic()
for i in range(steps):
    time.sleep(max(0.0, start + (i + 1) * step_s - time.monotonic()))
    report(step=i + 1, loss=1.0 / (i + 1))
    if i % 25 == 0:
        print(f"step {i + 1}", flush=True)

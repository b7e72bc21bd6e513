"""``report(step=..., loss=...)``: how a training script hands metrics to a corral sweep.

Inside a corral job (``CORRAL_RUN_DIR`` set) each call appends one JSON line to
``<run dir>/metrics.jsonl``, which the sweep controller and ``corral sweep status``
read. Every rank also leaves its progress mark for the hang watchdog (``launcher.heartbeat``).
Only global rank 0 writes there, so a multi-process trial reports once; each node's
local rank 0 also appends to ``<run dir>/nodes/<node>/metrics.jsonl`` (``corral top``). Outside corral
the line is printed, so the same script runs unchanged by hand. Importing this module
is cheap (no torch).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from launcher import heartbeat

METRICS_FILE = "metrics.jsonl"
NODE_METRICS = "nodes/{node}/metrics.jsonl"
"""Each node's first local process also writes its own records here (``corral top``'s steps/s per node)."""


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # a 0-d tensor or numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def report(**metrics: Any) -> dict[str, Any]:
    """Record metrics for this step, e.g. ``report(step=10, loss=0.31)``; returns the record written."""
    record = {"t": round(time.time(), 3), **{k: _jsonable(v) for k, v in metrics.items()}}
    line = json.dumps(record, default=str)
    run_dir = os.environ.get("CORRAL_RUN_DIR")
    if not run_dir:
        print(f"report: {line}", flush=True)
        return record
    heartbeat.beat(record.get("step"))  # every rank: the hang watchdog's progress signal
    node = os.environ.get("CORRAL_NODE")
    if node and os.environ.get("LOCAL_RANK", "0") == "0":
        _append_line(Path(run_dir) / NODE_METRICS.format(node=node), line)
    if os.environ.get("RANK", "0") != "0":
        return record
    _append_line(Path(run_dir) / METRICS_FILE, line)
    return record


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write of one line with O_APPEND: concurrent readers see whole lines.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)

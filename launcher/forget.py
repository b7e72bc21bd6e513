"""``corral rm``: forget finished runs (their run directories: record, logs, node state).

A run that may still be doing work (job state pending, running, partial or unknown, see
``launcher.runs.state``) is never touched. Checkpoints stay: they are what the job produced.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from launcher.backends import backend_of
from launcher.config import ClusterConfig
from launcher.errors import UserError
from launcher.jobs import read_statuses, runs_dir
from launcher.runs.record import RECORD_FILE, RunRecord, list_names, load
from launcher.runs.state import ACTIVE, JobStatus

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """'30m', '12h', '7d', '45s' -> seconds; UserError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not m:
        raise UserError(f"--older-than {text!r}: expected a number and a unit, e.g. 30m, 12h or 7d")
    return float(m.group(1)) * UNITS[m.group(2)]


def _statuses(records: list[RunRecord], cluster: ClusterConfig) -> list[JobStatus]:
    return read_statuses(records, cluster)


def select_runs(
    cluster: ClusterConfig, names: list[str], older_than_s: float | None, now: float | None = None
) -> tuple[list[RunRecord], list[tuple[str, str]]]:
    """The runs to forget and (name, why) for those kept. A named job that may still run is an
    error (nothing is removed); one only matched by age is kept with a note."""
    root = runs_dir(cluster)
    named = [load(root, n) for n in dict.fromkeys(names)]
    cutoff = (now or time.time()) - older_than_s if older_than_s is not None else None
    aged = [load(root, n) for n in list_names(root) if n not in names] if cutoff is not None else []
    aged = [r for r in aged if r.started_at < cutoff]
    statuses = _statuses(named + aged, cluster)
    busy = [(r, s) for r, s in zip(named, statuses) if may_run(s)]
    if busy:
        desc = "; ".join(f"{r.name} is {s.state}" for r, s in busy)
        raise UserError(
            f"corral rm: {desc}: a job that may still run is not removed",
            hint=f"stop it first: corral stop {busy[0][0].name}",
        )
    kept = [(r.name, f"{s.state}; stop it first") for r, s in zip(aged, statuses[len(named) :]) if may_run(s)]
    chosen = named + [r for r, s in zip(aged, statuses[len(named) :]) if not may_run(s)]
    return chosen, kept


def may_run(status: JobStatus) -> bool:
    """Active, or ``hung`` while a node still runs it (the watchdog's ``dump`` kills nothing)."""
    return status.state in ACTIVE or (status.state == "hung" and status.running)


def forget_runs(cluster: ClusterConfig, records: list[RunRecord]) -> list[tuple[RunRecord, str]]:
    """Remove each run's directory (on every node), its archived earlier runs and an empty checkpoint
    directory; returns (record, note) with what was left and why."""
    done = []
    for record in records:
        problems = backend_of(record).forget(record, cluster)
        run_dir = Path(record.plan.run_dir)
        if (run_dir / RECORD_FILE).is_file():
            shutil.rmtree(run_dir)
        for old in (run_dir.parent / ".history").glob(f"{record.name}-*"):
            if (old / RECORD_FILE).is_file():
                shutil.rmtree(old)
        ckpt = Path(record.plan.ckpt_dir)
        note = ""
        if ckpt.is_dir():
            if any(ckpt.iterdir()):
                note = f"; checkpoints kept in {ckpt}"
            else:
                os.rmdir(ckpt)
        if problems:
            note += "; not removed on " + "; ".join(problems)
        done.append((record, note))
    return done


__all__ = ["forget_runs", "parse_age", "select_runs"]

"""The sweep's journal: append-only JSON lines on the shared runs dir, fsynced, replayed into state.

Why a journal and not SQLite: SQLite's locking is unreliable on network filesystems and
the target cloud's shared drives; an append-only file written by one controller at a
time (see ``lock.py``) needs nothing but ``O_APPEND`` and ``fsync``. A crash can at worst
leave a torn last line, which replay skips (and the next append starts on a fresh line).

Events (``ev``):
  controller  {action: start|exit, pid, host, reason}
  start       {trial, attempt, run, nodes, params, optuna?}   written BEFORE the trial is launched;
                                                     optuna: the trial's number in the sweep's Optuna study
  end         {trial, attempt, run, result: done|failed|stopped|lost|pruned, exit_codes, metric, error, step?}
                                                     pruned: stopped early by early_terminate, written
                                                     BEFORE its run is stopped and the study told
  stopped_at  {trial, attempt, run, step}             after a pruned run was stopped: the last step it reported
                                                     (it runs on between the report that decided and the stop)
  node_aside  {node, reason}                          a node that failed 2 different trials in a row
  finished    {counts}                                every trial is done or failed
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
RESULTS = ("done", "failed", "stopped", "lost", "pruned")
"""How an attempt ended. stopped (by `sweep stop`), lost (its run vanished while no controller watched) and pruned
(early_terminate stopped a losing trial: final, never retried) are not failures."""

NODE_FAILURE_STREAK = 2
"""A node that fails this many different trials in a row is set aside."""


class Journal:
    """Append-only JSON-lines file; each append is fsynced before it returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, ev: str, **fields: Any) -> dict[str, Any]:
        record = {"v": JOURNAL_VERSION, "t": round(time.time(), 3), "ev": ev, **fields}
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if _ends_without_newline(fd):
                line = "\n" + line  # a torn line from a crash: never glue a record onto it
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def read(self) -> list[dict[str, Any]]:
        """Every complete record; torn or foreign lines are skipped with a warning."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return parse_lines(text.splitlines(), str(self.path))


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def parse_lines(lines: Iterable[str], source: str = "journal") -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a torn or unreadable line", source, n)
            continue
        if isinstance(rec, dict) and "ev" in rec:
            out.append(rec)
    return out


# ---- replay: events -> state -------------------------------------------------


@dataclass
class Attempt:
    number: int
    run: str
    nodes: list[str]
    started: float
    result: Optional[str] = None
    exit_codes: dict[str, Optional[int]] = field(default_factory=dict)
    metric: Optional[float] = None
    error: Optional[str] = None
    ended: Optional[float] = None
    step: Optional[int] = None
    """pruned: the step whose report decided it."""
    stopped_at: Optional[int] = None
    """pruned: the last step the run reported before its stop took effect."""


@dataclass
class TrialRecord:
    id: str
    params: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    optuna: Optional[int] = None
    """The trial's number in the sweep's Optuna study (bayes or early_terminate), from its first start."""

    @property
    def running(self) -> Optional[Attempt]:
        return self.attempts[-1] if self.attempts and self.attempts[-1].result is None else None

    @property
    def failures(self) -> int:
        return sum(a.result == "failed" for a in self.attempts)

    @property
    def done(self) -> Optional[Attempt]:
        return next((a for a in self.attempts if a.result == "done"), None)

    @property
    def pruned(self) -> Optional[Attempt]:
        return next((a for a in self.attempts if a.result == "pruned"), None)

    def state(self, retries: int) -> str:
        """pending | running | done | pruned | failed."""
        if self.running:
            return "running"
        if self.done:
            return "done"
        if self.pruned:
            return "pruned"
        if self.failures > retries:
            return "failed"
        return "pending"

    @property
    def next_attempt(self) -> int:
        return (self.attempts[-1].number if self.attempts else 0) + 1

    @property
    def last_nodes(self) -> list[str]:
        return self.attempts[-1].nodes if self.attempts else []


@dataclass
class SweepState:
    """What the journal says: every trial ever started, nodes set aside, per-node failure streaks."""

    trials: dict[str, TrialRecord] = field(default_factory=dict)
    nodes_aside: dict[str, str] = field(default_factory=dict)
    streaks: dict[str, list[str]] = field(default_factory=dict)
    """node -> ids of the different trials it failed in a row since its last success."""
    finished: bool = False
    problems: list[str] = field(default_factory=list)
    """Inconsistencies found while replaying (an attempt started twice, an end without a start)."""

    def apply(self, rec: dict[str, Any]) -> None:
        handler = _HANDLERS.get(rec.get("ev", ""))
        if handler:
            handler(self, rec)

    def started_trials(self) -> int:
        """Distinct trials ever started: what run_cap limits."""
        return sum(1 for t in self.trials.values() if t.attempts)

    def running(self) -> list[tuple[TrialRecord, Attempt]]:
        return [(t, t.running) for t in self.trials.values() if t.running]

    def busy_nodes(self) -> set[str]:
        return {n for _, a in self.running() for n in a.nodes}


def _on_start(st: SweepState, rec: dict[str, Any]) -> None:
    trial = st.trials.setdefault(rec["trial"], TrialRecord(rec["trial"], rec.get("params", {})))
    if rec.get("optuna") is not None:
        if trial.optuna is not None and trial.optuna != rec["optuna"]:
            st.problems.append(
                f"trial {trial.id}: attempt {rec['attempt']} names Optuna trial {rec['optuna']}, "
                f"an earlier attempt {trial.optuna}"
            )
        trial.optuna = rec["optuna"]
    if trial.running:
        st.problems.append(
            f"trial {trial.id}: attempt {rec['attempt']} started while attempt {trial.running.number} was running"
        )
    trial.attempts.append(Attempt(rec["attempt"], rec["run"], list(rec.get("nodes", [])), rec.get("t", 0.0)))
    st.finished = False


def _on_end(st: SweepState, rec: dict[str, Any]) -> None:
    trial = st.trials.get(rec["trial"])
    att = next((a for a in (trial.attempts if trial else []) if a.number == rec["attempt"]), None)
    if att is None:
        st.problems.append(f"trial {rec['trial']}: attempt {rec['attempt']} ended but never started")
        return
    if att.result is not None:
        st.problems.append(f"trial {rec['trial']}: attempt {rec['attempt']} ended twice")
        return
    att.result, att.ended = rec["result"], rec.get("t")
    att.exit_codes = dict(rec.get("exit_codes") or {})
    att.metric, att.error, att.step = rec.get("metric"), rec.get("error"), rec.get("step")
    if att.result == "done" and sum(a.result == "done" for a in trial.attempts) > 1:  # type: ignore[union-attr]
        st.problems.append(f"trial {rec['trial']}: finished more than once")
    _update_streaks(st, rec["trial"], att)


def _update_streaks(st: SweepState, trial_id: str, att: Attempt) -> None:
    if att.result == "done":
        for node in att.nodes:
            st.streaks[node] = []
    elif att.result == "failed":
        for node in blamed_nodes(att):
            streak = st.streaks.setdefault(node, [])
            if trial_id not in streak:
                streak.append(trial_id)


def blamed_nodes(att: Attempt) -> list[str]:
    """Nodes a failed attempt counts against: those that exited non-zero, else all of its nodes."""
    bad = [n for n, code in att.exit_codes.items() if code not in (0, None)]
    return bad or list(att.nodes)


def _on_node_aside(st: SweepState, rec: dict[str, Any]) -> None:
    st.nodes_aside[rec["node"]] = rec.get("reason", "")


def _on_finished(st: SweepState, rec: dict[str, Any]) -> None:
    st.finished = True


def _on_stopped_at(st: SweepState, rec: dict[str, Any]) -> None:
    trial = st.trials.get(rec["trial"])
    att = next((a for a in (trial.attempts if trial else []) if a.number == rec["attempt"]), None)
    if att is not None:
        att.stopped_at = rec["step"]


_HANDLERS = {
    "start": _on_start,
    "end": _on_end,
    "stopped_at": _on_stopped_at,
    "node_aside": _on_node_aside,
    "finished": _on_finished,
}


def replay(records: Iterable[dict[str, Any]]) -> SweepState:
    st = SweepState()
    for rec in records:
        try:
            st.apply(rec)
        except (KeyError, TypeError) as exc:
            st.problems.append(f"malformed {rec.get('ev')} record ({exc}): {rec}")
    return st

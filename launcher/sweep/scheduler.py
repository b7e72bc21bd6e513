"""Pure scheduling decisions: which trial starts on which nodes, how a run ended, which node to set aside.

No ssh, no tmux, no clock: the controller feeds in the journal's state and the nodes'
run states, and executes what comes out. The rules:

* a trial never runs twice at once (a running trial is never a candidate);
* run_cap limits the distinct trials ever started (retries of a started trial do not count);
* ``max_concurrent`` limits the trials running at once; each trial takes ``nodes`` whole
  nodes, all free at the same time (gang scheduling), one trial per node;
* retries go first, on nodes where that trial has not failed yet when possible, so a
  broken trial does not look like a broken node;
* a node that failed 2 *different* trials in a row is set aside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from launcher.sweep.config import SweepConfig
from launcher.sweep.generate import Trial
from launcher.sweep.journal import NODE_FAILURE_STREAK, SweepState, TrialRecord


@dataclass(frozen=True)
class StartDecision:
    trial: Trial
    attempt: int
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class NodeRun:
    """One node's view of a trial's run, as the launch path's status reports it."""

    state: Literal["running", "exited", "missing", "unknown"]
    """unknown: the node did not answer (unreachable); its run is neither judged ended nor lost."""
    exit_code: Optional[int] = None


JOB_WIDE = "*"
"""Key of a run state that holds for every node of the trial (a job whose nodes the scheduler placed: see ``sweep.slots``)."""


@dataclass(frozen=True)
class Outcome:
    """How a run stands: still running, or ended with a result (and whether its other nodes must be stopped)."""

    result: Optional[Literal["done", "failed", "lost"]]
    exit_codes: dict[str, Optional[int]]
    stop_rest: bool = False


def plan_starts(trials: list[Trial], state: SweepState, nodes: list[str], cfg: SweepConfig) -> list[StartDecision]:
    """The trials to start now, in order, each with the nodes it gets."""
    busy = state.busy_nodes()
    free = [n for n in nodes if n not in busy and n not in state.nodes_aside]
    running = len(state.running())
    limit = cfg.max_concurrent or len(nodes)
    started = state.started_trials()
    decisions: list[StartDecision] = []
    for trial, record in _queue(trials, state, cfg.retries):
        if running >= limit or len(free) < cfg.nodes:
            break
        is_new = record is None or not record.attempts
        if is_new and cfg.run_cap is not None and started >= cfg.run_cap:
            continue
        chosen = _pick_nodes(free, cfg.nodes, record)
        free = [n for n in free if n not in chosen]
        decisions.append(StartDecision(trial, record.next_attempt if record else 1, tuple(chosen)))
        running += 1
        started += is_new
    return decisions


def _queue(trials: list[Trial], state: SweepState, retries: int) -> list[tuple[Trial, Optional[TrialRecord]]]:
    """Pending trials: those to retry first (in journal order), then the never-started ones in sweep order."""
    again, new = [], []
    for t in trials:
        rec = state.trials.get(t.id)
        if rec is None or not rec.attempts:
            new.append((t, rec))
        elif rec.state(retries) == "pending":
            again.append((t, rec))
    return again + new


def _pick_nodes(free: list[str], count: int, record: Optional[TrialRecord]) -> list[str]:
    failed_on = set()
    for a in record.attempts if record else []:
        if a.result == "failed":
            failed_on |= set(a.nodes)
    preferred = sorted(free, key=lambda n: n in failed_on)  # stable: cluster order otherwise
    return preferred[:count]


def judge_run(nodes: list[str], seen: dict[str, NodeRun]) -> Outcome:
    """Pure: a trial's result from its nodes' states (a node absent from ``seen`` counts as missing)."""
    runs = {n: seen.get(n, seen.get(JOB_WIDE, NodeRun("missing"))) for n in nodes}
    codes = {n: r.exit_code for n, r in runs.items() if r.state == "exited"}
    failed = any(c not in (0, None) for c in codes.values())
    still = any(r.state in ("running", "unknown") for r in runs.values())
    if failed:
        return Outcome("failed", codes, stop_rest=still)
    if still:
        return Outcome(None, codes)
    if all(r.state == "exited" for r in runs.values()):
        return Outcome("done", codes)
    return Outcome("lost", codes)  # some node's session vanished without an exit status


def nodes_to_set_aside(state: SweepState) -> list[str]:
    """Nodes whose streak of different failed trials reached the limit and are not yet aside."""
    return [
        n for n, streak in state.streaks.items() if len(streak) >= NODE_FAILURE_STREAK and n not in state.nodes_aside
    ]


def counts(trials: list[Trial], state: SweepState, retries: int) -> dict[str, int]:
    out = {"pending": 0, "running": 0, "done": 0, "pruned": 0, "failed": 0}
    for t in trials:
        rec = state.trials.get(t.id)
        out[rec.state(retries) if rec else "pending"] += 1
    return out


def unreachable_pending(trials: list[Trial], state: SweepState, nodes: list[str], cfg: SweepConfig) -> int:
    """Pending trials that can never start: past run_cap."""
    if cfg.run_cap is None:
        return 0
    started = state.started_trials()
    room = max(cfg.run_cap - started, 0)
    never_started = sum(1 for t in trials if t.id not in state.trials or not state.trials[t.id].attempts)
    return max(never_started - room, 0)


def sweep_over(trials: list[Trial], state: SweepState, nodes: list[str], cfg: SweepConfig) -> Optional[str]:
    """Why the sweep cannot go on (None while it can): everything ran, or no usable nodes are left."""
    c = counts(trials, state, cfg.retries)
    if c["running"]:
        return None
    if c["pending"] - unreachable_pending(trials, state, nodes, cfg) <= 0:
        return "finished"
    usable = [n for n in nodes if n not in state.nodes_aside]
    if len(usable) < cfg.nodes:
        aside = ", ".join(f"{n} ({r})" for n, r in state.nodes_aside.items())
        return f"stuck: {len(usable)} usable node(s) left, each trial needs {cfg.nodes}; set aside: {aside}"
    return None

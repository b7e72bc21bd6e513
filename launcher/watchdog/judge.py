"""The watchdog's verdicts, as pure functions of the samples its nodes recorded.

Like ``launcher/backends/ssh/preflight.py``: the node side gathers facts (each rank's last step and its age,
its process state, the log's silence, its stack), and everything decided from them is here, in
functions of plain data that the tests feed recorded samples to, without a process.

- ``judge_hang``: is the job hung? No rank advanced for ``hang_after`` (the first step of an
  attempt gets ``first_step_grace``; a checkpoint save in progress counts as progress, unless a rank is
  stopped (the save waits for it in its collective); a job
  that never reported a step is judged by its log output).
- ``choose_suspects``: which rank(s) caused it, with the evidence: not running (stopped,
  uninterruptible sleep, zombie, gone), outside any collective while others wait in one, or
  behind the others' step.
- ``stragglers``: nodes whose ranks stay behind the leading step for long.

Standard library only: this module is shipped to the nodes with the watchdog (``node.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

NOT_RUNNING = {
    "T": "stopped (SIGSTOP or a debugger)",
    "t": "stopped by a tracer",
    "D": "in uninterruptible sleep (D state: a stuck driver or filesystem)",
    "Z": "a zombie (exited, not reaped)",
    "X": "dead",
    "gone": "gone (the process no longer exists)",
}
"""``/proc/PID/stat`` states of a rank that cannot be taking part in a collective, in words."""
STOPPED = frozenset({"T", "t"})
"""States that end every rank's checkpoint exemption: a save is collective (the group's publish), so the others'
save waits on a stopped rank for ever. Not D (a slow volume's write is D) nor gone or zombie (a rank that finished
first while another saves at the end)."""

COLLECTIVE_CALLS = frozenset(
    {
        "all_reduce",
        "all_gather",
        "all_gather_into_tensor",
        "all_gather_object",
        "reduce_scatter",
        "reduce_scatter_tensor",
        "all_to_all",
        "all_to_all_single",
        "broadcast",
        "broadcast_object_list",
        "barrier",
        "monitored_barrier",
        "reduce",
        "gather",
        "scatter",
        "send",
        "recv",
        "wait",
        "_wait",
        "synchronize",
    }
)
"""Python frames (in ``torch/distributed``) of a rank waiting for its peers."""
NATIVE_COLLECTIVE = re.compile(r"gloo::|c10d::.*(Work|wait|allreduce|barrier|broadcast)|nccl[A-Z]\w*|ncclKernel")
"""Native frames (``py-spy dump --native``) of the same."""
FRAME = re.compile(r"^\s+(?P<func>\S+) \((?P<file>[^:()]+)(?::\d+)?\)")


@dataclass(frozen=True)
class RankSample:
    """One rank as its node saw it at one sample."""

    node: str
    rank: int
    pid: int
    state: str
    """``/proc`` state letter (R, S, D, T, Z, ...) or ``gone``."""
    step: int | float | str | None = None
    """Last step this process reported (None: it has not reported since it started)."""
    step_age_s: float | None = None
    """Seconds since that report, on the node's own clock."""
    phase: str = "step"
    """``checkpoint`` while a save blocks the rank (``Checkpointer`` marks it)."""
    phase_age_s: float | None = None
    local_rank: int = 0


@dataclass(frozen=True)
class NodeSample:
    """What one node's watchdog saw: its ranks, the age of its workers and of its last log line."""

    node: str
    ranks: tuple[RankSample, ...] = ()
    attempt_age_s: float | None = None
    """Seconds since the youngest of the node's current workers started (a restart resets it)."""
    log_quiet_s: float | None = None
    """Seconds since the node's log last grew (the watchdog's own lines not counted)."""
    stale_s: float = 0.0
    """Seconds since this sample arrived (the leader's view of a node that stopped answering)."""


@dataclass(frozen=True)
class Policy:
    hang_after: float
    first_step_grace: float
    """The first step's allowance (already at least ``hang_after``)."""
    straggler_after: float | None = None


@dataclass(frozen=True)
class Verdict:
    hung: bool
    signal: str
    """What progress was judged by: ``report`` (steps), ``log`` (output), ``checkpoint`` (a save
    in progress), ``first-step`` (within the grace), ``none`` (no workers to judge)."""
    quiet_s: float
    limit_s: float
    reason: str


def _ranks(samples: list[NodeSample]) -> list[RankSample]:
    return [r for s in samples for r in s.ranks]


def _progress_age(r: RankSample) -> float:
    """Seconds since the rank last advanced: its last step, or the end of a checkpoint save (the
    step before a long save is old when the save ends; the next report comes a step later)."""
    ages = [a for a in (r.step_age_s, r.phase_age_s) if a is not None]
    return min(ages) if ages else 0.0


def _plus(age: float | None, stale: float) -> float | None:
    return None if age is None else age + stale


def aged(s: NodeSample) -> NodeSample:
    """A sample as old as it is: a node whose watchdog stopped answering does not keep its last
    fresh step (or a save it was in) forever; every age grows by the time since it arrived."""
    if not s.stale_s:
        return s
    st = s.stale_s
    ranks = tuple(replace(r, step_age_s=_plus(r.step_age_s, st), phase_age_s=_plus(r.phase_age_s, st)) for r in s.ranks)
    return NodeSample(s.node, ranks, _plus(s.attempt_age_s, st), _plus(s.log_quiet_s, st), st)


def judge_hang(samples: list[NodeSample], policy: Policy) -> Verdict:
    """Hung or not, and why, from the latest sample of every node (see the module docstring)."""
    fresh_nodes = {s.node for s in samples if s.stale_s < policy.hang_after}
    samples = [aged(s) for s in samples]
    ranks = _ranks(samples)
    if not ranks:
        return Verdict(False, "none", 0.0, policy.hang_after, "no workers running")
    # a stopped rank ends every rank's exemption: the others' save waits for it in the save's own collective
    stopped = any(r.state in STOPPED for r in ranks)
    saving = [
        r
        for r in ranks
        if not stopped and r.phase == "checkpoint" and r.state not in NOT_RUNNING and r.node in fresh_nodes
    ]
    if saving:
        r = saving[0]
        age = r.phase_age_s or 0.0
        return Verdict(
            False, "checkpoint", age, policy.hang_after, f"checkpoint save in progress on {r.node} rank {r.rank}"
        )
    reported = [r for r in ranks if r.step is not None and r.step_age_s is not None]
    if reported:
        freshest = min(reported, key=_progress_age)
        quiet = _progress_age(freshest)
        if quiet >= policy.hang_after:
            return Verdict(True, "report", quiet, policy.hang_after, f"no rank reported a step for {quiet:.0f} s")
        return Verdict(False, "report", quiet, policy.hang_after, f"{freshest.node} rank {freshest.rank} advanced")
    ages = [s.attempt_age_s for s in samples if s.attempt_age_s is not None]
    attempt_age = min(ages) if ages else 0.0
    quiets = [s.log_quiet_s for s in samples if s.log_quiet_s is not None]
    log_quiet = min(quiets) if quiets else attempt_age
    if attempt_age < policy.first_step_grace:
        return Verdict(False, "first-step", attempt_age, policy.first_step_grace, "first step, within the grace")
    quiet = min(log_quiet, attempt_age)
    if quiet >= policy.hang_after:
        return Verdict(
            True,
            "log",
            quiet,
            policy.hang_after,
            f"no step reported since the workers started {attempt_age:.0f} s ago and no log output for {quiet:.0f} s",
        )
    return Verdict(False, "log", quiet, policy.hang_after, "log output")


# ---------------------------------------------------------------------------- stacks


@dataclass(frozen=True)
class StackView:
    """What a rank's stack dump says."""

    in_collective: bool | None
    """None: no stack (the dump failed)."""
    top: str | None = None
    """The innermost frame of the main thread, ``func (file:line)``."""
    call: str | None = None
    """The collective it waits in, when it does."""


def main_thread(text: str) -> list[str]:
    """The frame lines of the main thread in ``py-spy dump`` output (the first thread if none is named so)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("Thread "):
            blocks.append((line, []))
        elif blocks and FRAME.match(line):
            blocks[-1][1].append(line.strip())
    if not blocks:
        return []
    for head, frames in blocks:
        if '"MainThread"' in head:
            return frames
    return blocks[0][1]


def read_stack(text: str | None) -> StackView:
    """Whether the main thread waits in a collective; its innermost Python frame (the line of the
    training script or of torch a person reads first), else its innermost frame."""
    if not text:
        return StackView(None)
    frames = main_thread(text)
    if not frames:
        return StackView(None)
    parsed = [(line, FRAME.match("  " + line)) for line in frames]
    python = [line for line, m in parsed if m and m.group("file").endswith(".py")]
    top = python[0] if python else frames[0]
    for _line, m in parsed:
        if m and "torch/distributed" in m.group("file") and m.group("func") in COLLECTIVE_CALLS:
            return StackView(True, top, m.group("func"))
    for line, m in parsed:
        if NATIVE_COLLECTIVE.search(line):
            return StackView(True, top, m.group("func") if m else line)
    return StackView(False, top)


@dataclass(frozen=True)
class Suspect:
    node: str
    rank: int
    reason: str
    """``not-running`` | ``outside-collective`` | ``behind``."""
    evidence: str


def _num(step: object) -> float | None:
    return float(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def choose_suspects(ranks: list[RankSample], stacks: dict[tuple[str, int], str | None]) -> list[Suspect]:
    """The rank(s) that hold the others up, first rule that names any wins (module docstring)."""
    out = []
    for r in ranks:
        if r.state in NOT_RUNNING:
            out.append(Suspect(r.node, r.rank, "not-running", f"process {r.pid} is {NOT_RUNNING[r.state]}"))
    if out:
        return out
    views = {(r.node, r.rank): read_stack(stacks.get((r.node, r.rank))) for r in ranks}
    waiting = [k for k, v in views.items() if v.in_collective]
    if waiting:
        calls = sorted({views[k].call or "" for k in waiting})
        for r in ranks:
            v = views[(r.node, r.rank)]
            if v.in_collective is False:
                out.append(
                    Suspect(
                        r.node,
                        r.rank,
                        "outside-collective",
                        f"not in a collective (at {v.top}) while {len(waiting)} rank(s) wait in {', '.join(calls)}",
                    )
                )
        if out:
            return out
    steps = [(r, _num(r.step)) for r in ranks]
    known = [s for _, s in steps if s is not None]
    if known and min(known) < max(known):
        lead = max(known)
        for r, s in steps:
            if s is not None and s < lead:
                out.append(Suspect(r.node, r.rank, "behind", f"at step {r.step} while the leading rank is at {lead:g}"))
    return out


def choose_action(on_hang: str, restarts_done: int, max_restarts: int) -> tuple[str, str]:
    """The action for this hang and why it differs from ``on_hang``: a restart only while torchrun
    has restarts left (never a restart loop), else the job stops as hung."""
    if on_hang == "restart" and restarts_done >= max_restarts:
        return "stop", f"the watchdog's {restarts_done} restart(s) used max_restarts {max_restarts}"
    return on_hang, ""


def stragglers(history: dict[str, float], now: float, policy: Policy) -> list[str]:
    """Nodes behind the leading step since ``history[node]`` (when it fell behind) for at least ``straggler_after``."""
    if policy.straggler_after is None:
        return []
    return sorted(n for n, since in history.items() if now - since >= policy.straggler_after)


def behind_nodes(samples: list[NodeSample]) -> set[str]:
    """Nodes whose best rank is behind the leading step right now."""
    best: dict[str, float] = {}
    for s in samples:
        steps = [x for x in (_num(r.step) for r in s.ranks) if x is not None]
        if steps:
            best[s.node] = max(steps)
    if len(best) < 2:
        return set()
    lead = max(best.values())
    return {n for n, v in best.items() if v < lead}


__all__ = [
    "NOT_RUNNING",
    "NodeSample",
    "Policy",
    "RankSample",
    "StackView",
    "Suspect",
    "Verdict",
    "behind_nodes",
    "choose_action",
    "choose_suspects",
    "judge_hang",
    "main_thread",
    "read_stack",
    "stragglers",
]

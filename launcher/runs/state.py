"""A job's state, derived from its nodes' states: one pure function, one table.

Every view (``corral ps`` table and ``--json``, ``logs -f``, ``launch --follow``, the API's
``JobStatus.state``) takes the job-level state from ``job_state``, so they cannot disagree.

Node states (read from each node; ``pending`` is a node a scheduler has not started yet):
``pending``, ``running``, ``exited`` (with an exit code), ``missing`` (no session and no exit
status: the node lost the job), ``unknown`` (the node did not answer).

The launcher's record adds what only it knows: ``starting`` (the launch is under way),
``failed`` (the start failed and was rolled back) and ``stopped`` (``corral stop`` ended the
job while a node still ran it).

Rules, first match wins:

| # | record / nodes                                        | job state  |
|---|-------------------------------------------------------|------------|
| 1 | record ``failed`` (the start was rolled back)         | failed     |
| 1b| the hang watchdog found the job hung (``dump``/``stop``) and not every node exited 0 | hung |
| 2 | no nodes yet, or record ``starting`` and none started | pending    |
| 3 | every node pending                                    | pending    |
| 4 | every node running (or pending)                       | running    |
| 5 | some node running, another exited/missing             | partial    |
| 6 | some node unknown, none running                       | unknown    |
| 7 | record ``stopped``                                    | stopped    |
| 8 | every node exited 0                                   | exited     |
| 9 | a node exited non-zero or is missing                  | failed     |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from launcher.watchdog.events import WatchdogView

JobState = Literal["pending", "running", "partial", "unknown", "stopped", "exited", "failed", "hung"]
ACTIVE: frozenset[str] = frozenset({"pending", "running", "partial", "unknown"})
"""Job states in which some node may still be doing work (``corral rm`` refuses these)."""


def job_state(record_state: str, nodes: Iterable[tuple[str, int | None]], hung: bool = False) -> JobState:
    """The job's state from the record's state and each node's (state, exit code); see the table above.
    ``hung``: the hang watchdog's verdict (docs/WATCHDOG.md)."""
    nodes = list(nodes)
    states = [s for s, _ in nodes]
    if record_state == "failed":
        return "failed"
    if hung and not (nodes and all(s == "exited" and code == 0 for s, code in nodes)):
        return "hung"
    if not nodes or (record_state == "starting" and all(s in ("missing", "pending") for s in states)):
        return "pending"
    if all(s == "pending" for s in states):
        return "pending"
    if all(s in ("running", "pending") for s in states):
        return "running"
    if any(s in ("running", "pending") for s in states):
        return "partial"
    if any(s == "unknown" for s in states):
        return "unknown"
    if record_state == "stopped":
        return "stopped"
    if all(s == "exited" and code == 0 for s, code in nodes):
        return "exited"
    return "failed"


@dataclass
class NodeStatus:
    node: str
    host: str
    state: str
    """pending | running | exited | missing | unknown (node unreachable)."""
    exit_code: int | None = None
    elapsed_s: float | None = None
    detail: str | None = None


@dataclass
class JobStatus:
    name: str
    record_state: str
    """The launcher's record: starting | running | stopped | failed."""
    nodes: list[NodeStatus] = field(default_factory=list)
    watchdog: WatchdogView = field(default_factory=WatchdogView)
    """The hang watchdog's state and events, from the job's first node (docs/WATCHDOG.md)."""

    @property
    def state(self) -> str:
        """The job's state, derived from the nodes' (``job_state``, one table for every view)."""
        return job_state(self.record_state, [(n.state, n.exit_code) for n in self.nodes], self.watchdog.hung)

    @property
    def running(self) -> bool:
        return any(n.state == "running" for n in self.nodes)

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.watchdog.events

    @property
    def done(self) -> bool:
        return not any(n.state in ("running", "unknown", "pending") for n in self.nodes)

    @property
    def ok(self) -> bool:
        return all(n.state == "exited" and n.exit_code == 0 for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "record_state": self.record_state,
            "nodes": [asdict(n) for n in self.nodes],
            "suspect": self.watchdog.suspect_line(),
            "events": self.events,
        }


@dataclass
class StopResult:
    """One node's answer to ``corral stop``: processes found, killed, and any left."""

    node: str
    found: int = 0
    killed: int = 0
    remaining: list[int] = field(default_factory=list)
    error: str | None = None


__all__ = ["ACTIVE", "JobState", "JobStatus", "NodeStatus", "StopResult", "job_state"]

"""The run record's view of the watchdog: its state and events as the leader node wrote them.

Pure: the texts of ``<run dir>/watchdog/state.json`` and ``events.jsonl`` (read on the first
node by its agent, with the job's status) -> ``WatchdogView``, and the one-line forms that
``ps``, ``logs`` and ``top`` print.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

STATE_FILE = "watchdog/state.json"
EVENTS_FILE = "watchdog/events.jsonl"


@dataclass
class WatchdogView:
    state: str | None = None
    """``watching`` | ``hung`` | ``restarting`` (None: no watchdog has written anything yet)."""
    detail: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hung(self) -> bool:
        return self.state == "hung"

    def suspect_line(self) -> str | None:
        """``hung: node2 rank 3: process 123 is stopped ...`` for ``ps``'s detail column."""
        if not self.hung:
            return None
        evidence = "; ".join(self.detail.get("evidence") or []) or "no rank stands out"
        return f"hung ({self.detail.get('action', 'dump')}): {evidence}"


def watchdog_paths(run_dir: str) -> dict[str, str]:
    return {"watchdog_state": os.path.join(run_dir, STATE_FILE), "watchdog_events": os.path.join(run_dir, EVENTS_FILE)}


def parse(state_text: str | None, events_text: str | None) -> WatchdogView:
    view = WatchdogView()
    if state_text:
        try:
            body = json.loads(state_text)
            view.state, view.detail = body.get("state"), body
        except ValueError:
            pass
    for line in (events_text or "").splitlines():
        try:
            view.events.append(json.loads(line))
        except ValueError:
            continue  # a line cut by the status reply's size cap
    return view


def event_line(event: dict[str, Any]) -> str:
    """One line per event: ``2026-12-05 08:12:03 hang node2 rank 3: ... -> dump (stacks in ...)``."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.get("at", 0)))
    evidence = "; ".join(event.get("evidence") or [])
    stacks = f" (stacks in {event['stacks']})" if event.get("stacks") else ""
    return f"{at} {event.get('kind', '?')}: {evidence} -> {event.get('action', 'none')}{stacks}"


__all__ = ["EVENTS_FILE", "STATE_FILE", "WatchdogView", "event_line", "parse", "watchdog_paths"]

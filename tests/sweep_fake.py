"""A stateful in-process fake of the launch path, for unit tests of the sweep's scheduling workflow only.

Like submitit's fake scheduler: it remembers what was launched, on which nodes, and makes
each run end after a number of polls with an exit code and a reported metric chosen by
the test. Integration tests use the real launch path on the simulated cluster instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from launcher.config import JobConfig
from launcher.sweep.scheduler import NodeRun


@dataclass
class FakeRun:
    job: JobConfig
    nodes: list[str]
    polls_left: int
    exit_code: int
    stopped: bool = False


@dataclass
class Behaviour:
    polls: int = 2
    exit_code: int = 0
    metric: Optional[float] = 1.0


@dataclass
class FakeBackend:
    runs_root: Path
    behave: Callable[[JobConfig, list[str]], Behaviour] = lambda job, nodes: Behaviour()
    runs: dict[str, FakeRun] = field(default_factory=dict)
    launches: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    max_running_seen: int = 0
    overlaps: list[str] = field(default_factory=list)

    def running(self) -> list[FakeRun]:
        return [r for r in self.runs.values() if r.polls_left > 0 and not r.stopped]

    def launch(self, job: JobConfig, nodes: list[str], *, plain: bool, preflight: bool) -> None:
        if job.name in self.runs:
            raise AssertionError(f"run name {job.name} launched twice")
        busy = {n for r in self.running() for n in r.nodes}
        if busy & set(nodes):
            self.overlaps.append(job.name)
        trial = job.env["CORRAL_TRIAL_ID"]
        if any(r.job.env["CORRAL_TRIAL_ID"] == trial for r in self.running()):
            self.overlaps.append(f"trial {trial} twice at once")
        b = self.behave(job, nodes)
        self.runs[job.name] = FakeRun(job, list(nodes), b.polls, b.exit_code)
        self.launches.append((job.name, tuple(nodes)))
        self.max_running_seen = max(self.max_running_seen, len(self.running()))
        run_dir = self.run_dir(job.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        if b.metric is not None:
            (run_dir / "metrics.jsonl").write_text(
                json.dumps({"step": 1, "loss": b.metric + 1}) + "\n" + json.dumps({"step": 2, "loss": b.metric}) + "\n"
            )

    def poll(self, name: str) -> dict[str, NodeRun]:
        run = self.runs.get(name)
        if run is None:
            return {}
        if run.stopped:
            return {n: NodeRun("exited", 143) for n in run.nodes}
        if run.polls_left > 0:
            run.polls_left -= 1
            if run.polls_left > 0:
                return {n: NodeRun("running") for n in run.nodes}
        return {n: NodeRun("exited", run.exit_code) for n in run.nodes}

    def stop(self, name: str) -> None:
        if name in self.runs:
            self.runs[name].stopped = True

    def run_dir(self, name: str) -> Path:
        return self.runs_root / name

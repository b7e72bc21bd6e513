"""Where a sweep's state lives: ``<storage.runs>/_sweeps/<name>/`` on the shared runs dir.

The leading underscore keeps it apart from runs (a job name cannot start with '_').
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from launcher.config import ClusterConfig

SWEEPS_DIR = "_sweeps"


@dataclass(frozen=True)
class SweepPaths:
    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "journal.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def spec(self) -> Path:
        """The sweep file as the controller runs it (resolved job included), for the controller, status and stop."""
        return self.root / "sweep.json"

    @property
    def stop_request(self) -> Path:
        return self.root / "stop"

    @property
    def log(self) -> Path:
        return self.root / "controller.log"

    def refusal(self, token: str) -> Path:
        """Where a detached controller that could not start explains why (the CLI prints it)."""
        return self.root / f"controller-{token}.err"


def sweep_paths(cluster: ClusterConfig, name: str) -> SweepPaths:
    from launcher.api import runs_dir  # the same runs directory as every job's, from anywhere

    return SweepPaths(Path(runs_dir(cluster)) / SWEEPS_DIR / name)

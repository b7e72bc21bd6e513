"""The run record: ``<runs>/<name>/run.json``, what lets ps/logs/stop/attach work from any later shell.

It holds the plan (as JSON), when and from where the job was started, the launcher's view of
the state (starting, running, stopped, failed), the name of the backend that launched it and
that backend's own state in one opaque field (the process groups each node's wrapper recorded;
a Slurm job id). The per-node truth (running / exited N / missing) is always read from the nodes,
by that backend (``launcher.backends.backend_of``).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from launcher.errors import UserError
from launcher.plan import JobPlan

RECORD_FILE = "run.json"


@dataclass
class RunRecord:
    name: str
    run_id: str
    plan: JobPlan
    started_at: float
    state: str = "starting"
    """starting | running | stopped | failed (the launcher's view; nodes report their own state)."""
    launched_from: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    message: str | None = None
    backend: str = "ssh"
    """The registered name of the backend that launched the run: it alone answers for it."""
    backend_state: dict[str, Any] = field(default_factory=dict)
    """That backend's own state, opaque to everything else (ssh: each node's process group; Slurm: the job id)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.plan.run_dir)

    def to_dict(self) -> dict[str, Any]:
        # the plan once: asdict(self) would copy it, then to_dict again (a launch saves the record twice)
        return {
            f.name: self.plan.to_dict() if f.name == "plan" else copy.deepcopy(getattr(self, f.name))
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        return cls(**{**upgrade(data), "plan": JobPlan.from_dict(data["plan"])})

    def save(self) -> None:
        """Atomic write: a reader never sees half a record."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        target = self.run_dir / RECORD_FILE
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A record written before runs named their backend: ``slurm: {...}`` (a Slurm run) or
    ``processes: {...}`` (an ssh one) become ``backend`` and ``backend_state``."""
    if "backend" in data:
        return data
    data = dict(data)
    slurm, processes = data.pop("slurm", None), data.pop("processes", None)
    if slurm is not None:
        return {**data, "backend": "slurm", "backend_state": slurm}
    return {**data, "backend": "ssh", "backend_state": {"processes": processes} if processes else {}}


def record_path(runs_dir: str | Path, name: str) -> Path:
    return Path(runs_dir) / name / RECORD_FILE


def load(runs_dir: str | Path, name: str) -> RunRecord:
    path = record_path(runs_dir, name)
    try:
        return RunRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        known = ", ".join(list_names(runs_dir)) or "none"
        raise UserError(
            f"no job named {name!r} in {runs_dir}", hint=f"known jobs: {known}; `corral ps` lists them"
        ) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(
            f"{path}: unreadable run record ({exc})", hint="remove that directory if the job is gone"
        ) from None


def list_names(runs_dir: str | Path) -> list[str]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{RECORD_FILE}"))


def archive_previous(runs_dir: str | Path, name: str) -> Path | None:
    """Move a finished run's directory aside (``<runs>/.history/<name>-<time>``) before reusing the name."""
    old = Path(runs_dir) / name
    if not old.exists():
        return None
    dest = Path(runs_dir) / ".history" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(old, dest)
    return dest

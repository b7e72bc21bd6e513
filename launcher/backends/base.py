"""The seam between corral's commands and where jobs run: submit a plan, status, logs, stop, attach.

Both backends take the same job file and cluster file and keep the same run record
(``<storage.runs>/<name>/run.json``); the pure plan pieces (env, CORRAL_* variables, torchrun
flags, checkpoint policy, secrets) come from ``launcher.plan`` for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from launcher.config import ClusterConfig, JobConfig
    from launcher.runs.options import LaunchOptions
    from launcher.runs.record import RunRecord
    from launcher.runs.state import JobStatus, StopResult


class Backend(Protocol):
    """What every backend does; ``launcher.jobs`` dispatches to it by the cluster file."""

    name: str

    def describe(self, job: JobConfig, cluster: ClusterConfig, **options: Any) -> tuple[str, dict[str, Any]]:
        """``--dry-run``: the plan as text and as JSON; touches nothing."""

    def launch(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> RunRecord:
        """Check, plan and submit/start; returns the saved run record (nothing left behind on failure)."""

    def status(self, record: RunRecord, cluster: ClusterConfig) -> JobStatus:
        """Per node: pending | running | exited N | failed | missing | unknown, with details."""

    def tail(
        self, record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int
    ) -> list[tuple[str, list[str] | None, str | None]]:
        """Per node: (name, last lines prefixed with node and rank, or None, error)."""

    def stop(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
        """SIGTERM, SIGKILL after ``timeout``; verified: no process of the job left."""

    def attach_argv(self, record: RunRecord, cluster: ClusterConfig, node: str | None) -> list[str]:
        """The argv that gives the user a terminal on the job's node (or UserError saying why not)."""

"""How the controller runs trials: through corral's own launch path (``launcher.api``).

The controller talks to a ``TrialBackend``; the real one, ``LaunchBackend``, starts each
trial exactly as ``corral launch`` starts a training job (tmux on each of its nodes, its
own run dir and checkpoint dir), so a trial survives the controller and a dropped ssh
connection alike. Unit tests of the scheduling workflow use a stateful fake instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from launcher.config import ClusterConfig, JobConfig
from launcher.sweep.scheduler import NodeRun

log = logging.getLogger(__name__)


class TrialBackend(Protocol):
    def launch(self, job: JobConfig, nodes: list[str], *, plain: bool, preflight: bool) -> None:
        """Start ``job`` (named after the attempt's run) on exactly these nodes; return once it runs."""

    def poll(self, name: str) -> dict[str, NodeRun]:
        """Each node's state of the run ``name``."""

    def stop(self, name: str) -> None:
        """Stop the run on every node (no error if it already ended)."""

    def run_dir(self, name: str) -> Path:
        """Where the run writes its logs and metrics (on the shared runs dir)."""


class LaunchBackend:
    """Trials as corral jobs, through ``launcher.api`` (imported on first use: it pulls in ssh/tmux code)."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster

    def launch(self, job: JobConfig, nodes: list[str], *, plain: bool, preflight: bool) -> None:
        from launcher import api

        if api.capabilities(self.cluster).places_nodes:  # one job of len(nodes) nodes; the scheduler places it
            api.launch(
                job.model_copy(update={"nnodes": len(nodes)}),
                self.cluster,
                name=job.name,
                preflight=preflight,
                plain=plain,
            )
            return
        api.launch(job, self.cluster, name=job.name, nodes=nodes, preflight=preflight, plain=plain)

    def poll(self, name: str) -> dict[str, NodeRun]:
        from launcher import api
        from launcher.runs.record import record_path

        if not record_path(self.runs_dir(), name).exists():
            return {}  # never launched (the controller died between journalling and launching): every node missing
        status = api.status(name, self.cluster)
        if api.capabilities(self.cluster).places_nodes:  # one job-wide state for the trial's slots
            from launcher.sweep.slots import job_wide_run

            return job_wide_run(status)
        if status.nodes and all(n.state == "exited" for n in status.nodes):
            try:
                api.clean_up(name, self.cluster)  # as every run through launcher.api ends: no finished sessions left
            except Exception as exc:  # noqa: BLE001 - the trial's result stands; a leftover session is only untidy
                log.warning("could not remove the finished tmux sessions of %s: %s", name, exc)
        return node_runs_from_status(status)

    def stop(self, name: str) -> None:
        from launcher import api

        api.stop(name, self.cluster)

    def runs_dir(self) -> str:
        from launcher import api

        return api.runs_dir(self.cluster)

    def run_dir(self, name: str) -> Path:
        return Path(self.runs_dir()) / name


def node_runs_from_status(status: Any) -> dict[str, NodeRun]:
    """Adapt the launch path's JobStatus (``nodes``: node, state running|exited|missing|unknown, exit_code)."""
    out: dict[str, NodeRun] = {}
    for node in status.nodes:
        state = node.state if node.state in ("running", "exited", "missing") else "unknown"
        out[node.node] = NodeRun(state, node.exit_code)
    return out

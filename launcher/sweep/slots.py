"""Sweeps where a scheduler places the nodes (Slurm): the sweep's "nodes" become slots, a budget of
concurrent submissions.

Such a backend (``Capabilities.places_nodes``) decides placement, so corral keeps no node list
there. The pure scheduler still gang-assigns ``nodes`` names per trial and caps running trials at
``max_concurrent``; there those names are slots (``slot-1``...), enough for ``max_concurrent``
trials (all trials when it is unset: the scheduler queues what does not fit). A trial's run is
one scheduler job: every slot it holds sees the job's one state, reported under ``JOB_WIDE``.
"""

from __future__ import annotations

from typing import Any

from launcher.config import ClusterConfig
from launcher.sweep.config import SweepConfig
from launcher.sweep.scheduler import JOB_WIDE, NodeRun


def trial_slots(cluster: ClusterConfig, cfg: SweepConfig, n_trials: int, *, places_nodes: bool) -> list[str]:
    """The names the sweep's scheduler hands out: the cluster's nodes, or submission slots where the
    backend places the nodes itself."""
    if not places_nodes:
        return [n.label for n in cluster.nodes]
    concurrent = cfg.max_concurrent or max(n_trials, 1)
    return [f"slot-{i + 1}" for i in range(concurrent * cfg.nodes)]


def job_wide_run(status: Any) -> dict[str, NodeRun]:
    """Pure: a scheduler job's per-node states folded into the one state the trial's slots share."""
    states = [n.state for n in status.nodes]
    codes = [n.exit_code for n in status.nodes if n.state == "exited"]
    if "failed" in states:
        return {JOB_WIDE: NodeRun("exited", next((c for c in codes if c), 1))}
    if any(c not in (0, None) for c in codes):
        return {JOB_WIDE: NodeRun("exited", next(c for c in codes if c))}
    if any(s in ("pending", "running") for s in states):
        return {JOB_WIDE: NodeRun("running")}
    if "unknown" in states:
        return {JOB_WIDE: NodeRun("unknown")}
    if states and all(s == "exited" for s in states):
        return {JOB_WIDE: NodeRun("exited", 0)}
    return {JOB_WIDE: NodeRun("missing")}

"""Which nodes and jobs ``corral top`` watches (pure given the cluster and the run records)."""

from __future__ import annotations

import posixpath

from launcher.config import ClusterConfig, NodeConfig
from launcher.report import METRICS_FILE
from launcher.runs.record import RunRecord
from launcher.top.collect import Target
from launcher.top.model import JobSpec
from launcher.watchdog.events import STATE_FILE

LIVE_STATES = ("starting", "running")


def job_specs(record: RunRecord) -> list[JobSpec]:
    """Per node of a run: where its state, log and per-node metrics are."""
    return [
        JobSpec(
            record.name,
            n.node,
            n.state_dir,
            n.log_path,
            posixpath.join(n.state_dir, METRICS_FILE),
            posixpath.join(record.plan.run_dir, STATE_FILE) if (n.watchdog or {}).get("node_rank") == 0 else "",
        )
        for n in record.plan.nodes
    ]


def pick_records(records: list[RunRecord], name: str | None) -> list[RunRecord]:
    """The named job, or the jobs whose record says they were started and not stopped."""
    if name is not None:
        return [r for r in records if r.name == name]
    return [r for r in records if r.state in LIVE_STATES]


def targets(cluster: ClusterConfig, records: list[RunRecord]) -> list[Target]:
    """Every node of the cluster file, then any node a job runs on that the file no longer lists."""
    specs = [s for r in records for s in job_specs(r)]
    out = [Target(n, [s for s in specs if s.node == n.label]) for n in cluster.nodes]
    known = {n.label for n in cluster.nodes}
    for r in records:
        for n in r.plan.nodes:
            if n.node not in known:
                known.add(n.node)
                out.append(Target(NodeConfig(host=n.host, name=n.node), [s for s in specs if s.node == n.node]))
    return out

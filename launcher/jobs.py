"""Jobs, whatever runs them: launch, status, logs, stop, wait, the run records of a cluster.

This module names no backend: the cluster file picks the one that launches a job, and the run
record the one that answers for it afterwards (``launcher.backends``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

from launcher.config import ClusterConfig, JobConfig
from launcher.errors import RunFailed
from launcher.plan import resolve_path
from launcher.runs.options import (
    TMUX_SOCKET_ENV,
    LaunchOptions,
    apply_job_overrides,
    check_name,
    cluster_base,
    read_secrets,
    runs_dir,
)
from launcher.runs.record import RunRecord, list_names, load
from launcher.runs.state import JobStatus, NodeStatus, StopResult

# ---------------------------------------------------------------------------- state


async def read_status(record: RunRecord, cluster: ClusterConfig) -> JobStatus:
    if record.slurm is not None:
        from launcher.backends.slurm import backend as slurm

        return await asyncio.to_thread(slurm.read_status, record, cluster)
    from launcher.backends.ssh import execute

    return await execute.read_status(record, cluster)


# ---------------------------------------------------------------------------- launch


def local_script_warnings(job: JobConfig, cluster: ClusterConfig, base_dir: str | None = None) -> list[str]:
    """A job's ``script`` (relative to the cluster's workdir) missing where a local node would run it.
    Remote nodes are only asked at launch (preflight); this needs no node."""
    if not job.script:
        return []
    workdir = resolve_path(cluster_base(cluster, base_dir), cluster.workdir)
    path = resolve_path(workdir, job.script)
    if os.path.isfile(path):
        return []
    nodes = [n.label for n in cluster.nodes if n.is_local]
    if not nodes:
        return []
    return [
        f"script {job.script} not found in {workdir} (the cluster's workdir, where node {nodes[0]} runs it): "
        "a job's script is relative to workdir; fix `script` or `workdir`"
    ]


BENCHMARK_PREFIX = "bench-"
"""Runs the benchmarks start are named ``bench-<kind>-<time>-...``: ``ps`` lists them with --all only."""


def is_benchmark_run(name: str) -> bool:
    return name.startswith(BENCHMARK_PREFIX)


def launch(job: JobConfig, cluster: ClusterConfig, options: LaunchOptions | None = None, **kwargs: Any) -> RunRecord:
    """Launch through the cluster file's backend: Slurm, or ssh + tmux."""
    if cluster.slurm is not None:
        from launcher.backends.slurm.backend import SlurmBackend

        return SlurmBackend().launch(job, cluster, LaunchOptions.of(options, **kwargs))
    from launcher.backends.ssh import execute

    return execute.launch(job, cluster, options, **kwargs)


def prepare(job: JobConfig, cluster: ClusterConfig, options: LaunchOptions | None = None, **kwargs: Any):
    """The ssh + tmux backend's launch decided but not started (``launcher.backends.ssh.execute.prepare``)."""
    from launcher.backends.ssh import execute

    return execute.prepare(job, cluster, options, **kwargs)


# ---------------------------------------------------------------------------- stop / logs / files


def stop_record(record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
    if record.slurm is not None:
        from launcher.backends.slurm import backend as slurm

        return slurm.stop(record, cluster, timeout)
    from launcher.backends.ssh import execute

    return execute.stop_record(record, cluster, timeout)


def read_files(record: RunRecord, cluster: ClusterConfig, relpaths: list[str]) -> dict[str, dict[str, str | None]]:
    """Per node, each of ``relpaths`` (relative to the run dir, ``{node}`` replaced by the node's name) as
    read on that node: None where the node has no such file or could not be asked."""
    if record.slurm is not None:
        from launcher.backends.slurm import backend as slurm

        return slurm.read_files(record, cluster, relpaths)
    from launcher.backends.ssh import execute

    return execute.read_files(record, cluster, relpaths)


def clean_up_record(record: RunRecord, cluster: ClusterConfig, timeout: float = 5) -> None:
    """Remove a finished job's sessions and containers (and anything left of it) on every node; the record keeps its state."""
    if record.slurm is not None:
        return  # Slurm removed everything of the job when it ended
    from launcher.backends.ssh import execute

    execute.clean_up_record(record, cluster, timeout)


async def tail_lines(
    record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int
) -> list[tuple[str, list[str] | None, str | None]]:
    """Per node: (name, last lines or None, error)."""
    if record.slurm is not None:
        from launcher.backends.slurm import backend as slurm

        return slurm.tail(record, node, lines)
    from launcher.backends.ssh import logs

    return await logs.tail_lines(record, cluster, node, lines)


async def follow(
    record: RunRecord,
    cluster: ClusterConfig,
    node: str | None,
    lines: int,
    *,
    until_done: bool,
    out: TextIO | None = None,
    poll_s: float = 2.0,
) -> JobStatus | None:
    """Stream new log lines from the chosen nodes; with ``until_done`` return the final status once the job has ended."""
    if record.slurm is not None:
        from launcher.backends.slurm import backend as slurm

        return await asyncio.to_thread(slurm.follow, record, cluster, node, lines, until_done=until_done, out=out)
    from launcher.backends.ssh import logs

    return await logs.follow(record, cluster, node, lines, until_done=until_done, out=out, poll_s=poll_s)


def wait_record(
    record: RunRecord,
    cluster: ClusterConfig,
    timeout: float | None,
    poll_s: float = 1.0,
    on_poll: Callable[[JobStatus], None] | None = None,
) -> JobStatus:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        st = asyncio.run(read_status(record, cluster))
        if on_poll:
            on_poll(st)
        if st.done:
            return st
        if deadline is not None and time.monotonic() >= deadline:
            raise RunFailed(
                f"job {record.name} still running after {timeout:g}s",
                hint=f"`corral ps` shows it; `corral stop {record.name}` ends it",
            )
        time.sleep(poll_s)


def all_records(cluster: ClusterConfig, base_dir: str | None = None) -> list[RunRecord]:
    root = runs_dir(cluster, base_dir)
    return [load(root, n) for n in list_names(root)]


__all__ = [
    "TMUX_SOCKET_ENV",
    "JobStatus",
    "LaunchOptions",
    "NodeStatus",
    "StopResult",
    "all_records",
    "apply_job_overrides",
    "check_name",
    "clean_up_record",
    "cluster_base",
    "follow",
    "launch",
    "prepare",
    "read_files",
    "read_secrets",
    "read_status",
    "runs_dir",
    "stop_record",
    "tail_lines",
    "wait_record",
]

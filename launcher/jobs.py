"""Jobs, whatever runs them: launch, status, logs, stop, files, wait, the run records of a cluster.

This module names no backend and asks none which it is: the cluster file picks the one that
launches a job (``backend_for``), the run record names the one that answers for it afterwards
(``backend_of``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TextIO

from launcher.agent.remote import kept_sessions, run_sync
from launcher.backends import Description, backend_for, backend_of
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import RunFailed
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

BENCHMARK_PREFIX = "bench-"
"""Runs the benchmarks start are named ``bench-<kind>-<time>-...``: ``ps`` lists them with --all only."""


def is_benchmark_run(name: str) -> bool:
    return name.startswith(BENCHMARK_PREFIX)


# ---------------------------------------------------------------------------- launch


def launch(job: JobConfig, cluster: ClusterConfig, options: LaunchOptions | None = None, **kwargs: Any) -> RunRecord:
    """Check, plan and start the job through the cluster file's backend; returns the saved run record.
    ``options`` (or its fields as keywords) are ``runs.options.LaunchOptions``."""
    return backend_for(cluster).launch(job, cluster, LaunchOptions.of(options, **kwargs))


def describe(
    job: JobConfig, cluster: ClusterConfig, options: LaunchOptions | None = None, **kwargs: Any
) -> Description:
    """``--dry-run``: what ``launch`` would do, from the same preparation, asking no node."""
    return backend_for(cluster).describe(job, cluster, LaunchOptions.of(options, **kwargs))


def local_script_warnings(job: JobConfig, cluster: ClusterConfig) -> list[str]:
    """What is wrong with the job on this cluster that can be seen without asking a node."""
    return backend_for(cluster).warnings(job, cluster)


# ---------------------------------------------------------------------------- a run, by its record


async def read_status(record: RunRecord, cluster: ClusterConfig) -> JobStatus:
    return await backend_of(record).status(record, cluster)


def read_statuses(records: list[RunRecord], cluster: ClusterConfig) -> list[JobStatus]:
    """Every record's status at once, inside one kept-session block: over ssh, the R jobs' status reads of a
    node are answered by one shell command there, so ``ps`` of R jobs on N nodes is N logins and no Python
    start on any node, not R x N logins at the same moment (a backend that keeps no sessions is unaffected)."""
    if not records:
        return []

    async def gather() -> list[JobStatus]:
        return list(await asyncio.gather(*(read_status(r, cluster) for r in records)))

    with kept_sessions(shell_status=True):  # one shell per node for all the jobs' status reads
        return run_sync(gather())


def job_env(record: RunRecord) -> dict[str, str]:
    """The environment the run's ranks got, as its backend recorded it (e.g. ``CORRAL_SWEEP`` of a sweep's trial)."""
    return backend_of(record).job_env(record)


def stop_record(record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
    return backend_of(record).stop(record, cluster, timeout)


def read_files(record: RunRecord, cluster: ClusterConfig, relpaths: list[str]) -> dict[str, dict[str, str | None]]:
    """Per node, each of ``relpaths`` (relative to the run dir, ``{node}`` replaced by the node's name) as
    read on that node: None where the node has no such file or could not be asked."""
    return backend_of(record).read_files(record, cluster, relpaths)


def clean_up_record(record: RunRecord, cluster: ClusterConfig, timeout: float = 5) -> None:
    """Remove what is left of a finished job on its nodes (sessions, containers); the record keeps its state."""
    backend_of(record).clean_up(record, cluster, timeout)


async def tail_lines(
    record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int
) -> list[tuple[str, list[str] | None, str | None]]:
    """Per node: (name, last lines or None, error)."""
    return await backend_of(record).tail(record, cluster, node, lines)


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
    return await backend_of(record).follow(record, cluster, node, lines, until_done=until_done, out=out, poll_s=poll_s)


def wait_record(
    record: RunRecord,
    cluster: ClusterConfig,
    timeout: float | None,
    poll_s: float = 1.0,
    on_poll: Callable[[JobStatus], None] | None = None,
) -> JobStatus:
    from launcher.agent.remote import kept_sessions, run_sync

    deadline = None if timeout is None else time.monotonic() + timeout
    # One node agent per node for the whole wait: a fresh agent per poll (ssh, the login shell,
    # a Python start) cost ~0.7 CPU-seconds per poll of 3 nodes on 2 cores, against ~0.01 s
    # for a request to a kept one; at one poll a second that starved the job being waited for.
    # A session that breaks (ssh cut) is opened again at the next poll.
    with kept_sessions():
        while True:
            st = run_sync(read_status(record, cluster))
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
    "describe",
    "follow",
    "job_env",
    "launch",
    "local_script_warnings",
    "read_files",
    "read_secrets",
    "read_status",
    "read_statuses",
    "runs_dir",
    "stop_record",
    "tail_lines",
    "wait_record",
]

"""corral's public Python API: run anything "through the same launch path as training".

Benchmarks, sweeps and tests call these instead of the CLI. The cluster file's backend runs
the job (``launcher.backends``): over ssh, a tmux session ``corral-<name>`` on each node (locally
for ``localhost``); on Slurm, one batch job. Either way it survives the caller's death and
dropped connections; its record lives in ``<storage.runs>/<name>/`` (``run.json``, naming the
backend that answers for it, ``logs/<node>.log``, ``nodes/<node>/``).

The script gets, besides torchrun's RANK/LOCAL_RANK/WORLD_SIZE/...: CORRAL_RUN_DIR,
CORRAL_CKPT_DIR (``<storage.checkpoints>/<name>``), CORRAL_BACKEND, CORRAL_JOB_NAME,
CORRAL_NODE, CORRAL_NODE_RANK, CORRAL_NNODES and CORRAL_RUN_ID.

    handle = launch(job, cluster, name="bench-1")
    status = handle.wait(timeout=600)
    assert status.ok, status.to_json()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launcher import aio
from launcher.backends import Capabilities, Description, backend_for
from launcher.config import ClusterConfig, JobConfig, NodeConfig
from launcher.errors import PreflightFailed, RunFailed
from launcher.jobs import (
    JobStatus,
    LaunchOptions,
    NodeStatus,
    StopResult,
    clean_up_record,
    describe,
    read_files,
    read_status,
    runs_dir,
    stop_record,
    wait_record,
)
from launcher.jobs import launch as launch_job
from launcher.plan import JobPlan
from launcher.runs.record import RunRecord, load
from launcher.tools import ssh
from launcher.tools.ssh import Completed


@dataclass
class RunHandle:
    """A started job: its name, plan and where its files are."""

    name: str
    cluster: ClusterConfig
    record: RunRecord

    @property
    def plan(self) -> JobPlan:
        return self.record.plan

    @property
    def run_dir(self) -> Path:
        return Path(self.record.plan.run_dir)

    @property
    def ckpt_dir(self) -> Path:
        return Path(self.record.plan.ckpt_dir)

    def log_path(self, node: str) -> Path:
        """``<run_dir>/logs/<node>.log`` (written on that node; the same path everywhere)."""
        return Path(self.plan.node(node).log_path)

    def status(self) -> JobStatus:
        return aio.run(read_status(self.record, self.cluster))

    def wait(self, timeout: float | None = None) -> JobStatus:
        return wait_record(self.record, self.cluster, timeout)

    def stop(self, timeout: float = 10) -> list[StopResult]:
        return stop_record(self.record, self.cluster, timeout)

    def log_tail(self, node: str, lines: int = 15) -> list[str]:
        """The last ``lines`` lines of ``node``'s log, read on that node (empty when it cannot be read)."""
        return self.log_tails(lines, node=node).get(node, [])

    def log_tails(self, lines: int = 15, *, node: str | None = None) -> dict[str, list[str]]:
        """Per node (or only ``node``), the last ``lines`` lines of its log, read on that node."""
        from launcher.jobs import tail_lines

        return {n: got or [] for n, got, _ in aio.run(tail_lines(self.record, self.cluster, node, lines))}


log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """A job run to its end: its handle, final state and the files collected from its nodes."""

    handle: RunHandle
    status: JobStatus
    files: dict[str, dict[str, str | None]] = field(default_factory=dict)
    """Per node, each collected path (relative to the run dir, as asked) -> its text, None if the node has none."""
    timed_out: bool = False

    def first(self, relpath: str) -> str | None:
        """``relpath`` from whichever node has it (a file only rank 0 writes)."""
        return next((got[relpath] for got in self.files.values() if got.get(relpath) is not None), None)


def run_to_completion(
    job: JobConfig,
    cluster: ClusterConfig,
    *,
    name: str | None = None,
    nodes: list[str] | None = None,
    plain: bool = False,
    preflight: bool = True,
    timeout: float | None = None,
    collect: Sequence[str] = (),
    on_start: Callable[[RunHandle], None] | None = None,
    on_poll: Callable[[JobStatus], None] | None = None,
) -> Outcome:
    """Launch ``job``, wait until every node's command has exited, fetch ``collect`` (paths relative to the
    run dir; ``{node}`` is each node's name) from every node through its agent (no shared drive needed),
    and remove the finished tmux sessions.

    ``timeout`` counts from this call, the launch included (a caller's budget holds however slowly the
    nodes start): once it is spent the job is stopped on every node and what it wrote is still collected
    (``timed_out`` is then True). Interrupted (Ctrl-C, a signal turned into an exception), the job is
    stopped and the exception goes on.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    handle = launch(job, cluster, name=name, nodes=nodes, plain=plain, preflight=preflight)
    if on_start is not None:
        on_start(handle)
    timed_out = False
    try:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        status = wait_record(handle.record, cluster, left, on_poll=on_poll)
    except RunFailed as exc:  # wait_record's only failure: the timeout
        log.warning("%s; stopping it on every node", exc)
        timed_out = True
        handle.stop(timeout=5)
        status = handle.status()
    except BaseException:
        handle.stop(timeout=5)
        raise
    files = read_files(handle.record, cluster, list(collect)) if collect else {}
    if not timed_out:
        try:
            clean_up_record(handle.record, cluster)
        except Exception as exc:  # noqa: BLE001 - the results are in hand; a leftover session is only untidy
            log.warning("could not remove the finished tmux sessions of %s: %s", handle.name, exc)
    return Outcome(handle, status, files, timed_out)


async def run_on_node(
    cluster: ClusterConfig,
    node: str | NodeConfig,
    argv: list[str],
    *,
    input: bytes | None = None,
    timeout: float = 60.0,
) -> Completed:
    """Run ``argv`` on one node (locally for ``localhost``, else over ssh) outside any job and collect its
    output: how a benchmark reaches a node for a short command (``bench net``'s two ends)."""
    target = node if isinstance(node, NodeConfig) else cluster.node(node)
    return await ssh.run(cluster.ssh, target, argv, input=input, timeout=timeout)


def capabilities(cluster: ClusterConfig) -> Capabilities:
    """What the cluster's backend does that callers must know (e.g. ``places_nodes``: the scheduler picks the nodes)."""
    return backend_for(cluster).capabilities


def dry_run(
    job: JobConfig,
    cluster: ClusterConfig,
    *,
    name: str | None = None,
    nodes: list[str] | None = None,
    plain: bool = False,
    base_dir: str | None = None,
) -> Description:
    """What ``launch`` would do, from the same preparation, asking no node (``--dry-run``): its ``text``
    (the plan as people read it), ``data`` (as JSON), ``run_dir`` and ``nodes``."""
    return describe(
        job, cluster, LaunchOptions.of(name=name, nodes=nodes, plain=plain, dry_run=True, base_dir=base_dir)
    )


def launch(
    job: JobConfig,
    cluster: ClusterConfig,
    *,
    name: str | None = None,
    nodes: list[str] | None = None,
    set_: list[str] | tuple[str, ...] = (),
    preflight: bool = True,
    plain: bool = False,
    base_dir: str | None = None,
) -> RunHandle:
    """Start ``job`` on the cluster's nodes (or ``nodes``, names or hosts) and return once every
    node runs it. ``plain=True`` runs ``python3 SCRIPT ARGS`` once per node instead of torchrun.
    ``preflight=False`` still probes the nodes (GPU counts, port) but does not refuse on a failed
    check. Relative cluster paths are resolved against ``base_dir`` (default: the cwd).

    Raises PreflightFailed (exit 2, nothing launched), UserError, or RunFailed when a node could
    not start (the others are stopped again).
    """
    options = LaunchOptions.of(name=name, nodes=nodes, set_=set_, preflight=preflight, plain=plain, base_dir=base_dir)
    record = launch_job(job, cluster, options)
    return RunHandle(record.name, cluster, record)


def handle(name: str, cluster: ClusterConfig, *, base_dir: str | None = None) -> RunHandle:
    """The handle of an existing job, from its run record."""
    return RunHandle(name, cluster, load(runs_dir(cluster, base_dir), name))


def wait(name: str, cluster: ClusterConfig, *, timeout: float | None = None, base_dir: str | None = None) -> JobStatus:
    """Block until every node's command has exited (or ``timeout`` seconds: RunFailed)."""
    return handle(name, cluster, base_dir=base_dir).wait(timeout)


def status(name: str, cluster: ClusterConfig, *, base_dir: str | None = None) -> JobStatus:
    """Per node: running | exited (exit_code) | missing | unknown (unreachable), elapsed time."""
    return handle(name, cluster, base_dir=base_dir).status()


def clean_up(name: str, cluster: ClusterConfig, *, base_dir: str | None = None) -> None:
    """Remove what is left of a finished job on its nodes, e.g. its tmux sessions (what ``run_to_completion`` does at the end)."""
    clean_up_record(handle(name, cluster, base_dir=base_dir).record, cluster)


def stop(name: str, cluster: ClusterConfig, *, timeout: float = 10, base_dir: str | None = None) -> list[StopResult]:
    """SIGTERM the job's process groups on every node, SIGKILL after ``timeout``, kill its tmux
    session; returns per node what was found, killed and (should be empty) still remains."""
    return handle(name, cluster, base_dir=base_dir).stop(timeout)


__all__ = [
    "Capabilities",
    "Completed",
    "Description",
    "JobStatus",
    "LaunchOptions",
    "NodeStatus",
    "Outcome",
    "PreflightFailed",
    "RunHandle",
    "StopResult",
    "capabilities",
    "clean_up",
    "dry_run",
    "handle",
    "launch",
    "run_on_node",
    "run_to_completion",
    "runs_dir",
    "status",
    "stop",
    "wait",
]

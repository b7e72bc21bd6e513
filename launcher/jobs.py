"""Executing plans: start a job on its nodes, read its state, wait for it, stop it.

Only this module (through ``launcher.remote``, ``tools.ssh`` and ``tools.tmux``) touches the
nodes. A start either succeeds on every node or is rolled back: sessions already started are
stopped, so no half-launched job remains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher.config import ClusterConfig, JobConfig, NodeConfig, apply_overrides, validate
from launcher.config.job import JOB_NAME
from launcher.errors import RunFailed, UserError
from launcher.jobstate import job_state
from launcher.plan import (
    JobPlan,
    NodeFacts,
    NodePlan,
    PlanInputs,
    build_plan,
    default_local_venv,
    parse_env_file,
    render_secrets,
    render_wrapper,
    resolve_path,
    select_nodes,
)
from launcher.preflight import PreflightReport, run_preflight
from launcher.remote import AgentReply, call, call_all, kept_sessions, run_sync
from launcher.runrecord import RunRecord, archive_previous, list_names, load
from launcher.tools import tmux
from launcher.watchdog.events import WatchdogView, watchdog_paths
from launcher.watchdog.events import parse as parse_watchdog
from launcher.watchdog.ship import watchdog_files

log = logging.getLogger(__name__)

TMUX_SOCKET_ENV = "CORRAL_TMUX_SOCKET"
"""tmux ``-L`` socket name for every node (default: the user's default server). Tests set it."""
START_WAIT_S = 15.0


class PreflightFailed(UserError):
    """A node failed a preflight check: nothing was launched (exit 2)."""

    def __init__(self, report: PreflightReport) -> None:
        self.report = report
        super().__init__(
            f"preflight failed, nothing launched:\n{report.summary()}", hint="`corral preflight` shows every check"
        )


# ---------------------------------------------------------------------------- state


@dataclass
class NodeStatus:
    node: str
    host: str
    state: str
    """running | exited | missing | unknown (node unreachable)."""
    exit_code: int | None = None
    elapsed_s: float | None = None
    detail: str | None = None


@dataclass
class JobStatus:
    name: str
    record_state: str
    """The launcher's record: starting | running | stopped | failed."""
    nodes: list[NodeStatus] = field(default_factory=list)
    watchdog: WatchdogView = field(default_factory=WatchdogView)
    """The hang watchdog's state and events, from the job's first node (docs/WATCHDOG.md)."""

    @property
    def state(self) -> str:
        """The job's state, derived from the nodes' (``launcher.jobstate``, one table for every view)."""
        return job_state(self.record_state, [(n.state, n.exit_code) for n in self.nodes], self.watchdog.hung)

    @property
    def running(self) -> bool:
        return any(n.state == "running" for n in self.nodes)

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.watchdog.events

    @property
    def done(self) -> bool:
        return not any(n.state in ("running", "unknown", "pending") for n in self.nodes)

    @property
    def ok(self) -> bool:
        return all(n.state == "exited" and n.exit_code == 0 for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "record_state": self.record_state,
            "nodes": [asdict(n) for n in self.nodes],
            "suspect": self.watchdog.suspect_line(),
            "events": self.events,
        }


def node_status(node: NodePlan, reply: AgentReply, started_at: float, now: float) -> NodeStatus:
    """Pure: one node's state from the agent's ``status`` reply."""
    if not reply.ok:
        return NodeStatus(node.node, node.host, "unknown", detail=reply.error)
    d = reply.data
    if d.get("exit_code") is not None:
        end = d.get("exit_mtime") or now
        return NodeStatus(node.node, node.host, "exited", d["exit_code"], round(max(0.0, end - started_at), 1))
    if d.get("session") and d.get("pane_dead") is False:
        return NodeStatus(node.node, node.host, "running", None, round(max(0.0, now - started_at), 1))
    if d.get("session") and d.get("pane_dead"):
        return NodeStatus(
            node.node,
            node.host,
            "exited",
            d.get("pane_status"),
            None,
            "the wrapper ended without writing its exit status",
        )
    if d.get("alive"):
        return NodeStatus(
            node.node,
            node.host,
            "running",
            None,
            round(max(0.0, now - started_at), 1),
            "tmux session gone, process alive",
        )
    return NodeStatus(node.node, node.host, "missing", detail="no tmux session and no exit status on the node")


def status_request(plan: JobPlan, node: NodePlan) -> dict[str, Any]:
    req = {"op": "status", "state_dir": node.state_dir, "tmux_panes": tmux.list_panes(plan.tmux_socket, node.session)}
    if node.watchdog and node.watchdog.get("node_rank") == 0:  # the leader keeps the watchdog's record
        req["read"] = watchdog_paths(plan.run_dir)
    return req


def watchdog_view(replies: list[AgentReply]) -> WatchdogView:
    """The watchdog's state and events from whichever status reply carries them."""
    for r in replies:
        files = r.data.get("files") if r.ok else None
        if files and (files.get("watchdog_state") or files.get("watchdog_events")):
            return parse_watchdog(files.get("watchdog_state"), files.get("watchdog_events"))
    return WatchdogView()


def _node_config(cluster: ClusterConfig, node: NodePlan) -> NodeConfig:
    """The node as the cluster file now describes it (ssh settings), else as recorded."""
    for n in cluster.nodes:
        if n.label == node.node or n.host == node.host:
            return n
    return NodeConfig(host=node.host, name=node.node)


async def read_status(record: RunRecord, cluster: ClusterConfig) -> JobStatus:
    if record.slurm is not None:
        from launcher.backends import slurm

        return await asyncio.to_thread(slurm.read_status, record, cluster)
    plan = record.plan
    requests = [(_node_config(cluster, n), status_request(plan, n)) for n in plan.nodes]
    replies = await call_all(cluster, requests, timeout=30)
    now = time.time()
    nodes = [node_status(n, r, record.started_at, now) for n, r in zip(plan.nodes, replies)]
    view = watchdog_view(replies)
    if plan.container is not None:
        from container.runtime import launch_container_states

        states = await asyncio.to_thread(launch_container_states, record, cluster)
        for ns in nodes:
            c = states.get(ns.node, {})
            code = f" {c['exit_code']}" if c.get("exit_code") is not None else ""
            ns.detail = "; ".join(x for x in (ns.detail, f"container {c.get('state', 'missing')}{code}") if x)
    return JobStatus(record.name, record.state, nodes, view)


# ---------------------------------------------------------------------------- launch


def cluster_base(cluster: ClusterConfig, base_dir: str | None = None) -> str:
    """Where the cluster's relative paths (workdir, storage) start: ``base_dir`` when a caller
    gives one, else the cluster file's directory (the project directory for the embedded
    default, see ``config.loading.load_cluster``), else the current directory."""
    return base_dir or cluster.base_dir or os.getcwd()


def runs_dir(cluster: ClusterConfig, base_dir: str | None = None) -> str:
    return resolve_path(cluster_base(cluster, base_dir), cluster.storage.runs)


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


def apply_job_overrides(job: JobConfig, set_: list[str] | tuple[str, ...]) -> JobConfig:
    if not set_:
        return job
    data = apply_overrides(job.model_dump(mode="json", exclude_none=True), list(set_))
    return validate(JobConfig, data, "--set")


def check_name(name: str) -> str:
    import re

    if not re.match(JOB_NAME, name):
        raise UserError(f"--name {name!r}: use 1-63 letters, digits, '-' or '_', starting with a letter or digit")
    return name


def read_secrets(job: JobConfig, base_dir: str) -> dict[str, str]:
    """``env_file``: relative to the job file's directory (``base_dir`` for a job not read from a file)."""
    if not job.env_file:
        return {}
    path = Path(resolve_path(job.base_dir or base_dir, job.env_file))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"env_file: cannot read {path} ({exc.strerror})", hint="fix env_file in the job file") from None
    return parse_env_file(text, str(path))


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch a job, as the caller asks for it (the CLI, ``launcher.api.launch``, a sweep)."""

    name: str | None = None
    """Run name (default: the job's name)."""
    nodes: tuple[str, ...] | None = None
    """Node names or hosts to run on (default: the job's or the cluster's nodes)."""
    set_: tuple[str, ...] = ()
    """``--set`` overrides of job fields."""
    preflight: bool = True
    """Refuse to launch on a failed check (False: still probe, but go on)."""
    plain: bool = False
    """``python3 SCRIPT ARGS`` once per node instead of torchrun."""
    dry_run: bool = False
    """Plan from the cluster file alone; ask no node."""
    base_dir: str | None = None
    """Relative cluster paths are resolved against this directory (default: the cluster file's
    directory, the project directory for the embedded cluster; see ``cluster_base``)."""
    tmux_socket: str | None = None
    """tmux ``-L`` socket (default: ``$CORRAL_TMUX_SOCKET``, else the user's default server)."""
    run_id: str | None = None
    """The run's id (default: ``<name>-<8 hex>``)."""

    @classmethod
    def of(cls, options: LaunchOptions | None = None, **kwargs: Any) -> LaunchOptions:
        """``options`` as given, or built from ``prepare``'s keyword arguments."""
        if options is not None:
            if kwargs:
                raise TypeError(f"give LaunchOptions or keyword arguments, not both (got {sorted(kwargs)})")
            return options
        for key in ("nodes", "set_"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def resolved(self, job: JobConfig, cluster: ClusterConfig | None = None) -> LaunchOptions:
        """Every default filled in, once: the name checked, the base dir (``cluster_base``), socket and run id decided."""
        name = check_name(self.name or job.name)
        socket = self.tmux_socket if self.tmux_socket is not None else os.environ.get(TMUX_SOCKET_ENV) or None
        base = cluster_base(cluster, self.base_dir) if cluster is not None else self.base_dir or os.getcwd()
        return replace(
            self, name=name, base_dir=base, tmux_socket=socket, run_id=self.run_id or f"{name}-{uuid.uuid4().hex[:8]}"
        )


@dataclass
class Prepared:
    """A launch decided but not started: the plan, the report it came from, the secrets, the options."""

    plan: JobPlan
    report: PreflightReport | None
    nodes: list[NodeConfig]
    secrets: dict[str, str]
    options: LaunchOptions = field(default_factory=LaunchOptions)
    """The options as ``prepare`` resolved them (every default decided)."""


def offline_facts(nodes: list[NodeConfig]) -> dict[str, NodeFacts]:
    """Facts from the cluster file only (``--dry-run`` asks no node)."""
    return {n.label: NodeFacts(gpus=n.gpus or 0) for n in nodes}


def prepare(job: JobConfig, cluster: ClusterConfig, options: LaunchOptions | None = None, **kwargs: Any) -> Prepared:
    """Overrides, node selection, secrets, preflight (unless dry run) and the plan.

    ``options`` (or the same fields as keyword arguments) are resolved once here; the plan, the
    preflight and ``start`` read them from ``Prepared.options``."""
    opts = LaunchOptions.of(options, **kwargs)
    job_dir = job.base_dir
    job = apply_job_overrides(job, opts.set_)
    job.set_base_dir(job_dir)  # env_file stays relative to the job file after --set
    opts = opts.resolved(job, cluster)
    name, base, socket, run_id = opts.name, opts.base_dir, opts.tmux_socket, opts.run_id
    plain, preflight, dry_run = opts.plain, opts.preflight, opts.dry_run
    chosen = select_nodes(cluster, job, list(opts.nodes) if opts.nodes is not None else None)
    secrets = read_secrets(job, base)
    local_venv = default_local_venv()
    report = None
    container_check = None
    if job.container is not None and not dry_run:  # docker checks before anything starts, beside the preflight
        from container.runtime import check_launch

        container_check = _in_thread(
            check_launch, job, cluster, chosen, name=name, base_dir=base, local_venv=local_venv
        )
    try:
        if dry_run:
            facts, port = offline_facts(chosen), cluster.rendezvous.port
        else:
            report = run_sync(
                run_preflight(
                    cluster,
                    chosen,
                    job,
                    name=name,
                    base_dir=base,
                    local_venv=local_venv,
                    plain=plain,
                    tmux_socket=socket,
                )
            )
            if preflight and not report.ok:
                raise PreflightFailed(report)
            if not preflight and report.failures() and not report.facts:
                raise PreflightFailed(report)
            facts, port = report.facts, report.rdzv_port or cluster.rendezvous.port
    except BaseException:
        if container_check is not None:
            container_check.exception()  # wait for it; the preflight's failure is the one reported
        raise
    checked = container_check.result() if container_check is not None else None
    container_facts = {}
    if checked is not None:
        checked.remove_stale()
        container_facts = checked.facts
    inputs = PlanInputs(
        name=name,
        run_id=run_id,
        base_dir=base,
        rdzv_port=port,
        facts=facts,
        local_venv=local_venv,
        plain=plain,
        secret_names=tuple(secrets),
        tmux_socket=socket,
        container_facts=container_facts,
    )
    return Prepared(build_plan(job, cluster, chosen, inputs), report, chosen, secrets, opts)


def uses_checkpoints(node: NodePlan) -> bool:
    """Only a job with a ``checkpoint:`` section gets its checkpoint directory made for it."""
    return "CORRAL_CKPT_POLICY" in node.env


def _in_thread(fn, *args, **kwargs) -> Future:
    """``fn`` started in a thread of its own (the pool does not outlive the call)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kwargs)
    finally:
        pool.shutdown(wait=False)


def start_request(plan: JobPlan, node: NodePlan, secrets: dict[str, str], stale: bool) -> dict[str, Any]:
    files = [{"path": node.wrapper_path, "content": render_wrapper(plan.name, node), "mode": 0o700}]
    if secrets:
        files.append({"path": node.secrets_path, "content": render_secrets(secrets), "mode": 0o600})
    dirs = [node.state_dir, os.path.dirname(node.log_path)] + ([plan.ckpt_dir] if uses_checkpoints(node) else [])
    if node.watchdog:
        files += watchdog_files(node.state_dir, node.watchdog)
    if "TORCH_FR_DUMP_TEMP_FILE" in node.env:  # the Flight Recorder writes there, it does not create it
        dirs.append(os.path.dirname(node.env["TORCH_FR_DUMP_TEMP_FILE"]))
    steps = [tmux.kill_session(plan.tmux_socket, node.session)] if stale else []
    steps += tmux.start_steps(plan.tmux_socket, node.session, node.workdir, node.pane_command)
    return {
        "op": "start",
        "state_dir": node.state_dir,
        "log": node.log_path,
        "dirs": dirs,
        "files": files,
        "steps": steps,
        "wait_s": START_WAIT_S,
    }


def stop_request(plan: JobPlan, node: NodePlan, timeout: float) -> dict[str, Any]:
    return {
        "op": "stop",
        "state_dir": node.state_dir,
        "tmux_panes": tmux.list_panes(plan.tmux_socket, node.session),
        "tmux_kill": tmux.kill_session(plan.tmux_socket, node.session),
        "run_id": plan.run_id,
        "node": node.node,
        "timeout": timeout,
        "secrets_path": node.secrets_path,
        "log": node.log_path,
    }


def start(prepared: Prepared, cluster: ClusterConfig) -> RunRecord:
    """Start every node's session; all or nothing. Returns the saved run record."""
    plan = prepared.plan
    rdir = Path(plan.run_dir).parent
    if (rdir / plan.name).exists():
        archive_previous(rdir, plan.name)
    record = RunRecord(plan.name, plan.run_id, plan, time.time())
    record.save()
    stale = set(prepared.report.stale_sessions) if prepared.report else set()
    requests = [
        (n, start_request(plan, p, prepared.secrets, p.node in stale)) for n, p in zip(prepared.nodes, plan.nodes)
    ]
    replies = run_sync(call_all(cluster, requests, timeout=START_WAIT_S + 30))
    failed = [(p, r) for p, r in zip(plan.nodes, replies) if not (r.ok and r.data.get("ok"))]
    for p, r in zip(plan.nodes, replies):
        if r.ok and r.data.get("ok"):
            record.processes[p.node] = [r.data["pid"], r.data["pgid"], r.data["sid"]]
            log.debug("[%s] started: %s", p.node, r.data.get("seconds"))
    if failed:
        run_sync(_stop_nodes(record, cluster, timeout=5))
        reasons = "; ".join(f"{p.node}: {r.error or r.data.get('error')}" for p, r in failed)
        record.state, record.message = "failed", f"start failed: {reasons}"
        record.save()
        raise RunFailed(f"job {plan.name} could not start ({reasons}); the other nodes were stopped")
    record.state = "running"
    record.save()
    return record


def launch(job: JobConfig, cluster: ClusterConfig, options: LaunchOptions | None = None, **kwargs: Any) -> RunRecord:
    """Launch through the cluster file's backend: Slurm (``launcher.backends.slurm``), or ssh + tmux below.
    (Not through ``launcher.backends.backend_for``: its ssh + tmux side imports the layers above this one.)"""
    if cluster.slurm is not None:
        from launcher.backends.slurm import SlurmBackend

        return SlurmBackend().launch(job, cluster, LaunchOptions.of(options, **kwargs))
    return launch_ssh(job, cluster, options, **kwargs)


def launch_ssh(
    job: JobConfig, cluster: ClusterConfig, options: LaunchOptions | None = None, **kwargs: Any
) -> RunRecord:
    """Preflight, plan and start (``prepare`` then ``start``) over one agent session per node:
    each node is logged into once per launch. ``options`` (or its fields as keywords) are ``prepare``'s."""
    with kept_sessions():
        return start(prepare(job, cluster, LaunchOptions.of(options, **kwargs)), cluster)


# ---------------------------------------------------------------------------- stop / wait


@dataclass
class StopResult:
    node: str
    found: int = 0
    killed: int = 0
    remaining: list[int] = field(default_factory=list)
    error: str | None = None


async def _stop_nodes(record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
    plan = record.plan
    requests = [(_node_config(cluster, n), stop_request(plan, n, timeout)) for n in plan.nodes]
    replies = await call_all(cluster, requests, timeout=timeout + 30)
    out = []
    for n, r in zip(plan.nodes, replies):
        if not r.ok:
            out.append(StopResult(n.node, error=r.error))
        else:
            out.append(StopResult(n.node, r.data.get("found", 0), r.data.get("killed", 0), r.data.get("remaining", [])))
    return out


def stop_record(record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
    if record.slurm is not None:
        from launcher.backends import slurm

        return slurm.stop(record, cluster, timeout)
    results = asyncio.run(_stop_nodes(record, cluster, timeout))
    _remove_containers(record, cluster, timeout)
    if any(r.found for r in results):
        # a job whose every node had already exited keeps its own ending (exited / failed)
        record.state = "stopped"
        record.message = "stopped by corral stop"
        record.save()
    return results


def read_files(record: RunRecord, cluster: ClusterConfig, relpaths: list[str]) -> dict[str, dict[str, str | None]]:
    """Per node, each of ``relpaths`` (relative to the run dir, ``{node}`` replaced by the node's name) as
    read on that node by its agent: None where the node has no such file or could not be asked."""
    if record.slurm is not None:
        from launcher.backends import slurm

        return slurm.read_files(record, cluster, relpaths)
    plan = record.plan
    wanted = {
        n.node: {rel: os.path.join(plan.run_dir, rel.format(node=n.node)) for rel in relpaths} for n in plan.nodes
    }
    requests = [(_node_config(cluster, n), {"op": "read", "paths": list(wanted[n.node].values())}) for n in plan.nodes]
    replies = run_sync(call_all(cluster, requests, timeout=60))
    out: dict[str, dict[str, str | None]] = {}
    for n, r in zip(plan.nodes, replies):
        files = r.data.get("files", {}) if r.ok and r.data.get("ok") else {}
        if not (r.ok and r.data.get("ok")):
            log.warning("[%s] could not read the run's files: %s", n.node, r.error or r.data.get("error"))
        out[n.node] = {rel: files.get(path) for rel, path in wanted[n.node].items()}
    return out


def clean_up_record(record: RunRecord, cluster: ClusterConfig, timeout: float = 5) -> None:
    """Remove a finished job's tmux sessions and containers (and anything left of it) on every node; the record keeps its state."""
    if record.slurm is not None:
        return  # Slurm removed everything of the job when it ended
    for r in asyncio.run(_stop_nodes(record, cluster, timeout)):
        if r.error or r.remaining:
            log.warning("[%s] clean-up of %s: %s", r.node, record.name, r.error or f"processes remain: {r.remaining}")
    _remove_containers(record, cluster, timeout)


def _remove_containers(record: RunRecord, cluster: ClusterConfig, timeout: float) -> None:
    """A container job's containers, by label on every node: killing the pane's docker CLI leaves the container."""
    if record.plan.container is not None:
        from container.runtime import remove_launch_containers

        remove_launch_containers(record, cluster, timeout)


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
    "JobStatus",
    "LaunchOptions",
    "NodeStatus",
    "PreflightFailed",
    "Prepared",
    "StopResult",
    "all_records",
    "call",
    "clean_up_record",
    "launch",
    "node_status",
    "prepare",
    "read_files",
    "read_status",
    "runs_dir",
    "start",
    "stop_record",
    "wait_record",
]

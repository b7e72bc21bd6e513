"""The ssh + tmux backend's execution: start a job on its nodes, read its state, stop it.

Every node is reached through the node agent (``launcher.agent.remote``, over ``tools.ssh``) and
runs the tmux argvs of ``tools.tmux``. A start either succeeds on every node or is rolled back:
sessions already started are stopped, so no half-launched job remains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher import aio
from launcher.agent.remote import AgentReply, call_all, kept_sessions, run_sync
from launcher.backends.ssh.preflight import PreflightReport, run_preflight
from launcher.backends.ssh.wrapper import render_wrapper
from launcher.config import ClusterConfig, JobConfig, NodeConfig
from launcher.errors import PreflightFailed, RunFailed
from launcher.plan import (
    JobPlan,
    NodeFacts,
    NodePlan,
    PlanInputs,
    build_plan,
    default_local_venv,
    render_secrets,
    select_nodes,
)
from launcher.runs.options import LaunchOptions, apply_job_overrides, read_secrets
from launcher.runs.record import RunRecord, archive_previous
from launcher.runs.state import JobStatus, NodeStatus, StopResult
from launcher.tools import tmux
from launcher.watchdog.events import WatchdogView, watchdog_paths
from launcher.watchdog.events import parse as parse_watchdog
from launcher.watchdog.ship import watchdog_files

log = logging.getLogger(__name__)

START_WAIT_S = 15.0


class NodeChecksFailed(PreflightFailed):
    """A node failed a preflight check: nothing was launched (exit 2); carries the whole report."""

    def __init__(self, report: PreflightReport) -> None:
        self.report = report
        super().__init__(
            f"preflight failed, nothing launched:\n{report.summary()}", hint="`corral preflight` shows every check"
        )


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


def node_config(cluster: ClusterConfig, node: NodePlan) -> NodeConfig:
    """The node as the cluster file now describes it (ssh settings), else as recorded."""
    found = cluster.node_index().get(node.node) or cluster.node_index().get(node.host)
    return found if found is not None else NodeConfig(host=node.host, name=node.node)


async def read_status(record: RunRecord, cluster: ClusterConfig) -> JobStatus:
    plan = record.plan
    requests = [(node_config(cluster, n), status_request(plan, n)) for n in plan.nodes]
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
                raise NodeChecksFailed(report)
            if not preflight and report.failures() and not report.facts:
                raise NodeChecksFailed(report)
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
    record = RunRecord(plan.name, plan.run_id, plan, time.time(), backend="ssh")
    record.save()
    stale = set(prepared.report.stale_sessions) if prepared.report else set()
    requests = [
        (n, start_request(plan, p, prepared.secrets, p.node in stale)) for n, p in zip(prepared.nodes, plan.nodes)
    ]
    replies = run_sync(call_all(cluster, requests, timeout=START_WAIT_S + 30))
    failed = [(p, r) for p, r in zip(plan.nodes, replies) if not (r.ok and r.data.get("ok"))]
    for p, r in zip(plan.nodes, replies):
        if r.ok and r.data.get("ok"):
            # [wrapper pid, process group, session], as the wrapper recorded them at start
            record.backend_state.setdefault("processes", {})[p.node] = [r.data["pid"], r.data["pgid"], r.data["sid"]]
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
    """Preflight, plan and start (``prepare`` then ``start``) over one agent session per node:
    each node is logged into once per launch. ``options`` (or its fields as keywords) are ``prepare``'s."""
    with kept_sessions():
        return start(prepare(job, cluster, LaunchOptions.of(options, **kwargs)), cluster)


async def _stop_nodes(record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
    plan = record.plan
    requests = [(node_config(cluster, n), stop_request(plan, n, timeout)) for n in plan.nodes]
    replies = await call_all(cluster, requests, timeout=timeout + 30)
    out = []
    for n, r in zip(plan.nodes, replies):
        if not r.ok:
            out.append(StopResult(n.node, error=r.error))
        else:
            out.append(StopResult(n.node, r.data.get("found", 0), r.data.get("killed", 0), r.data.get("remaining", [])))
    return out


def stop_record(record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
    results = aio.run(_stop_nodes(record, cluster, timeout))
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
    plan = record.plan
    wanted = {
        n.node: {rel: os.path.join(plan.run_dir, rel.format(node=n.node)) for rel in relpaths} for n in plan.nodes
    }
    requests = [(node_config(cluster, n), {"op": "read", "paths": list(wanted[n.node].values())}) for n in plan.nodes]
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
    for r in aio.run(_stop_nodes(record, cluster, timeout)):
        if r.error or r.remaining:
            log.warning("[%s] clean-up of %s: %s", r.node, record.name, r.error or f"processes remain: {r.remaining}")
    _remove_containers(record, cluster, timeout)


def forget_on_nodes(record: RunRecord, cluster: ClusterConfig) -> list[str]:
    """``corral rm``: remove the run directory on each remote node (local ones share this machine's disk)."""
    nodes = [n for n in record.plan.nodes if not n.is_local]
    if not nodes:
        return []
    requests = [
        (node_config(cluster, n), {"op": "forget", "run_dir": record.plan.run_dir, "node": n.node}) for n in nodes
    ]
    replies = aio.run(call_all(cluster, requests, timeout=60))
    problems = []
    for n, r in zip(nodes, replies):
        if not r.ok or not r.data.get("ok"):
            problems.append(f"{n.node}: {r.error or r.data.get('error')}")
    return problems


def _remove_containers(record: RunRecord, cluster: ClusterConfig, timeout: float) -> None:
    """A container job's containers, by label on every node: killing the pane's docker CLI leaves the container."""
    if record.plan.container is not None:
        from container.runtime import remove_launch_containers

        remove_launch_containers(record, cluster, timeout)


__all__ = [
    "NodeChecksFailed",
    "Prepared",
    "clean_up_record",
    "forget_on_nodes",
    "launch",
    "node_config",
    "node_status",
    "prepare",
    "read_files",
    "read_status",
    "start",
    "stop_record",
]

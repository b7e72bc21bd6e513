"""The Slurm backend: a job is one batch job; ps/logs/stop/attach read Slurm and the run dir.

Only ``launcher.tools.slurm`` runs the Slurm clients. The run dir (``storage.runs``) is on a
drive every node shares, as on any Slurm cluster: the scripts, the per-node logs and exit
statuses live there. A Slurm job needs no tmux to survive a disconnect: slurmctld owns it.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from launcher.backends.base import AttachPlan, Capabilities, Description, PreflightView
from launcher.backends.slurm.script import (
    SlurmPlan,
    build_slurm_plan,
    describe_slurm,
    render_batch_script,
    render_node_wrapper,
    slurm_nnodes,
)
from launcher.backends.slurm.state import SlurmJob, corral_state, job_detail, parse_partition, slurm_job
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import PreflightFailed, RunFailed, ToolError, UserError
from launcher.plan import default_local_venv, render_secrets
from launcher.runs.options import LaunchOptions, apply_job_overrides, check_name, cluster_base, read_secrets
from launcher.runs.record import RunRecord, archive_previous
from launcher.runs.state import JobStatus, NodeStatus, StopResult
from launcher.tools import slurm as tool
from launcher.watchdog.events import WatchdogView, watchdog_paths
from launcher.watchdog.events import parse as parse_watchdog
from launcher.watchdog.ship import watchdog_files

SRUN_CHECK_IMMEDIATE_S = 30
"""The preflight's srun gives up when no node is free this long (the check is then skipped, not failed)."""
STOP_SETTLE_S = 60.0
"""After SIGKILL, how long Slurm may take to report every process gone (COMPLETING -> CANCELLED)."""


class SlurmPreflightFailed(PreflightFailed):
    """A Slurm check failed: nothing was submitted (exit 2)."""


@dataclass(frozen=True)
class Check:
    check: str
    ok: bool | None
    """True passed, False failed, None could not be checked."""
    detail: str


# ---------------------------------------------------------------------------- preflight


def _first_line(exc: ToolError) -> str:
    return (exc.stderr.strip().splitlines() or [f"exit status {exc.returncode}"])[-1]


def clients_missing(missing: list[str]) -> str:
    return (
        f"the Slurm client(s) {', '.join(missing)} are not installed on this machine (not on PATH): "
        "install slurm-client, or set slurm.login to a host that has them"
    )


def preflight_checks(
    cluster: ClusterConfig, job: JobConfig | None, *, base_dir: str, srun_check: bool = True
) -> list[Check]:
    """Clients present and answering, partition known and up, enough nodes, workdir and venv on a node."""
    s = cluster.slurm
    assert s is not None
    missing = tool.missing_clients(cluster)
    if missing:
        return [Check("clients", False, clients_missing(missing))]
    checks = [Check("clients", True, "sbatch, squeue, scontrol, scancel, srun, sinfo found")]
    try:
        info = parse_partition(tool.partition_info(cluster, s.partition), s.partition)
    except ToolError as exc:
        return [
            *checks,
            Check(
                "controller",
                False,
                f"the Slurm controller did not answer ({_first_line(exc)}): check that slurmctld runs "
                "and that SLURM_CONF names its slurm.conf",
            ),
        ]
    if info is None:
        known = ", ".join(sorted(set(tool.run(cluster, ["sinfo", "-h", "-o", "%R"]).stdout.split()))) or "none"
        return [
            *checks,
            Check(
                "partition",
                False,
                f"slurm.partition: partition {s.partition!r} does not exist on this Slurm cluster "
                f"(its partitions: {known}); fix slurm.partition in the cluster file",
            ),
        ]
    if not info.up:
        return [
            *checks,
            Check(
                "partition",
                False,
                f"slurm.partition: partition {s.partition!r} is not up; ask the admins or choose another",
            ),
        ]
    checks.append(Check("partition", True, f"{s.partition} is up with {info.nodes} node(s)"))
    if job is not None:
        n = slurm_nnodes(job)
        if n > info.nodes:
            return [
                *checks,
                Check(
                    "nodes",
                    False,
                    f"nnodes: the job asks for {n} nodes but partition {s.partition!r} has {info.nodes}; "
                    f"lower nnodes (--set nnodes={info.nodes}) or choose a bigger partition",
                ),
            ]
        checks.append(Check("nodes", True, f"{n} of {info.nodes} node(s)"))
    if srun_check:
        checks.append(_paths_check(cluster, base_dir))
    return checks


PATHS_SCRIPT = (
    'test -d "$1" || { echo "the working directory $1 does not exist on $(hostname)"; exit 3; }; '
    '[ -z "$2" ] || test -x "$2/bin/python" || { echo "the venv $2 (no $2/bin/python) does not exist on $(hostname)"; exit 4; }'
)


def _paths_check(cluster: ClusterConfig, base_dir: str) -> Check:
    from launcher.plan import resolve_path

    s = cluster.slurm
    assert s is not None
    workdir = resolve_path(base_dir, cluster.workdir)
    venv = cluster.venv or default_local_venv() or ""
    argv = tool.srun_argv(
        None, ["bash", "-c", PATHS_SCRIPT, "corral-preflight", workdir, venv], partition=s.partition, time="1"
    )
    argv[1:1] = [f"--immediate={SRUN_CHECK_IMMEDIATE_S}", "--job-name=corral-preflight"]
    r = tool.run(cluster, argv, check=False, timeout=SRUN_CHECK_IMMEDIATE_S + 60)
    if r.returncode in (3, 4):
        return Check(
            "paths", False, r.stdout.strip() + "; fix workdir/venv in the cluster file or create it on the shared drive"
        )
    if not r.ok:
        return Check("paths", None, f"could not run a check on a node ({(r.stderr.strip().splitlines() or ['?'])[-1]})")
    return Check("paths", True, f"workdir {workdir}" + (f" and venv {venv}" if venv else "") + " exist on a node")


def partition_size(cluster: ClusterConfig) -> int:
    """``nnodes: all`` on Slurm: every node of the partition (what benchmarks that run "on every node" ask for)."""
    s = cluster.slurm
    assert s is not None
    try:
        info = parse_partition(tool.partition_info(cluster, s.partition), s.partition)
    except ToolError as exc:
        raise UserError(
            f"nnodes: all needs the partition's size, and sinfo failed ({_first_line(exc)})",
            hint="give nnodes as a number (--set nnodes=2), or check the Slurm clients with `corral preflight`",
        ) from None
    if info is None:
        raise SlurmPreflightFailed(
            f"slurm.partition: partition {s.partition!r} does not exist on this Slurm cluster; nothing was submitted"
        )
    return info.nodes


def require_preflight(cluster: ClusterConfig, job: JobConfig, base_dir: str) -> list[Check]:
    checks = preflight_checks(cluster, job, base_dir=base_dir)
    failed = [c for c in checks if c.ok is False]
    if failed:
        raise SlurmPreflightFailed(failed[0].detail + "; nothing was submitted")
    return checks


# ---------------------------------------------------------------------------- launch


@dataclass
class SlurmPrepared:
    plan: SlurmPlan
    secrets: dict[str, str]


def prepare_slurm(job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> SlurmPrepared:
    """Overrides, secrets, the Slurm checks (unless dry run) and the plan (``options.tmux_socket`` has no
    meaning on Slurm)."""
    if options.nodes:
        raise UserError(
            "--node/nodes: on a Slurm cluster Slurm places the job; corral keeps no node list",
            hint="use slurm.sbatch_args (e.g. --nodelist=...) in the cluster file to constrain placement",
        )
    base = cluster_base(cluster, options.base_dir)  # the cluster file's directory, as over ssh
    job = apply_job_overrides(job, options.set_)
    if job.nnodes == "all":  # asks sinfo, a dry run too: the script shows the real allocation size
        if missing := tool.missing_clients(cluster):
            raise SlurmPreflightFailed(clients_missing(missing) + "; nothing was submitted")
        job = job.model_copy(update={"nnodes": partition_size(cluster)})
    name = check_name(options.name or job.name)
    secrets = read_secrets(job, base)
    run_id = options.run_id or f"{name}-{uuid.uuid4().hex[:8]}"
    plan = build_slurm_plan(
        job,
        cluster,
        name=name,
        run_id=run_id,
        base_dir=base,
        local_venv=default_local_venv(),
        plain=options.plain,
        secret_names=tuple(secrets),
    )
    if not options.dry_run and options.preflight:
        require_preflight(cluster, job, base)
    return SlurmPrepared(plan, secrets)


def _write(path: str, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def stub_plan(plan: SlurmPlan) -> Any:
    """The run record's JobPlan: what both backends share (no per-node plans: Slurm places the job)."""
    from launcher.plan import JobPlan

    return JobPlan(
        name=plan.name,
        run_id=plan.run_id,
        run_dir=plan.run_dir,
        ckpt_dir=plan.ckpt_dir,
        backend=plan.backend,
        plain=plan.plain,
        nnodes=str(plan.nnodes),
        rdzv_endpoint=None,
        max_restarts=0,
        secret_names=plan.secret_names,
        tmux_socket=None,
        nodes=[],
    )


def submit(prepared: SlurmPrepared, cluster: ClusterConfig) -> RunRecord:
    """Write the scripts (and the 0600 secrets file) into the run dir, sbatch, record the job id."""
    plan = prepared.plan
    rdir = Path(plan.run_dir).parent
    if (rdir / plan.name).exists():
        archive_previous(rdir, plan.name)
    slurm_dir = posixpath.dirname(plan.script_path)
    for d in (slurm_dir, posixpath.join(plan.run_dir, "logs"), plan.ckpt_dir):
        os.makedirs(d, exist_ok=True)
    record = RunRecord(
        plan.name,
        plan.run_id,
        stub_plan(plan),
        time.time(),
        backend="slurm",
        backend_state={"plan": plan.to_dict(), "job_id": None},
    )
    record.save()
    _write(plan.script_path, render_batch_script(plan), 0o700)
    _write(plan.wrapper_path, render_node_wrapper(plan), 0o700)
    if plan.watchdog:  # one copy in the shared run dir serves every node
        for f in watchdog_files(posixpath.dirname(plan.script_path), plan.watchdog):
            os.makedirs(posixpath.dirname(f["path"]), exist_ok=True)
            _write(f["path"], f["content"], f["mode"])
    if prepared.secrets:
        _write(plan.secrets_path, render_secrets(prepared.secrets), 0o600)
    try:
        job_id = tool.sbatch(cluster, plan.script_path, workdir=plan.workdir)
    except ToolError as exc:
        Path(plan.secrets_path).unlink(missing_ok=True)
        record.state, record.message = "failed", f"sbatch failed: {_first_line(exc)}"
        record.save()
        raise RunFailed(
            f"job {plan.name}: sbatch refused it ({_first_line(exc)})", hint=f"the script is {plan.script_path}"
        ) from None
    record.backend_state = {**record.backend_state, "job_id": job_id}
    record.state = "running"
    record.message = f"Slurm job {job_id}"
    record.save()
    return record


# ---------------------------------------------------------------------------- status


def read_exit_codes(run_dir: str) -> dict[str, tuple[int, int, float]]:
    """Per node: (exit code, Slurm restart count, file mtime) from ``nodes/<node>/exit_code``."""
    out = {}
    for path in sorted(Path(run_dir, "nodes").glob("*/exit_code")):
        try:
            words = path.read_text().split()
            out[path.parent.name] = (int(words[0]), int(words[1]) if len(words) > 1 else 0, path.stat().st_mtime)
        except (OSError, ValueError, IndexError):
            continue
    return out


def read_requeue_mark(record: RunRecord) -> int | None:
    from launcher.backends.slurm.script import requeue_mark_path

    try:
        return int(Path(requeue_mark_path(SlurmPlan.from_dict(record.backend_state["plan"]))).read_text().split()[0])
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return None


def node_statuses(
    job: SlurmJob | None,
    job_id: str,
    allocation: list[str],
    exits: dict[str, tuple[int, int, float]],
    started_at: float,
    now: float,
    requeue_mark: int | None = None,
) -> list[NodeStatus]:
    """Pure: the per-node view of a Slurm job (see ``launcher.backends.slurm.state``)."""

    def exited(node: str) -> NodeStatus:
        code, _, mtime = exits[node]
        return NodeStatus(node, "slurm", "exited", code, round(max(0.0, mtime - started_at), 1))

    if job is None:  # slurmctld has forgotten the job (MinJobAge): only the run dir remains
        if not exits:
            return [
                NodeStatus(
                    "-",
                    "slurm",
                    "missing",
                    detail=f"Slurm no longer knows job {job_id} and no node wrote an exit status",
                )
            ]
        return [exited(n) for n in sorted(exits)]
    detail = job_detail(job)
    state = corral_state(job.state)
    if state == "pending" or (state == "running" and not allocation):
        return [NodeStatus("-", "slurm", "pending", detail=detail)]
    if (
        state == "running" and requeue_mark == job.restarts
    ):  # SIGUSR1: this attempt ends, the job goes back to the queue
        return [NodeStatus("-", "slurm", "pending", detail=detail + "; SIGUSR1 received: requeue requested")]
    current = {
        n: v for n, v in exits.items() if v[1] == job.restarts
    }  # a requeued job's earlier attempt does not count
    nodes = allocation or sorted(current)
    if not nodes:
        return [NodeStatus("-", "slurm", "failed" if state == "ended" else "unknown", job.exit_code, detail=detail)]
    out = []
    for n in nodes:
        if n in current:
            out.append(exited(n))
        elif state == "running":
            out.append(NodeStatus(n, "slurm", "running", None, round(max(0.0, now - started_at), 1), detail))
        elif state == "ended":
            out.append(
                NodeStatus(n, "slurm", "failed", None, None, detail + "; the node's command wrote no exit status")
            )
        else:
            out.append(NodeStatus(n, "slurm", "unknown", None, None, detail))
    return out


def recorded_job_id(record: RunRecord, cluster: ClusterConfig) -> str | None:
    """The run's Slurm job id; if its submitter died between sbatch and the record, found by name and comment."""
    job_id = record.backend_state.get("job_id")
    if job_id or record.state == "failed":
        return job_id
    from launcher.backends.slurm.script import job_comment

    job_id = tool.find_job(cluster, f"corral-{record.name}", job_comment(record.run_id))
    if job_id:
        record.backend_state = {**record.backend_state, "job_id": job_id}
        record.state = "running"
        record.save()
    return job_id


def current_job(record: RunRecord, cluster: ClusterConfig) -> tuple[str, SlurmJob | None]:
    job_id = recorded_job_id(record, cluster)
    if not job_id:
        raise UserError(
            f"job {record.name} has no Slurm job id (its submission failed or never happened: {record.message})"
        )
    line = tool.show_job(cluster, job_id)
    return job_id, slurm_job(line) if line else None


def read_status(record: RunRecord, cluster: ClusterConfig) -> JobStatus:
    if not recorded_job_id(record, cluster):
        return JobStatus(
            record.name,
            record.state,
            [NodeStatus("-", "slurm", "missing", detail=record.message or "never submitted to Slurm")],
        )
    job_id, job = current_job(record, cluster)
    allocation = tool.hostnames(cluster, job.nodelist) if job and job.nodelist else []
    nodes = node_statuses(
        job,
        job_id,
        allocation,
        read_exit_codes(record.plan.run_dir),
        record.started_at,
        time.time(),
        read_requeue_mark(record),
    )
    return JobStatus(record.name, record.state, nodes, read_watchdog(record.plan.run_dir))


def read_watchdog(run_dir: str) -> WatchdogView:
    """The watchdog's state and events, written by its leader into the shared run dir."""
    texts = {}
    for key, path in watchdog_paths(run_dir).items():
        try:
            texts[key] = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            texts[key] = None
    return parse_watchdog(texts["watchdog_state"], texts["watchdog_events"])


def read_files(record: RunRecord, cluster: ClusterConfig, relpaths: list[str]) -> dict[str, dict[str, str | None]]:
    """Per node of the allocation, each of ``relpaths`` (``{node}`` replaced) read from the shared run dir."""
    nodes = sorted(
        {n.node for n in read_status(record, cluster).nodes if n.node != "-"}
        | set(read_exit_codes(record.plan.run_dir))
    )
    out: dict[str, dict[str, str | None]] = {}
    for node in nodes:
        out[node] = {}
        for rel in relpaths:
            path = Path(record.plan.run_dir, rel.format(node=node))
            try:
                out[node][rel] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                out[node][rel] = None
    return out


# ---------------------------------------------------------------------------- logs


def log_files(record: RunRecord, node: str | None) -> list[Path]:
    logs = Path(record.plan.run_dir, "logs")
    if node:
        return [logs / f"{node}.log"]
    return sorted(logs.glob("*.log"))


def tail(record: RunRecord, node: str | None, lines: int) -> list[tuple[str, list[str] | None, str | None]]:
    files = log_files(record, node)
    if not files:
        return [
            (
                "-",
                None,
                f"no node has written a log yet in {record.plan.run_dir}/logs (is the job still pending? `corral ps`)",
            )
        ]
    out = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            out.append((f.stem, None, f"cannot read {f}: {exc.strerror}"))
            continue
        out.append((f.stem, text[-lines:] if lines > 0 else [], None))
    return out


def follow(
    record: RunRecord,
    cluster: ClusterConfig,
    node: str | None,
    lines: int,
    *,
    until_done: bool,
    out: TextIO | None = None,
    poll_s: float = 1.0,
) -> JobStatus | None:
    """Print the last lines of every node's log, then new lines as they come; with ``until_done``
    return the final status once the job has ended (the run dir is shared: plain file reads)."""
    import sys

    offsets: dict[Path, int] = {}
    first = True

    def pump() -> None:
        nonlocal first
        stream = out or sys.stdout
        for f in log_files(record, node):
            try:
                size = f.stat().st_size
            except OSError:
                continue
            start = offsets.get(f, 0)
            if f not in offsets and first:
                data = f.read_bytes().decode(errors="replace").splitlines(keepends=True)
                stream.write("".join(data[-lines:]))
                offsets[f] = size
                continue
            if size > start:
                with f.open("rb") as fh:
                    fh.seek(start)
                    chunk = fh.read(size - start)
                cut = chunk.rfind(b"\n") + 1  # whole lines only
                stream.write(chunk[:cut].decode(errors="replace"))
                offsets[f] = start + cut
        stream.flush()
        first = False

    while True:
        pump()
        if until_done:
            st = read_status(record, cluster)
            if st.done:
                time.sleep(poll_s)
                pump()
                return st
        time.sleep(poll_s)


# ---------------------------------------------------------------------------- stop / attach


def _wait_ended(cluster: ClusterConfig, job_id: str, timeout: float) -> SlurmJob | None:
    """Poll until Slurm reports the job ended (every process reaped: COMPLETING is over), or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        line = tool.show_job(cluster, job_id)
        job = slurm_job(line) if line else None
        if job is None or (corral_state(job.state) == "ended" and "COMPLETING" not in line):
            return job or SlurmJob(job_id, "GONE", None, None, None, None, 0)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def stop(record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
    """SIGTERM to the batch shell and every step, SIGKILL after ``timeout``; then wait until Slurm
    reports the job ended, which it does only once slurmd has seen every process of it gone."""
    if not recorded_job_id(record, cluster):  # never reached Slurm: nothing runs
        record.state, record.message = "stopped", "stopped by corral stop before it reached Slurm"
        record.save()
        return [StopResult("-")]
    job_id, job = current_job(record, cluster)
    allocation = tool.hostnames(cluster, job.nodelist) if job and job.nodelist else []
    names = allocation or ["-"]
    killed = 0
    if job is not None and corral_state(job.state) != "ended":
        if corral_state(job.state) == "pending":
            tool.scancel(cluster, job_id)
        else:
            tool.scancel(cluster, job_id, signal="TERM", full=True)
        if _wait_ended(cluster, job_id, timeout) is None:
            killed = 1
            tool.scancel(cluster, job_id, signal="KILL", full=True)
            tool.scancel(cluster, job_id)
        if _wait_ended(cluster, job_id, STOP_SETTLE_S) is None:
            return [
                StopResult(n, error=f"Slurm still reports job {job_id} as running or completing after SIGKILL")
                for n in names
            ]
    record.state = "stopped"
    record.message = f"stopped by corral stop (Slurm job {job_id})"
    record.save()
    return [StopResult(n, found=1 if job is not None else 0, killed=killed) for n in names]


def attach_argv(record: RunRecord, cluster: ClusterConfig, node: str | None) -> list[str]:
    job_id, job = current_job(record, cluster)
    allocation = tool.hostnames(cluster, job.nodelist or "") if job else []
    # the batch script may still be collecting after every rank exited: Slurm says RUNNING, nothing runs
    ended_everywhere = bool(allocation) and set(allocation) <= {
        n for n, v in read_exit_codes(record.plan.run_dir).items() if job and v[1] == job.restarts
    }
    if job is None or corral_state(job.state) != "running" or "COMPLETING" in job.state or ended_everywhere:
        state = "finished on every node" if ended_everywhere else (job.state if job else "gone from Slurm")
        raise UserError(
            f"job {record.name} (Slurm job {job_id}) is {state}: there is no running allocation to open a shell in",
            hint=f"`corral logs {record.name}` shows its output",
        )
    if node and node not in allocation:
        raise UserError(f"--node {node}: job {record.name} runs on {', '.join(allocation)}")
    target = node or allocation[0]
    return tool.full_argv(cluster, tool.srun_argv(job_id, ["bash", "-i"], nodelist=target, pty=True), tty=True)


# ---------------------------------------------------------------------------- the seam


class SlurmBackend:
    name = "slurm"
    capabilities = Capabilities(places_nodes=True)

    # ------------------------------------------------------------------ launch

    def describe(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> Description:
        plan = prepare_slurm(job, cluster, replace(options, dry_run=True)).plan
        data = {
            "backend": "slurm",
            "plan": plan.to_dict(),
            "batch_script": render_batch_script(plan),
            "node_wrapper": render_node_wrapper(plan),
        }
        return Description(describe_slurm(plan), data, plan.run_dir, [], "(dry run: nothing was submitted)")

    def warnings(self, job: JobConfig, cluster: ClusterConfig) -> list[str]:
        return []  # the paths are checked on a node of the partition, at launch and by `corral preflight`

    def launch(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> RunRecord:
        return submit(prepare_slurm(job, cluster, options), cluster)

    def launching_text(self, name: str, cluster: ClusterConfig) -> str:
        return f"submitting {name} to Slurm partition {_partition(cluster)}..."

    def launched_text(self, record: RunRecord, cluster: ClusterConfig) -> str:
        return (
            f"submitted {record.name} as Slurm job {record.backend_state.get('job_id')} on partition "
            f"{_partition(cluster)}; logs in {record.plan.run_dir}/logs"
        )

    # ------------------------------------------------------------------ a run

    async def status(self, record: RunRecord, cluster: ClusterConfig) -> JobStatus:
        return await asyncio.to_thread(read_status, record, cluster)

    async def tail(self, record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int):
        return tail(record, node, lines)

    async def follow(
        self,
        record: RunRecord,
        cluster: ClusterConfig,
        node: str | None,
        lines: int,
        *,
        until_done: bool,
        out: TextIO | None = None,
        poll_s: float = 1.0,
    ) -> JobStatus | None:
        return await asyncio.to_thread(follow, record, cluster, node, lines, until_done=until_done, out=out)

    def job_env(self, record: RunRecord) -> dict[str, str]:
        return dict((record.backend_state.get("plan") or {}).get("env") or {})

    def stop(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
        return stop(record, cluster, timeout)

    def stopped_text(self, name: str) -> str:
        return f"Slurm job of {name} ended"

    def attach(self, record: RunRecord, cluster: ClusterConfig, node: str | None) -> AttachPlan:
        argv = attach_argv(record, cluster, node)
        return AttachPlan(argv, "exit the shell to leave; the job goes on", lambda: tool.exec_interactive(argv))

    def read_files(
        self, record: RunRecord, cluster: ClusterConfig, relpaths: list[str]
    ) -> dict[str, dict[str, str | None]]:
        return read_files(record, cluster, relpaths)

    def clean_up(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> None:
        return None  # Slurm removed everything of the job when it ended

    def forget(self, record: RunRecord, cluster: ClusterConfig) -> list[str]:
        return []  # every file of the run is in the run dir on the shared drive

    # ------------------------------------------------------------------ preflight

    def checking_text(self, cluster: ClusterConfig) -> str:
        return f"checking Slurm partition {_partition(cluster)}..."

    def preflight(self, job: JobConfig | None, cluster: ClusterConfig) -> PreflightView:
        checks = preflight_checks(cluster, job, base_dir=cluster_base(cluster))
        marks = {True: "ok", False: "FAIL", None: "skipped"}
        failed = [c for c in checks if c.ok is False]
        return PreflightView(
            [c.__dict__ for c in checks],
            None,
            [],
            [f"{c.check}: {marks[c.ok]}: {c.detail}" for c in checks],
            failed[0].detail if failed else None,
        )


def _partition(cluster: ClusterConfig) -> str:
    return cluster.slurm.partition if cluster.slurm is not None else "?"


__all__ = [
    "Check",
    "SlurmBackend",
    "SlurmPreflightFailed",
    "attach_argv",
    "follow",
    "node_statuses",
    "prepare_slurm",
    "preflight_checks",
    "read_status",
    "stop",
    "submit",
    "tail",
]

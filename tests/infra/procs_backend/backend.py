"""The ``procs`` backend: the shared plan (``launcher.plan.build_plan``: torchrun argv, CORRAL_*,
paths), each node's command started as a local process group of its own, the exit status written
by a one-line ``sh`` wrapper into the node's state dir, the log in the run dir as everywhere.

Only nodes of this machine are allowed (``localhost``/``127.0.0.1``). The process groups are kept
in the run record's ``backend_state``, so a later process (``corral ps``, ``stop``) finds them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from launcher.backends import AttachPlan, Capabilities, Description, PreflightView
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import PreflightFailed, UserError
from launcher.plan import (
    JobPlan,
    NodeFacts,
    PlanInputs,
    build_plan,
    default_local_venv,
    describe,
    resolve_path,
    select_nodes,
)
from launcher.runs.options import LaunchOptions, apply_job_overrides, cluster_base, read_secrets
from launcher.runs.record import RunRecord, archive_previous
from launcher.runs.state import JobStatus, NodeStatus, StopResult

EXIT_FILE = "exit_code"
WRAPPER = '"$@"; echo $? > "$CORRAL_PROCS_EXIT"'
"""Runs the node's argv as given (no quoting: ``"$@"``), then records its exit status."""


def _members(pgid: int) -> list[int]:
    """The live processes of a process group (zombies, which no one may have reaped yet, do not count)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(stat.parent.name))
    return out


def _alive(pgid: int) -> bool:
    return bool(_members(pgid))


def _signal(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # ended meanwhile


class ProcsFailed(PreflightFailed):
    """A procs check failed: nothing was started."""


class ProcsBackend:
    name = "procs"
    capabilities = Capabilities(places_nodes=False)

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """Processes this process started: polled so that an ended one is reaped, not a zombie."""

    # ------------------------------------------------------------------ plan

    def _plan(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> tuple[JobPlan, dict[str, str]]:
        job_dir = job.base_dir
        job = apply_job_overrides(job, options.set_)
        job.set_base_dir(job_dir)
        opts = options.resolved(job, cluster)
        nodes = select_nodes(cluster, job, list(opts.nodes) if opts.nodes is not None else None)
        secrets = read_secrets(job, opts.base_dir or ".")
        inputs = PlanInputs(
            name=opts.name or job.name,
            run_id=opts.run_id or "",
            base_dir=opts.base_dir or ".",
            rdzv_port=cluster.rendezvous.port,
            facts={n.label: NodeFacts(gpus=n.gpus or 0) for n in nodes},
            local_venv=default_local_venv(),
            plain=opts.plain,
            secret_names=tuple(secrets),
        )
        return build_plan(job, cluster, nodes, inputs), secrets

    def describe(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> Description:
        plan, _ = self._plan(job, cluster, replace(options, dry_run=True))
        return Description(
            describe(plan), plan.to_dict(), plan.run_dir, [n.node for n in plan.nodes], "(dry run: nothing was started)"
        )

    def warnings(self, job: JobConfig, cluster: ClusterConfig) -> list[str]:
        return []

    # ------------------------------------------------------------------ launch

    def launch(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> RunRecord:
        if options.preflight:
            view = self.preflight(job, cluster)
            if view.failure:
                raise ProcsFailed(f"{view.failure}; nothing was started")
        plan, secrets = self._plan(job, cluster, options)
        rdir = Path(plan.run_dir).parent
        if (rdir / plan.name).exists():
            archive_previous(rdir, plan.name)
        record = RunRecord(plan.name, plan.run_id, plan, time.time(), backend=self.name)
        record.save()
        groups = {}
        for node in plan.nodes:
            Path(node.state_dir).mkdir(parents=True, exist_ok=True)
            Path(node.log_path).parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, **node.env, **secrets, "CORRAL_PROCS_EXIT": os.path.join(node.state_dir, EXIT_FILE)}
            if node.venv:
                env["PATH"] = f"{node.venv}/bin:{env.get('PATH', '')}"
                env["VIRTUAL_ENV"] = node.venv
            with open(node.log_path, "ab") as log:
                proc = subprocess.Popen(
                    ["sh", "-c", WRAPPER, "corral-procs", *node.inner_argv],
                    cwd=node.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._children[proc.pid] = proc
            groups[node.node] = proc.pid
        record.backend_state = {"process_groups": groups}
        record.state = "running"
        record.save()
        return record

    def launching_text(self, name: str, cluster: ClusterConfig) -> str:
        return f"starting {name} as local processes..."

    def launched_text(self, record: RunRecord, cluster: ClusterConfig) -> str:
        return f"started {record.name} as local processes; logs in {record.plan.run_dir}/logs"

    # ------------------------------------------------------------------ a run

    def _reap(self) -> None:
        for proc in self._children.values():
            proc.poll()

    def _group(self, record: RunRecord, node: str) -> int | None:
        return record.backend_state.get("process_groups", {}).get(node)

    def _status(self, record: RunRecord) -> JobStatus:
        self._reap()
        now, out = time.time(), []
        for n in record.plan.nodes:
            exit_file = Path(n.state_dir, EXIT_FILE)
            pgid = self._group(record, n.node)
            if exit_file.is_file():
                code = int(exit_file.read_text().split()[0])
                out.append(
                    NodeStatus(n.node, n.host, "exited", code, round(exit_file.stat().st_mtime - record.started_at, 1))
                )
            elif pgid is not None and _alive(pgid):
                out.append(NodeStatus(n.node, n.host, "running", None, round(now - record.started_at, 1)))
            else:
                out.append(NodeStatus(n.node, n.host, "missing", detail="no process and no exit status"))
        return JobStatus(record.name, record.state, out)

    async def status(self, record: RunRecord, cluster: ClusterConfig) -> JobStatus:
        return self._status(record)

    def _logs(self, record: RunRecord, node: str | None) -> list[tuple[str, Path]]:
        nodes = [record.plan.node(node)] if node else record.plan.nodes
        return [(n.node, Path(n.log_path)) for n in nodes]

    async def tail(self, record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int):
        out: list[tuple[str, list[str] | None, str | None]] = []
        for name, path in self._logs(record, node):
            try:
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as exc:
                out.append((name, None, f"cannot read {path}: {exc.strerror}"))
                continue
            out.append((name, text[-lines:] if lines > 0 else [], None))
        return out

    async def follow(
        self,
        record: RunRecord,
        cluster: ClusterConfig,
        node: str | None,
        lines: int,
        *,
        until_done: bool,
        out: TextIO | None = None,
        poll_s: float = 0.5,
    ) -> JobStatus | None:
        offsets: dict[Path, int] = {}

        def pump() -> None:
            stream = out or sys.stdout
            for _, path in self._logs(record, node):
                if not path.is_file():
                    continue
                data = path.read_bytes()
                if path not in offsets:
                    stream.write("".join(data.decode(errors="replace").splitlines(keepends=True)[-lines:]))
                else:
                    stream.write(data[offsets[path] :].decode(errors="replace"))
                offsets[path] = len(data)
            stream.flush()

        while True:
            pump()
            if until_done:
                st = self._status(record)
                if st.done:
                    pump()
                    return st
            await asyncio.sleep(poll_s)

    def job_env(self, record: RunRecord) -> dict[str, str]:
        return dict(record.plan.nodes[0].env) if record.plan.nodes else {}

    def stop(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
        results = []
        for n in record.plan.nodes:
            pgid = self._group(record, n.node)
            if pgid is None or not _alive(pgid):
                results.append(StopResult(n.node))
                continue
            _signal(pgid, signal.SIGTERM)
            deadline, killed = time.monotonic() + timeout, 0
            while _alive(pgid) and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.1)
            if _alive(pgid):
                _signal(pgid, signal.SIGKILL)
                killed = 1
                time.sleep(0.2)
                self._reap()
            results.append(StopResult(n.node, found=1, killed=killed, remaining=_members(pgid)))
        if any(r.found for r in results):
            record.state, record.message = "stopped", "stopped by corral stop"
            record.save()
        return results

    def stopped_text(self, name: str) -> str:
        return f"the process groups of {name} ended"

    def attach(self, record: RunRecord, cluster: ClusterConfig, node: str | None) -> AttachPlan:
        target = record.plan.node(node) if node else record.plan.nodes[0]
        state = next(s for s in self._status(record).nodes if s.node == target.node)
        if state.state != "running":
            raise UserError(
                f"job {record.name} is not running on {target.node} ({state.state}): its output is in its log",
                hint=f"`corral logs {record.name}`",
            )
        argv = ["tail", "-f", target.log_path]
        return AttachPlan(argv, "Ctrl-C leaves; the job goes on", lambda: os.execvp(argv[0], argv))

    def read_files(self, record: RunRecord, cluster: ClusterConfig, relpaths: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for n in record.plan.nodes:
            out[n.node] = {}
            for rel in relpaths:
                try:
                    out[n.node][rel] = Path(record.plan.run_dir, rel.format(node=n.node)).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    out[n.node][rel] = None
        return out

    def clean_up(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> None:
        self._reap()  # an ended process group leaves nothing else behind

    def forget(self, record: RunRecord, cluster: ClusterConfig) -> list[str]:
        return []  # every file of the run is in the run dir on this machine

    # ------------------------------------------------------------------ preflight

    def checking_text(self, cluster: ClusterConfig) -> str:
        return f"checking {len(cluster.nodes)} local node(s)..."

    def preflight(self, job: JobConfig | None, cluster: ClusterConfig) -> PreflightView:
        checks = []
        for n in cluster.nodes:
            ok = n.is_local
            checks.append(
                {"node": n.label, "check": "local", "ok": ok, "detail": "" if ok else f"{n.host} is not this machine"}
            )
        workdir = Path(resolve_path(cluster_base(cluster), cluster.workdir))
        checks.append({"node": "-", "check": "workdir", "ok": workdir.is_dir(), "detail": str(workdir)})
        failed = [c for c in checks if not c["ok"]]
        failure = None
        if failed:
            c = failed[0]
            failure = f"node {c['node']}: {c['check']}: {c['detail']}; procs runs only nodes of this machine"
        lines = [f"{c['node']}: {c['check']}: {'ok' if c['ok'] else 'FAIL'} {c['detail']}".rstrip() for c in checks]
        return PreflightView(checks, None, [], lines, failure)

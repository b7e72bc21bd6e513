"""The ssh + tmux backend behind the seam: ``execute`` (start, status, stop), ``logs``, ``preflight``.

Every node of the cluster file is a machine reached over ssh (``localhost`` directly); each
runs the job in a tmux session ``corral-<name>`` that survives the launcher and a dropped
connection. The nodes are asked through the node agent (``launcher.agent``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from typing import TextIO

from launcher import aio
from launcher.backends.base import AttachPlan, Capabilities, Description, PreflightView, TailLines
from launcher.backends.ssh import execute, logs
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import UserError
from launcher.plan import resolve_path
from launcher.runs.options import TMUX_SOCKET_ENV, LaunchOptions, cluster_base
from launcher.runs.record import RunRecord
from launcher.runs.state import JobStatus, StopResult

DRY_RUN_NOTE = (
    "(dry run: nothing was touched; GPU counts come from the cluster file, the rendezvous port is probed at launch)"
)


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


def check_attachable(status: JobStatus, record: RunRecord, node: str) -> None:
    """Say in a sentence why attaching cannot work, instead of tmux's own error."""
    ns = next(n for n in status.nodes if n.node == node)
    if ns.state != "running":
        if ns.state == "exited":
            when = time.strftime("%H:%M", time.localtime(record.started_at + (ns.elapsed_s or 0)))
            how = (
                f"stopped by corral stop ({ns.exit_code})"
                if status.state == "stopped"
                else f"exited {ns.exit_code} at {when}"
            )
        else:
            how = f"{ns.state}{': ' + ns.detail if ns.detail else ''}"
        raise UserError(
            f"job {record.name} is not running on {node} ({how}): its output is in its log",
            hint=f"`corral logs {record.name}`",
        )
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(
            f"attach needs a terminal (stdin and stdout are not one here) to show job {record.name}'s tmux session",
            hint=f"run it from a terminal, or read the output with `corral logs {record.name} -f`",
        )


class SshBackend:
    name = "ssh"
    capabilities = Capabilities(places_nodes=False)

    # ------------------------------------------------------------------ launch

    def describe(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> Description:
        from launcher.plan import describe

        plan = execute.prepare(job, cluster, replace(options, dry_run=True)).plan
        return Description(
            describe(plan),
            plan.to_dict(),
            plan.run_dir,
            [n.node for n in plan.nodes],
            DRY_RUN_NOTE,
            local_script_warnings(job, cluster, options.base_dir),
        )

    def warnings(self, job: JobConfig, cluster: ClusterConfig) -> list[str]:
        return local_script_warnings(job, cluster)

    def launch(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> RunRecord:
        return execute.launch(job, cluster, options)

    def launching_text(self, name: str, cluster: ClusterConfig) -> str:
        return f"launching {name}: preflight and start on {len(cluster.nodes)} node(s)..."

    def launched_text(self, record: RunRecord, cluster: ClusterConfig) -> str:
        n = record.name
        nodes = ", ".join(p.node for p in record.plan.nodes)
        return f"launched {n} on {nodes} (tmux session corral-{n}); logs in {record.plan.run_dir}/logs"

    # ------------------------------------------------------------------ a run

    async def status(self, record: RunRecord, cluster: ClusterConfig) -> JobStatus:
        return await execute.read_status(record, cluster)

    async def tail(self, record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int) -> TailLines:
        return await logs.tail_lines(record, cluster, node, lines)

    async def follow(
        self,
        record: RunRecord,
        cluster: ClusterConfig,
        node: str | None,
        lines: int,
        *,
        until_done: bool,
        out: TextIO | None = None,
        poll_s: float = 2.0,
    ) -> JobStatus | None:
        return await logs.follow(record, cluster, node, lines, until_done=until_done, out=out, poll_s=poll_s)

    def job_env(self, record: RunRecord) -> dict[str, str]:
        return dict(record.plan.nodes[0].env) if record.plan.nodes else {}

    def stop(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
        return execute.stop_record(record, cluster, timeout)

    def stopped_text(self, name: str) -> str:
        return f"tmux session corral-{name} removed"

    def attach(self, record: RunRecord, cluster: ClusterConfig, node: str | None) -> AttachPlan:
        from launcher.tools import ssh, tmux

        target = record.plan.node(node) if node else record.plan.nodes[0]
        check_attachable(aio.run(execute.read_status(record, cluster)), record, target.node)
        inner = tmux.attach(record.plan.tmux_socket, target.session)
        node_cfg = execute.node_config(cluster, target)
        return AttachPlan(
            ssh.interactive_argv(cluster.ssh, node_cfg, inner),
            "detach: Ctrl-b d",
            lambda: ssh.exec_interactive(cluster.ssh, node_cfg, inner),
        )

    def read_files(
        self, record: RunRecord, cluster: ClusterConfig, relpaths: list[str]
    ) -> dict[str, dict[str, str | None]]:
        return execute.read_files(record, cluster, relpaths)

    def clean_up(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> None:
        execute.clean_up_record(record, cluster, timeout)

    def forget(self, record: RunRecord, cluster: ClusterConfig) -> list[str]:
        return execute.forget_on_nodes(record, cluster)

    # ------------------------------------------------------------------ preflight

    def checking_text(self, cluster: ClusterConfig) -> str:
        return f"checking {len(cluster.nodes)} node(s)..."

    def preflight(self, job: JobConfig | None, cluster: ClusterConfig) -> PreflightView:
        from launcher.backends.ssh.preflight import CHECKS, run_preflight_sync
        from launcher.plan import default_local_venv

        report = run_preflight_sync(
            cluster,
            list(cluster.nodes),
            job,
            name=job.name if job else None,
            base_dir=cluster_base(cluster),
            local_venv=default_local_venv(),
            full_torch=True,
            tmux_socket=os.environ.get(TMUX_SOCKET_ENV) or None,
        )
        marks = {True: "ok", False: "FAIL", None: "-"}
        rows = []
        for n in cluster.nodes:
            row = {c.check: c for c in report.checks if c.node == n.label}
            rows.append([n.label, *(marks[row[c].ok] if c in row else "" for c in CHECKS)])
        failed_nodes = len({c.node for c in report.failures()})
        return PreflightView(
            report.to_json(),
            ["node", *CHECKS],
            rows,
            [f"{c.node}: {c.check}: {c.detail}" for c in report.checks if c.ok is False],
            None if report.ok else f"preflight failed on {failed_nodes} node(s)",
        )


__all__ = ["SshBackend", "local_script_warnings"]

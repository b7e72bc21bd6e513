"""The ssh + tmux backend: today's functions of ``launcher.jobs`` and ``launcher.backends.ssh.logs``, unchanged, behind the seam."""

from __future__ import annotations

import asyncio
from typing import Any

from launcher.config import ClusterConfig, JobConfig
from launcher.runs.record import RunRecord


class SshTmuxBackend:
    name = "ssh"

    def describe(self, job: JobConfig, cluster: ClusterConfig, **options: Any) -> tuple[str, dict[str, Any]]:
        from launcher.backends.ssh.execute import prepare
        from launcher.plan import describe

        plan = prepare(job, cluster, dry_run=True, **options).plan
        return describe(plan), plan.to_dict()

    def launch(self, job: JobConfig, cluster: ClusterConfig, options: Any) -> RunRecord:
        from launcher.backends.ssh.execute import launch

        return launch(job, cluster, options)

    def status(self, record: RunRecord, cluster: ClusterConfig):
        from launcher.backends.ssh.execute import read_status

        return asyncio.run(read_status(record, cluster))

    def tail(self, record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int):
        from launcher.backends.ssh.logs import tail_lines

        return asyncio.run(tail_lines(record, cluster, node, lines))

    def stop(self, record: RunRecord, cluster: ClusterConfig, timeout: float):
        from launcher.backends.ssh.execute import stop_record

        return stop_record(record, cluster, timeout)

    def attach_argv(self, record: RunRecord, cluster: ClusterConfig, node: str | None) -> list[str]:
        from launcher.backends.ssh.execute import node_config
        from launcher.tools import ssh, tmux

        target = record.plan.node(node) if node else record.plan.nodes[0]
        inner = tmux.attach(record.plan.tmux_socket, target.session)
        if not target.is_local:
            return ssh.ssh_argv(cluster.ssh, target.host, inner, tty=True, multiplex=False)
        return ssh.node_argv(cluster.ssh, node_config(cluster, target), inner, tty=True)

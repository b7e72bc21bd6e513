"""Preflight: every node checked in parallel before a launch, as a table node x check.

Two rounds of the node agent: ``probe`` (ssh, workdir, venv, torch, GPUs, tmux, a job of the
same name, and a free rendezvous port on the first node), then ``reach`` (every node opens a
TCP connection to the first node's rendezvous address). The verdicts are computed by pure
functions from the agents' replies (``evaluate``), so they are unit-tested on recorded replies.

Before a launch the torch check is light (the module and torchrun are found in the venv,
without importing torch: importing it on 8 nodes sharing a few cores would double the launch
time); ``corral preflight`` imports torch for real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from launcher import aio
from launcher.agent.remote import AgentReply, call_all
from launcher.config import ClusterConfig, JobConfig, NodeConfig
from launcher.plan import CPU_FALLBACK_NPROC, NodeFacts, rdzv_host, resolve_path, session_name
from launcher.tools import tmux

CHECKS = ("ssh", "workdir", "venv", "torch", "gpus", "port", "reach", "name")
REACH_TIMEOUT_S = 5.0


@dataclass
class Check:
    node: str
    check: str
    ok: bool | None
    """True pass, False fail, None not applicable / not run (an earlier check failed)."""
    detail: str = ""


@dataclass
class PreflightReport:
    checks: list[Check]
    facts: dict[str, NodeFacts] = field(default_factory=dict)
    rdzv_port: int | None = None
    stale_sessions: list[str] = field(default_factory=list)
    """Nodes holding an exited session of the same name (removed at launch)."""

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "rdzv_port": self.rdzv_port, "checks": [asdict(c) for c in self.checks]}

    def summary(self) -> str:
        """One line per failure: node, check and what to do."""
        return "\n".join(f"{c.node}: {c.check}: {c.detail}" for c in self.failures())


def probe_request(
    cluster: ClusterConfig,
    node: NodeConfig,
    job: JobConfig | None,
    *,
    first: bool,
    name: str | None,
    base_dir: str,
    local_venv: str | None,
    full_torch: bool,
    tmux_socket: str | None,
) -> dict[str, Any]:
    return {
        "op": "probe",
        "workdir": resolve_path(base_dir, cluster.workdir),
        "venv": cluster.venv or (local_venv if node.is_local else None),
        "full_torch": full_torch,
        "session": session_name(name) if name else None,
        "tmux_panes": tmux.list_panes(tmux_socket, session_name(name)) if name else None,
        "port": cluster.rendezvous.port if first else None,
        "script": job.script if job is not None else None,
    }


def evaluate_probe(
    node: NodeConfig,
    reply: AgentReply,
    job: JobConfig | None,
    *,
    first: bool,
    name: str | None,
    venv: str | None,
    plain: bool,
) -> list[Check]:
    """Pure: the probe's verdicts for one node."""
    n = node.label
    if not reply.ok:
        # the check is named "ssh" already: the reason follows without ssh's own "ssh: " prefix
        how = "cannot run locally" if node.is_local else f"cannot reach {node.host} over ssh"
        rest = [Check(n, c, None, "not checked: node unreachable") for c in CHECKS[1:]]
        return [Check(n, "ssh", False, f"{how} ({str(reply.error).removeprefix('ssh: ')})")] + rest
    d = reply.data
    if not d.get("tmux") or not d.get("bash"):
        out = [Check(n, "ssh", False, "tmux and bash are needed on the node: install them (e.g. apt-get install tmux)")]
    else:
        out = [
            Check(n, "ssh", True, "local" if node.is_local else f"ok ({d.get('hostname')}, python {d.get('python')})")
        ]
    where = d.get("workdir") or "the working directory"
    if not d.get("workdir_ok"):
        out.append(
            Check(
                n,
                "workdir",
                False,
                f"working directory {where} missing: create it or fix `workdir` in the cluster file",
            )
        )
    elif d.get("script_ok") is False:
        fix = (
            "fix `script` (relative to workdir) or `workdir`"
            if node.is_local
            else "copy the code to this node or fix `script`/`workdir`"
        )
        out.append(
            Check(
                n,
                "workdir",
                False,
                f"script {job.script if job else ''} not found in {where} (the cluster's workdir, where the job runs): {fix}",
            )
        )
    else:
        out.append(Check(n, "workdir", True, "exists" + (", script found" if d.get("script_ok") else "")))
    if venv is None:
        out.append(Check(n, "venv", None, "none configured (python3 from PATH)"))
    elif d.get("venv_ok"):
        out.append(Check(n, "venv", True, venv))
    else:
        out.append(
            Check(n, "venv", False, f"{venv}/bin/activate not found: create the venv on this node or fix `venv`")
        )
    torch = d.get("torch") or {}
    if torch.get("ok") and not torch.get("torchrun") and not plain:
        out.append(
            Check(
                n,
                "torch",
                False,
                f"torch {torch.get('version')} found but no torchrun on PATH: reinstall torch in the venv",
            )
        )
    elif torch.get("ok"):
        out.append(Check(n, "torch", True, f"torch {torch.get('version')}"))
    else:
        out.append(
            Check(
                n,
                "torch",
                False,
                f"import torch fails: {torch.get('error', 'unknown error')}; install torch in the venv",
            )
        )
    out.append(_gpu_check(node, d, job))
    if first and not plain:
        port = d.get("port")
        out.append(
            Check(
                n,
                "port",
                port is not None,
                f"rendezvous port {port} free" if port else "no free port near the configured rendezvous port",
            )
        )
    else:
        out.append(Check(n, "port", None, "-"))
    out.append(Check(n, "reach", None, "pending"))
    state = d.get("session_state")
    if name and state == "running":
        out.append(
            Check(
                n,
                "name",
                False,
                f"job {name!r} already running here (tmux session {session_name(name)}): `corral stop {name}` or choose --name",
            )
        )
    else:
        out.append(Check(n, "name", True if name else None, "free" if name else "-"))
    return out


def _gpu_check(node: NodeConfig, d: dict[str, Any], job: JobConfig | None) -> Check:
    detected = int(d.get("gpus") or 0)
    gpus = node.gpus if node.gpus is not None else detected
    note = "" if node.gpus is None or node.gpus == detected else f" (config says {node.gpus}, detected {detected})"
    if job is None:
        return Check(node.label, "gpus", True, f"{gpus} GPU(s){note}")
    nproc = job.nproc_per_node
    if job.backend == "nccl" and gpus == 0:
        return Check(
            node.label, "gpus", False, "backend nccl needs GPUs but this node has none: use backend gloo or auto"
        )
    if nproc == "auto":
        what = f"{gpus} GPU(s) -> {gpus} processes" if gpus else f"no GPU -> {CPU_FALLBACK_NPROC} CPU processes"
        return Check(node.label, "gpus", True, what + note)
    if gpus and int(nproc) > gpus:
        return Check(
            node.label, "gpus", False, f"nproc_per_node {nproc} > {gpus} GPU(s): lower nproc_per_node or use auto"
        )
    return Check(node.label, "gpus", True, f"{gpus} GPU(s), {nproc} processes{note}")


def evaluate_reach(node: NodeConfig, reply: AgentReply, target: str) -> Check:
    if not reply.ok:
        return Check(node.label, "reach", False, f"could not test: {reply.error}")
    if reply.data.get("ok"):
        return Check(node.label, "reach", True, f"{target}: {reply.data.get('detail')}")
    return Check(
        node.label,
        "reach",
        False,
        f"cannot open TCP to {target} ({reply.data.get('detail')}): the machines must share a private network; "
        "set each node's `addr` to its private address",
    )


async def run_preflight(
    cluster: ClusterConfig,
    nodes: list[NodeConfig],
    job: JobConfig | None,
    *,
    name: str | None,
    base_dir: str,
    local_venv: str | None,
    full_torch: bool = False,
    plain: bool = False,
    tmux_socket: str | None = None,
) -> PreflightReport:
    """One parallel round of probes; the first node also finds a free rendezvous port, the others
    test TCP to the first node's rendezvous address at the configured port (a refusal counts as
    reachable: the host answered; a timeout or no route does not)."""
    from launcher.tools import ssh

    await ssh.retire_masters(cluster.ssh, nodes)
    multi = not plain and len(nodes) > 1
    target_host, target_port = rdzv_host(nodes[0]), cluster.rendezvous.port
    requests = []
    for i, n in enumerate(nodes):
        # a plain job has no rendezvous: it reserves no port (reservations last minutes, see node_agent)
        req = probe_request(
            cluster,
            n,
            job,
            first=(i == 0 and not plain),
            name=name,
            base_dir=base_dir,
            local_venv=local_venv,
            full_torch=full_torch,
            tmux_socket=tmux_socket,
        )
        if multi and i > 0:
            req["reach"] = {"host": target_host, "port": target_port, "timeout": REACH_TIMEOUT_S}
        requests.append((n, req))
    replies = await call_all(cluster, requests, timeout=180 if full_torch else 60)
    checks: list[Check] = []
    facts: dict[str, NodeFacts] = {}
    stale = []
    for i, (node, reply) in enumerate(zip(nodes, replies)):
        node_checks = evaluate_probe(
            node, reply, job, first=(i == 0), name=name, venv=requests[i][1]["venv"], plain=plain
        )
        if reply.ok:
            facts[node.label] = NodeFacts(gpus=int(reply.data.get("gpus") or 0))
            if reply.data.get("session_state") == "exited":
                stale.append(node.label)
            node_checks = [
                _reach_verdict(node, reply, c, i, multi, f"{target_host}:{target_port}") if c.check == "reach" else c
                for c in node_checks
            ]
        checks += node_checks
    port = replies[0].data.get("port") if replies and replies[0].ok else None
    return PreflightReport(checks, facts, port, stale)


def _reach_verdict(
    node: NodeConfig, reply: AgentReply, placeholder: Check, index: int, multi: bool, target: str
) -> Check:
    if not multi:
        return Check(node.label, "reach", None, "single node" if index == 0 else "-")
    if index == 0:
        return Check(node.label, "reach", True, "hosts the rendezvous")
    result = reply.data.get("reach")
    if result is None:
        return placeholder
    return evaluate_reach(node, AgentReply(node.label, result), target)


def run_preflight_sync(*args: Any, **kwargs: Any) -> PreflightReport:
    return aio.run(run_preflight(*args, **kwargs))

"""The launch plan: pure data deciding what runs where, printable before anything is touched.

Input: the job, the cluster, and facts gathered from the nodes beforehand (GPU counts, a
rendezvous port probed free on the first node). Output: per node the tmux session, the
working directory, the merged environment, the torchrun (or plain python) argv, where
the wrapper script goes and the exact pane command (each backend renders the wrapper itself:
``launcher.backends.ssh.wrapper``). Nothing here touches ssh, tmux
or the disk, so ``--dry-run`` and the unit tests see exactly what a launch would do.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from launcher.config import ClusterConfig, JobConfig, NodeConfig
from launcher.config.paths import resolve_path
from launcher.errors import UserError

if TYPE_CHECKING:
    from container.facts import NodeFacts as ContainerNodeFacts

SESSION_PREFIX = "corral-"
CPU_FALLBACK_NPROC = 2
"""Processes per node for ``nproc_per_node: auto`` on a node without GPUs: enough to
exercise a real process group (gloo) on a laptop or CI machine, small enough for 2 cores."""
RDZV_JOIN_TIMEOUT_S = 120
"""torchrun's default is 900 s; every node is started within seconds of the others, so a
node that has not joined after two minutes is broken and the job should fail visibly."""
LOG_LINE_PREFIX = "[rank${rank}]: "
"""torchrun's per-line prefix for worker output (global rank); the wrapper adds ``[node]``."""
PLAIN_PYTHON = "python3"
TORCHRUN = "torchrun"


@dataclass(frozen=True)
class NodeFacts:
    """What the launcher learned from a node before planning (see ``launcher.backends.ssh.preflight``)."""

    gpus: int = 0


@dataclass(frozen=True)
class PlanInputs:
    """Everything besides the configs that the plan depends on, gathered by the caller."""

    name: str
    run_id: str
    base_dir: str
    """Relative paths of the cluster file are resolved against this directory (where corral runs)."""
    rdzv_port: int
    facts: dict[str, NodeFacts] = field(default_factory=dict)
    """By node label; a node without facts counts as having no GPU (unless its config says)."""
    local_venv: str | None = None
    """Venv activated on localhost nodes when the cluster names none (the one corral runs from)."""
    plain: bool = False
    secret_names: tuple[str, ...] = ()
    tmux_socket: str | None = None
    """tmux ``-L`` socket name; None = the user's default server (tests isolate with their own)."""
    container_facts: dict[str, ContainerNodeFacts] = field(default_factory=dict)
    """By node label: what ``container.runtime.launch_facts`` found on each node before planning a job with a container section."""


@dataclass(frozen=True)
class NodePlan:
    """What one node runs."""

    node: str
    host: str
    is_local: bool
    rank: int
    session: str
    workdir: str
    venv: str | None
    state_dir: str
    log_path: str
    wrapper_path: str
    secrets_path: str
    nproc_per_node: int
    env: dict[str, str]
    inner_argv: list[str]
    """torchrun (or ``python3 SCRIPT``) argv, before any container wrapping."""
    command: list[str]
    """What the wrapper runs: ``inner_argv``, or the container runner's argv around it."""
    pane_command: list[str]
    """The exact argv tmux executes in the pane (no shell)."""
    watchdog: dict[str, Any] | None = None
    """The hang watchdog's settings for this node (``launcher.watchdog.node.Config``), None: no watchdog."""
    watchdog_command: list[str] = field(default_factory=list)
    """What the wrapper starts beside the job (the wrapper's pid is appended)."""


@dataclass(frozen=True)
class ContainerSection:
    """A job whose nodes run their command in a container: one container per node, found by its labels."""

    image: str
    names: dict[str, str]
    """Node label -> container name (``corral-<job>-<node>``)."""
    labels: dict[str, str]
    """Labels every container of the job carries (``corral.job``); ``ps`` and ``stop`` select by them."""


@dataclass(frozen=True)
class JobPlan:
    """The whole launch: one NodePlan per node, plus what they share."""

    name: str
    run_id: str
    run_dir: str
    ckpt_dir: str
    backend: str
    plain: bool
    nnodes: str
    rdzv_endpoint: str | None
    max_restarts: int
    secret_names: list[str]
    tmux_socket: str | None
    nodes: list[NodePlan]
    container: ContainerSection | None = None
    """Set when the job runs in containers (its ``container`` section)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobPlan:
        nodes = [NodePlan(**n) for n in data["nodes"]]
        container = ContainerSection(**data["container"]) if data.get("container") else None
        return cls(**{**data, "nodes": nodes, "container": container})

    def node(self, key: str) -> NodePlan:
        for n in self.nodes:
            if key in (n.node, n.host):
                return n
        known = ", ".join(n.node for n in self.nodes)
        raise UserError(f"job {self.name} has no node {key!r}", hint=f"its nodes are: {known}")


def session_name(name: str) -> str:
    return SESSION_PREFIX + name


def select_nodes(cluster: ClusterConfig, job: JobConfig, keys: list[str] | None = None) -> list[NodeConfig]:
    """The nodes a job runs on: ``keys`` (names or hosts) or the cluster's, cut to ``nnodes``."""
    if keys:
        chosen = []
        for key in keys:
            try:
                node = cluster.node(key)
            except KeyError:
                known = ", ".join(n.label for n in cluster.nodes)
                raise UserError(f"unknown node {key!r}", hint=f"the cluster's nodes are: {known}") from None
            if node not in chosen:
                chosen.append(node)
    else:
        chosen = list(cluster.nodes)
    lo, hi = job.nnodes_bounds(len(chosen))
    if lo > len(chosen):
        raise UserError(
            f"nnodes: the job needs at least {lo} node(s) but only {len(chosen)} are available",
            hint="lower nnodes or add nodes to the cluster file",
        )
    return chosen[:hi]


def nnodes_arg(job: JobConfig, count: int) -> str:
    """torchrun --nnodes: a fixed count, or MIN:MAX for an elastic job."""
    if isinstance(job.nnodes, str) and ":" in job.nnodes:
        return job.nnodes
    return str(count)


def gpus_of(node: NodeConfig, facts: dict[str, NodeFacts]) -> int:
    """The config's GPU count wins over the detected one (it lets users pin a smaller count)."""
    if node.gpus is not None:
        return node.gpus
    return facts.get(node.label, NodeFacts()).gpus


def nproc_for(job: JobConfig, gpus: int) -> int:
    if job.nproc_per_node != "auto":
        return int(job.nproc_per_node)
    return gpus if gpus > 0 else CPU_FALLBACK_NPROC


def backend_for(job: JobConfig, gpu_counts: list[int]) -> str:
    if job.backend != "auto":
        return job.backend
    return "nccl" if gpu_counts and all(g > 0 for g in gpu_counts) else "gloo"


def rdzv_host(node: NodeConfig) -> str:
    """Address the other nodes use to reach the first node's c10d store."""
    if node.addr:
        return node.addr
    if node.is_local:
        return "127.0.0.1"
    return node.host.rsplit("@", 1)[-1]


FLIGHT_RECORDER_ENTRIES = "2000"
"""Collectives each rank's NCCL Flight Recorder keeps (torch's own default when enabled)."""
NCCL_TRACE_DIR = "nccl_trace"


def flight_recorder_env(run_dir: str) -> dict[str, str]:
    """PyTorch's NCCL Flight Recorder, on: an NCCL timeout leaves one trace per rank in the run dir.

    torch 2.13 reads ``TORCH_FR_BUFFER_SIZE`` and ``TORCH_FR_DUMP_TEMP_FILE`` (falling back to the
    older ``TORCH_NCCL_TRACE_BUFFER_SIZE`` / ``TORCH_NCCL_DEBUG_INFO_TEMP_FILE``, which torch
    before 2.7 reads alone): both spellings are set. The file name gets the global rank appended.
    Read the traces with ``torchfrtrace`` (docs/WATCHDOG.md)."""
    prefix = posixpath.join(run_dir, NCCL_TRACE_DIR, "rank_")
    return {
        "TORCH_FR_BUFFER_SIZE": FLIGHT_RECORDER_ENTRIES,
        "TORCH_NCCL_TRACE_BUFFER_SIZE": FLIGHT_RECORDER_ENTRIES,
        "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
        "TORCH_FR_DUMP_TEMP_FILE": prefix,
        "TORCH_NCCL_DEBUG_INFO_TEMP_FILE": prefix,
    }


def merged_env(
    cluster: ClusterConfig, node: NodeConfig, job: JobConfig, corral_env: dict[str, str], plain: bool
) -> dict[str, str]:
    """cluster env < node env < job env (``--set env.X=...`` lands in the job); CORRAL_* always win."""
    defaults = {"PYTHONUNBUFFERED": "1"}
    if not plain:
        defaults["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] = LOG_LINE_PREFIX
        if job.watchdog.flight_recorder and "CORRAL_RUN_DIR" in corral_env:
            defaults.update(flight_recorder_env(corral_env["CORRAL_RUN_DIR"]))
        if job.max_restarts > 0:
            # A rendezvous store per restart attempt: with torchrun's shared one, restarted workers
            # can read a dead worker's address and fail to connect. It slows the start (rank 0's
            # worker serves it only after importing torch), so only jobs with restarts get it
            # (docs/LAUNCH.md, "Restarts"; figures in docs/results/launch-latency.md).
            defaults["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    return {**defaults, **cluster.env, **node.env, **job.env, **corral_env}


def corral_env(
    job: JobConfig,
    *,
    name: str,
    run_id: str,
    run_dir: str,
    ckpt_dir: str,
    backend: str,
    node: tuple[str, int, int] | None = None,
) -> dict[str, str]:
    """The CORRAL_* variables every rank sees, for every backend (docs/LAUNCH.md, "What the script gets").

    ``node`` is (name, node rank, node count) where the launcher decides them; a backend whose
    scheduler places the nodes sets those three at run time instead (the Slurm node wrapper)."""
    env = {
        "CORRAL_JOB_NAME": name,
        "CORRAL_RUN_ID": run_id,
        "CORRAL_RUN_DIR": run_dir,
        "CORRAL_CKPT_DIR": ckpt_dir,
        "CORRAL_BACKEND": backend,
    }
    if node is not None:
        label, rank, count = node
        env.update({"CORRAL_NODE": label, "CORRAL_NODE_RANK": str(rank), "CORRAL_NNODES": str(count)})
    if job.checkpoint is not None:  # read by launcher.checkpoint.Checkpointer.from_env()
        env["CORRAL_CKPT_POLICY"] = json.dumps(job.checkpoint.model_dump(), sort_keys=True)
    return env


def entry_argv(job: JobConfig) -> list[str]:
    """What runs the user's code, after torchrun's options or ``python3``: ``-m MODULE`` or the script, then its args."""
    return (["-m", job.module] if job.module else [job.script or ""]) + list(job.args)


def torchrun_options(
    job: JobConfig, *, nnodes: str, nproc: int, endpoint: str, run_id: str, log_dir: str, local_addr: str | None = None
) -> list[str]:
    """``torchrun`` and its options, for every backend (a scheduler's backend passes placeholders for
    the values that exist only inside the allocation: the node count, the endpoint, the log dir)."""
    argv = [
        TORCHRUN,
        "--nnodes",
        nnodes,
        "--nproc-per-node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        run_id,
        "--rdzv-conf",
        f"join_timeout={RDZV_JOIN_TIMEOUT_S}",
        "--max-restarts",
        str(job.max_restarts),
        "--tee",
        "3",
        "--log-dir",
        log_dir,
    ]
    if local_addr:
        argv += ["--local-addr", local_addr]
    return argv


def torchrun_argv(
    job: JobConfig, *, nnodes: str, nproc: int, endpoint: str, run_id: str, log_dir: str, local_addr: str | None
) -> list[str]:
    return torchrun_options(
        job, nnodes=nnodes, nproc=nproc, endpoint=endpoint, run_id=run_id, log_dir=log_dir, local_addr=local_addr
    ) + entry_argv(job)


def plain_argv(job: JobConfig) -> list[str]:
    return [PLAIN_PYTHON, *entry_argv(job)]


def container_command(
    job: JobConfig,
    inner_argv: list[str],
    *,
    node: str,
    env: dict[str, str],
    workdir: str,
    gpus: int,
    mounts: list[str],
    **extra: Any,
) -> list[str]:
    """The seam for containers: the argv the wrapper runs instead of ``inner_argv``.

    Without ``job.container`` this is ``inner_argv``. With it, the container package's pure
    builder ``container.launch.node_argv(container, inner_argv, node=, env_names=, workdir=,
    gpus=, mounts=)`` returns e.g. a ``docker run ...`` argv around the inner command; the
    environment is exported by the wrapper, so only names travel on the docker argv.
    """
    if job.container is None:
        return list(inner_argv)
    from container.launch import node_argv  # imported only for container jobs: it pulls in the container builder

    return node_argv(
        job.container,
        list(inner_argv),
        node=node,
        env_names=sorted(env),
        workdir=workdir,
        gpus=gpus,
        mounts=mounts,
        **extra,
    )


def container_section(job: JobConfig, name: str, nodes: list[NodeConfig]) -> ContainerSection | None:
    if job.container is None:
        return None
    from container.builder import container_name
    from container.plan import LABEL_JOB

    return ContainerSection(
        image=job.container.image,
        names={n.label: container_name(name, n.label) for n in nodes},
        labels={LABEL_JOB: name},
    )


WATCHDOG_DIR = "watchdog"
WATCHDOG_PORT_OFFSET = 1
"""The leader's first port to try: the rendezvous port + 1 (``launcher.watchdog.node``)."""


def watchdog_settings(
    job: JobConfig,
    *,
    run_id: str,
    name: str,
    run_dir: str,
    venv: str | None,
    node: str | None = None,
    node_rank: int | None = None,
    nnodes: int | None = None,
    log_path: str | None = None,
    leader_host: str | None = None,
    rdzv_port: int | None = None,
) -> dict[str, Any]:
    """The node-side watchdog's config file (``launcher.watchdog.node.Config``), from the job's section.

    The node's own fields left None are read on the node from the environment the wrapper
    exports (``CORRAL_NODE``, ``CORRAL_NODE_RANK``, ``CORRAL_NNODES``, ``CORRAL_RDZV_ENDPOINT``):
    on Slurm they exist only inside the allocation."""
    wd = job.watchdog
    return {
        "run_id": run_id,
        "name": name,
        "node": node,
        "node_rank": node_rank,
        "nnodes": nnodes,
        "run_dir": run_dir,
        "log_path": log_path,
        "leader_host": leader_host,
        "port": None if rdzv_port is None else rdzv_port + WATCHDOG_PORT_OFFSET,
        "hang_after": wd.hang_after,
        "first_step_grace": wd.grace_s(),
        "on_hang": wd.on_hang,
        "interval": wd.interval_s(),
        "start_after": wd.start_after_s(),
        "max_restarts": job.max_restarts,
        "straggler_after": wd.straggler_after,
        "venv_bin": posixpath.join(venv, "bin") if venv else None,
    }


def watchdog_command(state_dir: str, venv: str | None, run_id: str, node: str | None) -> list[str]:
    """The watchdog beside the job: its own session (it outlives the pane to finish an action),
    the run's env marker (``corral stop`` finds it like the job's other processes), the copy of
    its package the launch wrote next to its config. ``node`` None: the wrapper exports ``CORRAL_NODE``."""
    wd_dir = posixpath.join(state_dir, WATCHDOG_DIR)
    python = posixpath.join(venv, "bin", "python3") if venv else PLAIN_PYTHON
    return [
        "setsid",
        "env",
        f"CORRAL_RUN_ID={run_id}",
        *([f"CORRAL_NODE={node}"] if node is not None else []),
        f"PYTHONPATH={posixpath.join(wd_dir, 'pkg')}",
        python,
        "-S",  # standard library only (docs/WATCHDOG.md): no site-packages scan at its start
        "-m",
        "launcher.watchdog.node",
        posixpath.join(wd_dir, "config.json"),
    ]


def watchdog_start(command: list[str], log_redirect: str, start_after: float) -> str:
    """The wrapper's line that starts the watchdog in the background, ``start_after`` seconds after the job
    (``WatchdogConfig.start_after_s``: before it could report anything, after the ranks' own start, whose
    CPU it would otherwise share; on shared cores that was most of the launch's lag behind pdsh:
    docs/results/scale.md).
    The sleeping subshell is in the wrapper's process group, so ``stop`` and the pane's end take it too;
    ``$$`` in it is still the wrapper's pid, which the watchdog outlives by no more than a second."""
    return f'( sleep {start_after:g}; exec {shlex.join(command)} "$$" ) {log_redirect} 2>&1 </dev/null &\n'


def pane_command(wrapper_path: str) -> list[str]:
    """The argv tmux runs in the pane: the wrapper holds everything else. Two or more arguments:
    tmux executes it directly, with no shell in between (a shell would parse it, and a bash
    started below an ssh login would read the user's rc file again)."""
    return ["bash", wrapper_path]


def build_plan(job: JobConfig, cluster: ClusterConfig, nodes: list[NodeConfig], inputs: PlanInputs) -> JobPlan:
    """Decide everything a launch does; pure (see module docstring)."""
    base = inputs.base_dir
    run_dir = resolve_path(base, posixpath.join(cluster.storage.runs, inputs.name))
    ckpt_dir = resolve_path(base, posixpath.join(cluster.storage.checkpoints, inputs.name))
    workdir = resolve_path(base, cluster.workdir)
    gpu_counts = [gpus_of(n, inputs.facts) for n in nodes]
    backend = backend_for(job, gpu_counts)
    first = nodes[0]
    endpoint = None if inputs.plain else f"{rdzv_host(first)}:{inputs.rdzv_port}"
    nnodes = nnodes_arg(job, len(nodes))
    plans = []
    for rank, (node, gpus) in enumerate(zip(nodes, gpu_counts)):
        venv = cluster.venv or (inputs.local_venv if node.is_local else None)
        state_dir = posixpath.join(run_dir, "nodes", node.label)
        corral = corral_env(
            job,
            name=inputs.name,
            run_id=inputs.run_id,
            run_dir=run_dir,
            ckpt_dir=ckpt_dir,
            backend=backend,
            node=(node.label, rank, len(nodes)),
        )
        env = merged_env(cluster, node, job, corral, inputs.plain)
        nproc = nproc_for(job, gpus)
        if inputs.plain:
            inner = plain_argv(job)
        else:
            inner = torchrun_argv(
                job,
                nnodes=nnodes,
                nproc=nproc,
                endpoint=endpoint or "",
                run_id=inputs.run_id,
                log_dir=posixpath.join(state_dir, "torchelastic"),
                local_addr=node.addr,
            )
        command = container_command(
            job,
            inner,
            node=node.label,
            env=env,
            workdir=workdir,
            gpus=gpus,
            mounts=[run_dir, ckpt_dir, workdir],
            job_name=inputs.name,
            venv=venv,
            facts=inputs.container_facts.get(node.label),
        )
        wrapper = posixpath.join(state_dir, "run.sh")
        log_path = posixpath.join(run_dir, "logs", f"{node.label}.log")
        watching = job.watchdog.enabled and not inputs.plain
        wd = (
            watchdog_settings(
                job,
                run_id=inputs.run_id,
                name=inputs.name,
                node=node.label,
                node_rank=rank,
                nnodes=len(nodes),
                run_dir=run_dir,
                log_path=log_path,
                leader_host=rdzv_host(first),
                rdzv_port=inputs.rdzv_port,
                venv=venv,
            )
            if watching
            else None
        )
        plans.append(
            NodePlan(
                node=node.label,
                host=node.host,
                is_local=node.is_local,
                rank=rank,
                session=session_name(inputs.name),
                workdir=workdir,
                venv=venv,
                state_dir=state_dir,
                log_path=log_path,
                wrapper_path=wrapper,
                secrets_path=posixpath.join(state_dir, "secrets.env"),
                nproc_per_node=nproc,
                env=env,
                inner_argv=inner,
                command=command,
                pane_command=pane_command(wrapper),
                watchdog=wd,
                watchdog_command=watchdog_command(state_dir, venv, inputs.run_id, node.label) if wd else [],
            )
        )
    return JobPlan(
        name=inputs.name,
        run_id=inputs.run_id,
        run_dir=run_dir,
        ckpt_dir=ckpt_dir,
        backend=backend,
        plain=inputs.plain,
        nnodes=nnodes,
        rdzv_endpoint=endpoint,
        max_restarts=job.max_restarts,
        secret_names=sorted(inputs.secret_names),
        tmux_socket=inputs.tmux_socket,
        nodes=plans,
        container=container_section(job, inputs.name, nodes),
    )


def shares_cpus(node: NodePlan) -> bool:
    """torchrun sets OMP_NUM_THREADS=1 with a 4-line warning in every log when it is unset; a job
    that did not set it gets the node's CPUs shared among its processes, counted on the node."""
    return "OMP_NUM_THREADS" not in node.env and node.inner_argv[:1] == [TORCHRUN]


def render_secrets(values: dict[str, str]) -> str:
    """The 0600 env file the wrapper sources (set -a): one quoted assignment per line."""
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def parse_env_file(text: str, source: str) -> dict[str, str]:
    """KEY=VALUE lines (``export`` prefix, comments, blank lines and one level of quotes allowed)."""
    from launcher.config.base import ENV_NAME

    out: dict[str, str] = {}
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not ENV_NAME.match(key):
            raise UserError(f"{source}:{i}: expected KEY=VALUE", hint="one secret per line, e.g. HF_TOKEN=abc")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def describe(plan: JobPlan) -> str:
    """Human-readable plan for ``--dry-run``."""
    lines = [
        f"job {plan.name} (run id {plan.run_id}): {len(plan.nodes)} node(s), backend {plan.backend}"
        + (
            ""
            if plan.plain
            else f", rendezvous {plan.rdzv_endpoint}, nnodes {plan.nnodes}, max restarts {plan.max_restarts}"
        ),
        f"run dir: {plan.run_dir}",
        f"checkpoints: {plan.ckpt_dir}",
    ]
    if plan.secret_names:
        lines.append(f"secrets (values not shown): {', '.join(plan.secret_names)}")
    for n in plan.nodes:
        lines += [
            f"node {n.node} ({'local' if n.is_local else 'ssh ' + n.host}): tmux session {n.session}, {n.nproc_per_node} process(es)",
            f"  workdir: {n.workdir}",
            f"  venv: {n.venv or '-'}",
            f"  log: {n.log_path}",
            "  env: "
            + " ".join(f"{k}={shlex.quote(v)}" for k, v in n.env.items())
            + (f" OMP_NUM_THREADS=<node CPUs / {n.nproc_per_node}>" if shares_cpus(n) else ""),
            f"  command: {shlex.join(n.command)}",
            f"  pane: {shlex.join(n.pane_command)}",
        ]
        if n.watchdog:
            w = n.watchdog
            lines.append(
                f"  watchdog: hang after {w['hang_after']:g} s (first step {w['first_step_grace']:g} s), on hang {w['on_hang']}, "
                f"sample every {w['interval']:g} s from {w['start_after']:g} s after the start, {'leader' if w['node_rank'] == 0 else 'reports to ' + w['leader_host']} "
                f"(port {w['port']}+): {shlex.join(n.watchdog_command)}"
            )
        else:
            lines.append("  watchdog: off")
    return "\n".join(lines)


def default_local_venv() -> str | None:
    """The venv corral itself runs from, if any (used for localhost nodes without a venv)."""
    import sys

    return sys.prefix if sys.prefix != sys.base_prefix else None


__all__ = [
    "CPU_FALLBACK_NPROC",
    "JobPlan",
    "NodeFacts",
    "NodePlan",
    "PlanInputs",
    "build_plan",
    "describe",
    "pane_command",
    "parse_env_file",
    "render_secrets",
    "shares_cpus",
    "resolve_path",
    "select_nodes",
    "session_name",
    "default_local_venv",
]

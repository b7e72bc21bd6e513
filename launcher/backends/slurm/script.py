"""The Slurm plan and its two scripts: pure data and text, printable with ``--dry-run``.

A job on a Slurm cluster is one batch job. The **batch script** (what ``sbatch`` takes) runs on the
allocation's first node: it picks a free port there for torchrun's c10d rendezvous, then ``srun``
starts the **node wrapper** once on every node. The wrapper activates the venv, exports the same
environment and CORRAL_* variables as over ssh (built by ``launcher.plan``; the per-node ones come
from Slurm: ``CORRAL_NODE=$SLURMD_NODENAME``, ``CORRAL_NODE_RANK=$SLURM_NODEID``, plus
``CORRAL_SLURM_JOB_ID``), runs torchrun with ``--nnodes $SLURM_NNODES`` and writes every output
line, prefixed with the node, to ``<run dir>/logs/<node>.log`` and its exit status to
``<run dir>/nodes/<node>/exit_code``.

Signals: sbatch's ``--signal=B:USR1@S`` reaches the batch shell S seconds before the time limit
(or on preemption); it passes SIGUSR1 to the step, each wrapper passes it to torchrun's workers
(torchrun itself would die of it), the training script's Checkpointer saves, and once the step
has ended the batch script requeues the job (``--requeue``), which resumes from the latest
checkpoint. Every value is quoted once, here, with shlex; user arguments never meet a shell
expansion.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from launcher.config import ClusterConfig, JobConfig, NodeConfig
from launcher.errors import UserError
from launcher.plan import (
    PLAIN_PYTHON,
    backend_for,
    corral_env,
    entry_argv,
    merged_env,
    nproc_for,
    resolve_path,
    torchrun_options,
    watchdog_command,
    watchdog_settings,
    watchdog_start,
)

RUNTIME = {
    "@NNODES@": '"$SLURM_NNODES"',
    "@RDZV_ENDPOINT@": '"$CORRAL_RDZV_ENDPOINT"',
    "@RDZV_ID@": '"$CORRAL_RDZV_ID"',
    "@LOG_DIR@": '"$state_dir/torchelastic"',
}
"""Placeholders in the torchrun prefix corral builds (never in user arguments): values that
only exist inside the allocation, rendered as quoted shell expansions."""

SAFE_SBATCH_PATH = re.compile(r"^[A-Za-z0-9_./+,=@-]+$")
"""``#SBATCH`` lines are not shell-parsed and ``%`` is a filename pattern there: paths on them stay plain."""


@dataclass(frozen=True)
class SlurmPlan:
    """What a Slurm launch submits; everything the two scripts say, as data."""

    name: str
    run_id: str
    run_dir: str
    ckpt_dir: str
    workdir: str
    venv: str | None
    backend: str
    plain: bool
    nnodes: int
    nproc_per_node: int
    partition: str
    sbatch_options: list[str]
    """Every ``#SBATCH`` option, in order (corral's, then the cluster's ``sbatch_args``)."""
    env: dict[str, str]
    """The static environment (cluster < job < CORRAL_*); per-node CORRAL_* come from Slurm."""
    command_prefix: list[str]
    """torchrun (or python3) and its options; ``@...@`` placeholders see ``RUNTIME``."""
    entry: list[str]
    """``SCRIPT ARGS...`` or ``-m MODULE ARGS...``: passed literally."""
    script_path: str
    wrapper_path: str
    secrets_path: str
    secret_names: list[str] = field(default_factory=list)
    watchdog: dict[str, Any] | None = None
    """The hang watchdog's settings, the node's own fields filled in on the node (``launcher.watchdog.node``)."""
    watchdog_command: list[str] = field(default_factory=list)
    """Started by the node wrapper beside torchrun; its files live in the shared ``slurm/`` directory."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlurmPlan:
        return cls(**data)


def slurm_nnodes(job: JobConfig) -> int:
    """The allocation size: on Slurm the job's ``nnodes`` must be a number."""
    if isinstance(job.nnodes, int):
        return job.nnodes
    raise UserError(
        f"nnodes: on a Slurm cluster nnodes is the allocation size: a number, or 'all' for every node of the partition "
        f"(got {job.nnodes!r})",
        hint="set it in the job file or with --set nnodes=2",
    )


def _sbatch_path(what: str, path: str) -> str:
    if not SAFE_SBATCH_PATH.match(path):
        raise UserError(
            f"{what}: {path!r} cannot go on an #SBATCH line (spaces, quotes or '%')",
            hint="choose storage.runs without such characters",
        )
    return path


def job_comment(run_id: str) -> str:
    """The job's ``--comment``: finds the Slurm job of a run whose submitter died before recording its id."""
    return f"corral-run={run_id}"


def sbatch_options(cluster: ClusterConfig, name: str, run_id: str, nnodes: int, run_dir: str) -> list[str]:
    s = cluster.slurm
    assert s is not None
    slurm_dir = posixpath.join(run_dir, "slurm")
    opts = [
        f"--job-name=corral-{name}",
        f"--comment={job_comment(run_id)}",
        f"--partition={s.partition}",
        f"--nodes={nnodes}",
        "--ntasks-per-node=1",
        f"--output={_sbatch_path('storage.runs', slurm_dir)}/batch-%j.out",
        "--open-mode=append",
        f"--signal=B:USR1@{s.signal_before_s}",
    ]
    opts.append("--requeue" if s.requeue else "--no-requeue")
    for flag, value in (("--account", s.account), ("--qos", s.qos), ("--time", s.time), ("--constraint", s.constraint)):
        if value is not None:
            opts.append(f"{flag}={value}")
    if s.gpus_per_node:
        opts.append(f"--gpus-per-node={s.gpus_per_node}")
    if s.exclusive:
        opts.append("--exclusive")
    return opts + list(s.sbatch_args)


def build_slurm_plan(
    job: JobConfig,
    cluster: ClusterConfig,
    *,
    name: str,
    run_id: str,
    base_dir: str,
    local_venv: str | None,
    plain: bool = False,
    secret_names: tuple[str, ...] = (),
) -> SlurmPlan:
    """Decide the whole submission; pure."""
    s = cluster.slurm
    if s is None:
        raise UserError("this cluster file has no slurm section")
    if job.container is not None:
        raise UserError(
            "container: jobs in containers are not supported on a Slurm cluster yet",
            hint="remove the job's container section (or run it on an ssh cluster); see docs/SLURM.md, 'Containers'",
        )
    nnodes = slurm_nnodes(job)
    run_dir = resolve_path(base_dir, posixpath.join(cluster.storage.runs, name))
    ckpt_dir = resolve_path(base_dir, posixpath.join(cluster.storage.checkpoints, name))
    workdir = resolve_path(base_dir, cluster.workdir)
    gpus = s.gpus_per_node or 0
    backend = backend_for(job, [gpus])
    nproc = nproc_for(job, gpus)
    corral = corral_env(job, name=name, run_id=run_id, run_dir=run_dir, ckpt_dir=ckpt_dir, backend=backend)
    # No node of the cluster file exists on Slurm: an empty one leaves cluster < job < CORRAL_* as over ssh.
    env = merged_env(cluster, NodeConfig(host="slurm"), job, corral, plain)
    entry = entry_argv(job)
    if plain:
        prefix = [PLAIN_PYTHON]
    else:  # the values only the allocation knows are placeholders (RUNTIME)
        prefix = torchrun_options(
            job, nnodes="@NNODES@", nproc=nproc, endpoint="@RDZV_ENDPOINT@", run_id="@RDZV_ID@", log_dir="@LOG_DIR@"
        )
    slurm_dir = posixpath.join(run_dir, "slurm")
    venv = cluster.venv or local_venv
    watching = job.watchdog.enabled and not plain
    return SlurmPlan(
        name=name,
        run_id=run_id,
        run_dir=run_dir,
        ckpt_dir=ckpt_dir,
        workdir=workdir,
        venv=venv,
        backend=backend,
        plain=plain,
        nnodes=nnodes,
        nproc_per_node=nproc,
        partition=s.partition,
        sbatch_options=sbatch_options(cluster, name, run_id, nnodes, run_dir),
        env=env,
        command_prefix=prefix,
        entry=entry,
        script_path=posixpath.join(slurm_dir, "job.sbatch"),
        wrapper_path=posixpath.join(slurm_dir, "node.sh"),
        secrets_path=posixpath.join(slurm_dir, "secrets.env"),
        secret_names=sorted(secret_names),
        watchdog=watchdog_settings(job, run_id=run_id, name=name, run_dir=run_dir, venv=venv) if watching else None,
        watchdog_command=watchdog_command(slurm_dir, venv, run_id, None) if watching else [],
    )


BATCH_TEMPLATE = """\
#!/usr/bin/env bash
# Generated by corral for job {name} (run id {run_id}); corral submits it with sbatch --parsable.
{sbatch_lines}
# The batch shell runs on the allocation's first node: torchrun's rendezvous goes there, on a
# port free now. srun starts the node wrapper once per node; SIGUSR1 (the time limit is near, or
# preemption) is passed to the step and the job is requeued once the step has ended.
wrapper={wrapper}
secrets={secrets}
requeue_mark={requeue_mark}
first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
port=$({python} -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])') || exit 97
export CORRAL_RDZV_ENDPOINT="$first:$port"
export CORRAL_RDZV_ID="corral-$SLURM_JOB_ID-${{SLURM_RESTART_COUNT:-0}}"
echo "corral: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, rendezvous $CORRAL_RDZV_ENDPOINT"
requeue=0
step=
on_usr1() {{
  echo "corral: SIGUSR1 received: passing it to every node's workers, requeueing when they end"
  requeue=1
  # read by `corral ps`: this attempt's nodes ending is not the job's end
  printf '%s\\n' "${{SLURM_RESTART_COUNT:-0}}" >"$requeue_mark"
  [ -n "$step" ] && kill -USR1 "$step" 2>/dev/null
}}
trap on_usr1 USR1
srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$wrapper" &
step=$!
while :; do
  wait "$step"; code=$?
  kill -0 "$step" 2>/dev/null || break  # a trapped signal interrupted the wait: keep waiting
done
if [ "$requeue" = 1 ]; then
  echo "corral: requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
rm -f -- "$secrets"
exit "$code"
"""

WRAPPER_TEMPLATE = """\
#!/usr/bin/env bash
# Generated by corral for job {name}; srun runs it once on every node of the allocation.
run_dir={run_dir}
node=${{SLURMD_NODENAME:-$(hostname)}}
state_dir="$run_dir/nodes/$node"
log="$run_dir/logs/$node.log"
secrets={secrets}
mkdir -p -- "$state_dir" "${{log%/*}}"
rm -f -- "$state_dir/exit_code"
printf '%s\\n' "$$" >"$state_dir/pid"

finish() {{
  printf '%s %s\\n' "$1" "${{SLURM_RESTART_COUNT:-0}}" >"$state_dir/exit_code.tmp" && mv -f -- "$state_dir/exit_code.tmp" "$state_dir/exit_code"
  printf '[%s] corral: exited with status %s\\n' "$node" "$1" >>"$log"
  exit "$1"
}}
fail() {{ printf '[%s] corral: %s\\n' "$node" "$2" >>"$log"; finish "$1"; }}

# The submitting shell's venv must not leak into the job (sbatch exports its environment).
if [ -n "${{VIRTUAL_ENV:-}}" ]; then
  PATH=$(printf '%s' "$PATH" | tr ':' '\\n' | grep -vxF -- "$VIRTUAL_ENV/bin" | paste -sd: -)
fi
unset VIRTUAL_ENV PYTHONHOME
if [ -f "$secrets" ]; then set -a; . "$secrets"; set +a; fi
cd -- {workdir} || fail 97 "cannot enter the working directory"
{venv_line}{exports}
export CORRAL_NODE="$node" CORRAL_NODE_RANK="$SLURM_NODEID" CORRAL_NNODES="$SLURM_NNODES" CORRAL_SLURM_JOB_ID="$SLURM_JOB_ID"
{watchdog_line}
exec {{out}}> >(while IFS= read -r line || [ -n "$line" ]; do printf '[%s] %s\\n' "$node" "$line"; done >>"$log")
prefixer=$!
child=
# SIGUSR1 is for the workers (torchrun's children), so the Checkpointer can save; torchrun itself
# would die of it, so it starts with SIGUSR1 ignored (a handler the script installs still works).
# slurmstepd signals every process of the step; where only this wrapper gets it, it passes it on.
trap '[ -n "$child" ] && for p in $(ps -o pid= --ppid "$child"); do kill -USR1 "$p" 2>/dev/null; done' USR1
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
(trap '' USR1; exec {command}) >&"$out" 2>&1 </dev/null &
child=$!
exec {{out}}>&-
while :; do
  wait "$child"; code=$?
  kill -0 "$child" 2>/dev/null || break
done
wait "$prefixer" 2>/dev/null
finish "$code"
"""


def render_command(plan: SlurmPlan) -> str:
    """The command line of the wrapper: corral's prefix (with its Slurm expansions), the entry quoted."""
    words = [RUNTIME.get(w, shlex.quote(w)) for w in plan.command_prefix]
    return " ".join(words + [shlex.quote(w) for w in plan.entry])


def requeue_mark_path(plan: SlurmPlan) -> str:
    """Written by the batch script on SIGUSR1: the restart count of the attempt that will be requeued."""
    return posixpath.join(posixpath.dirname(plan.script_path), "requeue")


def render_batch_script(plan: SlurmPlan) -> str:
    q = shlex.quote
    python = q(posixpath.join(plan.venv, "bin", "python")) if plan.venv else "python3"
    return BATCH_TEMPLATE.format(
        name=plan.name,
        run_id=plan.run_id,
        sbatch_lines="\n".join(f"#SBATCH {o}" for o in plan.sbatch_options),
        wrapper=q(plan.wrapper_path),
        secrets=q(plan.secrets_path),
        python=python,
        requeue_mark=q(requeue_mark_path(plan)),
    )


def render_node_wrapper(plan: SlurmPlan) -> str:
    q = shlex.quote
    venv_line = ""
    if plan.venv:
        activate = posixpath.join(plan.venv, "bin", "activate")
        venv_line = f'. {q(activate)} || fail 98 "cannot activate the venv {plan.venv}"\n'
    exports = "\n".join(f"export {k}={q(v)}" for k, v in plan.env.items())
    return WRAPPER_TEMPLATE.format(
        name=plan.name,
        run_dir=q(plan.run_dir),
        secrets=q(plan.secrets_path),
        workdir=q(plan.workdir),
        venv_line=venv_line,
        exports=exports,
        command=render_command(plan),
        watchdog_line=_watchdog_line(plan),
    )


def _watchdog_line(plan: SlurmPlan) -> str:
    """The hang watchdog beside torchrun (docs/WATCHDOG.md): it ends when this wrapper ends."""
    if not (plan.watchdog_command and plan.watchdog):
        return ""
    return "# The hang watchdog watches this node's ranks beside torchrun; node 0's is the leader.\n" + watchdog_start(
        plan.watchdog_command, '>>"$state_dir/watchdog.log"', plan.watchdog["start_after"]
    )


def describe_slurm(plan: SlurmPlan) -> str:
    """``--dry-run`` output: a summary, then both scripts exactly as they would be written."""
    head = [
        f"job {plan.name} (run id {plan.run_id}): Slurm batch job on partition {plan.partition}, {plan.nnodes} node(s) x "
        f"{plan.nproc_per_node} process(es), backend {plan.backend}",
        f"run dir: {plan.run_dir}",
        f"checkpoints: {plan.ckpt_dir}",
    ]
    if plan.secret_names:
        head.append(f"secrets (values not shown): {', '.join(plan.secret_names)}")
    return "\n".join(
        [
            *head,
            f"--- {plan.script_path}",
            render_batch_script(plan).rstrip("\n"),
            f"--- {plan.wrapper_path}",
            render_node_wrapper(plan).rstrip("\n"),
        ]
    )


__all__ = [
    "SlurmPlan",
    "build_slurm_plan",
    "describe_slurm",
    "render_batch_script",
    "render_command",
    "render_node_wrapper",
    "slurm_nnodes",
]

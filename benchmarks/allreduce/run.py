"""``corral bench allreduce``: validate, launch the torchrun worker through the launch API, report.

The worker (``benchmarks.allreduce.worker``) runs exactly like a training job — tmux on every
node via ``launcher.api.launch`` — so the numbers describe the path training will take.
Everything that can be wrong with the arguments is found here, before anything launches.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass

from benchmarks.allreduce import maths as cm
from launcher.errors import RunFailed, UserError

log = logging.getLogger(__name__)

WORKER_MODULE = "benchmarks.allreduce.worker"
BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class AllreduceRequest:
    """Validated arguments of one run."""

    sweep: cm.Sweep
    iters: int
    warmup: int
    op: str
    backend: str
    nproc_per_node: int | None

    @property
    def dtype(self) -> cm.DType:
        return self.sweep.dtype

    def worker_args(self) -> list[str]:
        return [
            "-b",
            str(self.sweep.min_bytes),
            "-e",
            str(self.sweep.max_bytes),
            "-f",
            str(self.sweep.factor),
            "-n",
            str(self.iters),
            "-w",
            str(self.warmup),
            "-d",
            self.dtype.name,
            "-o",
            self.op,
            "--backend",
            self.backend,
        ]


def validate(
    cluster,
    *,
    min_bytes: str,
    max_bytes: str,
    factor: int,
    iters: int,
    warmup: int,
    dtype: str,
    op: str,
    backend: str,
    nproc_per_node: int | None,
) -> AllreduceRequest:
    """Every argument checked against the others and the cluster file; UserError (exit 2) on the first problem."""
    if backend not in BACKENDS:
        raise UserError(f"--backend: choose auto, nccl or gloo (got {backend!r})")
    d = cm.resolve_dtype(dtype)
    o = cm.resolve_op(op, backend)
    cm.check_op_for_dtype(o, d)
    sweep = cm.make_sweep(min_bytes, max_bytes, factor, d)
    if iters < 1:
        raise UserError(f"-n/--iters must be at least 1 (got {iters})")
    if warmup < 0:
        raise UserError(f"-w/--warmup-iters must not be negative (got {warmup})")
    if nproc_per_node is not None and nproc_per_node < 1:
        raise UserError(f"--nproc-per-node must be at least 1 (got {nproc_per_node})")
    gpu_counts = [n.gpus for n in cluster.nodes]
    if backend == "nccl":
        for i, node in enumerate(cluster.nodes):
            if node.gpus == 0:
                raise UserError(
                    f"--backend nccl: nodes.{i} ({node.label}) has no GPUs (gpus: 0); use --backend gloo or auto"
                )
            if node.gpus is not None and nproc_per_node is not None and nproc_per_node > node.gpus:
                raise UserError(
                    f"--nproc-per-node {nproc_per_node} is more than the {node.gpus} GPU(s) of nodes.{i} ({node.label}) "
                    "with --backend nccl; lower --nproc-per-node or leave it unset (one process per GPU)"
                )
    if o == "avg" and backend == "auto" and gpu_counts and all(g == 0 for g in gpu_counts):
        raise UserError("--op avg needs NCCL, and every node has gpus: 0 (gloo would run); use --op sum")
    return AllreduceRequest(sweep, iters, warmup, o, backend, nproc_per_node)


def job_name() -> str:
    return f"bench-allreduce-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def build_job(req: AllreduceRequest, name: str, container=None):
    """The JobConfig that runs the worker on every node (module form: works from the checkout or an install);
    ``container`` (a ``ContainerConfig``) runs it inside that container on every node."""
    from launcher.config import JobConfig

    return JobConfig(
        name=name,
        module=WORKER_MODULE,
        args=req.worker_args(),
        nproc_per_node=req.nproc_per_node if req.nproc_per_node is not None else "auto",
        backend=req.backend,
        container=container,
    )


def run(
    req: AllreduceRequest,
    cluster,
    *,
    timeout: float,
    name: str | None = None,
    on_start=None,
    on_poll=None,
    container=None,
) -> dict:
    """Launch, wait for every node, and return rank 0's result dict; RunFailed names the failing node."""
    from benchmarks.allreduce.worker import RESULT_FILE
    from launcher import api

    name = name or job_name()
    done = api.run_to_completion(
        build_job(req, name, container),
        cluster,
        name=name,
        timeout=timeout,
        collect=[RESULT_FILE],
        on_start=on_start,
        on_poll=on_poll,
    )
    if done.timed_out:
        raise RunFailed(
            f"bench allreduce still running after {timeout:g}s; it was stopped on every node",
            hint=f"raise --timeout, or look at the logs: corral logs {name}",
        )
    status = done.status
    if not status.ok:
        bad = [n for n in status.nodes if not (n.state == "exited" and n.exit_code == 0)]
        first = bad[0] if bad else None
        detail = f"{first.node}: {first.state} (exit {first.exit_code})" if first else status.state
        tail = "\n".join("    " + ln for ln in done.handle.log_tail(first.node)) if first else ""
        raise RunFailed(f"bench allreduce failed on {detail}\n{tail}", hint=f"full logs: corral logs {name}")
    text = done.first(RESULT_FILE)
    if text is None:
        raise RunFailed(
            f"the benchmark finished but no node has {done.handle.run_dir / RESULT_FILE}",
            hint=f"look at the logs: corral logs {name}",
        )
    return json.loads(text)


def sizes_done(handle) -> int:
    """Sizes finished so far: rank 0 (on the first node) logs ``# done SIZE B`` after each."""
    first = (
        handle.plan.nodes[0].node if handle.plan.nodes else None
    )  # a Slurm run has no node plans: every log, rank 0's among them
    return sum("# done " in line for lines in handle.log_tails(400, node=first).values() for line in lines)


def min_busbw_failure(result: dict, min_busbw: float | None) -> str | None:
    """The message for --min-busbw when the peak is below it, else None."""
    if min_busbw is None:
        return None
    peak = result["peak_busbw_gbps"]
    if peak >= min_busbw:
        return None
    short = min_busbw - peak
    return (
        f"peak busbw {peak:.3f} GB/s is below --min-busbw {min_busbw:g} GB/s "
        f"by {short:.3f} GB/s ({100 * short / min_busbw:.1f}%)"
    )

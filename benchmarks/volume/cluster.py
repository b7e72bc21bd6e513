"""``corral bench volume -c CLUSTER``: the worker on every node at once, through the launch API.

The worker is started exactly as a training script is (tmux on each node, surviving a dropped
connection) with ``plain=True`` (``python benchmarks/volume_worker.py ...`` once per node). Each
node writes ``<run_dir>/volume/<node>.json``; this module waits for every node, reads those
files and adds the aggregate (all nodes at once: a shared drive's total).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path
from typing import Callable

from benchmarks.volume import report
from benchmarks.volume.plan import VolumePlan
from benchmarks.volume.worker import RESULT_SUBDIR
from launcher.errors import RunFailed, UserError

log = logging.getLogger(__name__)

WORKER_SCRIPT = "benchmarks/volume_worker.py"


def worker_args(plan: VolumePlan) -> list[str]:
    """The worker's argv (after the script) for ``plan``: a list, quoted once by the launch path."""
    first = plan.modes[0]
    seq = next((m for m in plan.modes if not m.is_random), None)
    rnd = next((m for m in plan.modes if m.is_random), None)
    args = [
        "--size", str(plan.size),
        "--bs", str(seq.bs if seq else 1 << 20),
        "--jobs", str(rnd.jobs if rnd else 4),
        "--iodepth", str(first.iodepth),
        "--mode", ",".join(m.mode for m in plan.modes),
        "--direct" if first.direct else "--buffered",
    ]  # fmt: skip
    if first.duration_s:
        args += ["--duration", f"{first.duration_s:g}"]
    if plan.limit_mibps:
        args += ["--limit-mibps", f"{plan.limit_mibps:g}"]
    if plan.compare_fio:
        args.append("--compare-fio")
    return args + ["--", plan.path]  # "--": a path starting with '-' stays a path


def build_job(plan: VolumePlan, name: str):
    from launcher.config import JobConfig

    return JobConfig(name=name, script=WORKER_SCRIPT, args=worker_args(plan), nproc_per_node=1)


def job_name() -> str:
    return f"bench-volume-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _api():
    try:
        from launcher import api
    except ImportError as exc:
        raise UserError(
            "running on a cluster needs corral's launch API (launcher/api.py), which this build does not have",
            hint="run without -c on each node, or update corral",
        ) from exc
    return api


def run_on_cluster(
    plan: VolumePlan,
    cluster,
    *,
    nodes: list[str] | None = None,
    timeout_s: float | None = None,
    say: Callable[[str], None] = lambda s: None,
) -> dict:
    """Launch the worker on the nodes, wait for all of them, and merge their result documents.

    Interrupted (Ctrl-C, SIGTERM) or timed out, the job is stopped on every node: the workers
    get SIGTERM and remove their files.
    """
    from benchmarks.volume.target import signals_raise

    api = _api()
    name = job_name()
    job = build_job(plan, name)
    with signals_raise():
        handle = api.launch(job, cluster, name=name, nodes=nodes, plain=True)
        say(f"launched {name} on {', '.join(nodes) if nodes else 'every node'}; run dir {handle.run_dir}")
        try:
            status = handle.wait(timeout=timeout_s)
        except BaseException:
            say(f"stopping {name} on every node")
            handle.stop()
            raise
    codes = {n.node: n.exit_code for n in status.nodes}
    return merge_node_results(Path(handle.run_dir), list(codes) or _node_labels(cluster, nodes), plan, codes)


def _node_labels(cluster, nodes: list[str] | None) -> list[str]:
    chosen = [cluster.node(n) for n in nodes] if nodes else cluster.nodes
    return [n.label for n in chosen]


def merge_node_results(run_dir: Path, labels: list[str], plan: VolumePlan, exit_codes: dict[str, int | None]) -> dict:
    """Read ``<run_dir>/volume/<node>.json`` for each node; a node without a result is a failed run."""
    results, fio_rows, notices, failed = [], [], [], []
    for label in labels:
        f = run_dir / RESULT_SUBDIR / f"{label}.json"
        if not f.is_file():
            code = exit_codes.get(label)
            failed.append(f"{label}: no result (exit status {code}); see {run_dir}/logs/{label}.log")
            continue
        doc = json.loads(f.read_text(encoding="utf-8"))
        results += doc["results"]
        fio_rows += doc.get("fio") or []
        notices += [f"{label}: {n}" for n in doc.get("notices") or []]
    if not results:
        raise RunFailed("no node produced a result:\n  " + "\n  ".join(failed))
    merged = {
        "schema": report.SCHEMA_VERSION,
        "path": plan.path,
        "nodes": labels,
        "limit_mibps": plan.limit_mibps,
        "read_method": plan.read_method(),
        "notices": notices,
        "failed_nodes": failed,
        "units": report.UNITS,
        "results": results,
        "aggregate": report.aggregate(results, plan.limit_mibps),
        "run_dir": str(run_dir),
    }
    if plan.compare_fio:
        merged["fio"] = fio_rows
    return merged

"""``corral bench volume -c CLUSTER``: the worker on every node at once, through the launch API.

The worker is started exactly as a training script is (tmux on each node, surviving a dropped
connection) with ``plain=True`` (``python3 -m benchmarks.volume.worker ...`` once per node). Each
node writes ``<run_dir>/volume/<node>.json``; this module waits for every node, collects those
files through the node agents (no shared drive needed) and adds the aggregate (all nodes at once: a shared drive's total).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable

from benchmarks.volume import report
from benchmarks.volume.plan import VolumePlan
from benchmarks.volume.worker import RESULT_SUBDIR
from launcher.errors import RunFailed

log = logging.getLogger(__name__)

WORKER_MODULE = "benchmarks.volume.worker"
RESULT_FILE = RESULT_SUBDIR + "/{node}.json"


def worker_args(plan: VolumePlan) -> list[str]:
    """The worker's argv (after the script) for ``plan``: a list, quoted once by the launch path."""
    first = plan.modes[0]
    seq = next((m for m in plan.modes if not m.is_random), None)
    rnd = next((m for m in plan.modes if m.is_random), None)
    args = [
        "--size",
        str(plan.size),
        "--bs",
        str(seq.bs if seq else 1 << 20),
        "--jobs",
        str(rnd.jobs if rnd else 4),
        "--iodepth",
        str(first.iodepth),
        "--mode",
        ",".join(m.mode for m in plan.modes),
        "--direct" if first.direct else "--buffered",
    ]
    if first.duration_s:
        args += ["--duration", f"{first.duration_s:g}"]
    if plan.limit_mibps:
        args += ["--limit-mibps", f"{plan.limit_mibps:g}"]
    if plan.compare_fio:
        args.append("--compare-fio")
    return args + ["--", plan.path]  # "--": a path starting with '-' stays a path


def build_job(plan: VolumePlan, name: str):
    from launcher.config import JobConfig

    return JobConfig(name=name, module=WORKER_MODULE, args=worker_args(plan), nproc_per_node=1)


def job_name() -> str:
    return f"bench-volume-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run_on_cluster(
    plan: VolumePlan,
    cluster,
    *,
    nodes: list[str] | None = None,
    timeout_s: float | None = None,
    say: Callable[[str], None] = lambda s: None,
    on_poll: Callable[[object, dict[str, str]], None] | None = None,
) -> dict:
    """Launch the worker on the nodes, wait for all of them, and merge their result documents.
    ``on_poll(status, last log line per node)`` is called about once a second while they run.

    Interrupted (Ctrl-C, SIGTERM) or timed out, the job is stopped on every node: the workers
    get SIGTERM and remove their files.
    """
    from benchmarks.volume.target import signals_raise
    from launcher import api

    name = job_name()
    where = ", ".join(nodes) if nodes else "every node"
    started = []

    def on_start(handle) -> None:
        started.append(handle)
        say(f"launched {name} on {where}; run dir {handle.run_dir}")

    def poll(status) -> None:
        if on_poll is not None and started:
            on_poll(status, {n: tail[-1] for n, tail in started[0].log_tails(1).items() if tail})

    with signals_raise():
        done = api.run_to_completion(
            build_job(plan, name),
            cluster,
            name=name,
            nodes=nodes,
            plain=True,
            timeout=timeout_s,
            collect=[RESULT_FILE],
            on_start=on_start,
            on_poll=poll,
        )
    codes = {n.node: n.exit_code for n in done.status.nodes}
    docs = {label: got.get(RESULT_FILE) for label, got in done.files.items()}
    return merge_node_results(str(done.handle.run_dir), list(codes), plan, codes, docs)


def merge_node_results(
    run_dir: str, labels: list[str], plan: VolumePlan, exit_codes: dict[str, int | None], docs: dict[str, str | None]
) -> dict:
    """Merge each node's ``volume/<node>.json`` (as collected from it); a node without a result is a failed run."""
    results, fio_rows, notices, failed = [], [], [], []
    for label in labels:
        text = docs.get(label)
        if text is None:
            code = exit_codes.get(label)
            failed.append(f"{label}: no result (exit status {code}); see {run_dir}/logs/{label}.log")
            continue
        doc = json.loads(text)
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
        "run_dir": run_dir,
    }
    if plan.compare_fio:
        merged["fio"] = fio_rows
    return merged

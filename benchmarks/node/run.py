"""Where probes come from: this machine (in-process), every node of a cluster (through the launch path), or a file.

``plan_cluster`` is pure (what each node will run and where its probe lands; ``--dry-run`` prints it);
``probe_cluster`` runs it with ``launcher.api.launch(..., plain=True)`` and ``wait``, exactly as a
training job is started: tmux on every node, so a dropped connection does not lose the probe.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import UserError

log = logging.getLogger(__name__)

PROBE_SCRIPT = "benchmarks/node/probe.py"
PROBES_FORMAT = "corral-node-probes/1"


@dataclass
class NodePlan:
    node: str
    host: str
    argv: list[str]
    probe_file: str
    expected_gpus: int | None


def is_local_only(cluster) -> bool:
    """One localhost node: probe in this process, no launch needed."""
    return len(cluster.nodes) == 1 and cluster.nodes[0].is_local


def job_name(now: float | None = None) -> str:
    return time.strftime("bench-node-%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int((now or time.time()) * 1000) % 1000:03d}"


def probe_args(quick: bool) -> list[str]:
    return ["--quick"] if quick else []


def plan_cluster(cluster, *, name: str, quick: bool) -> list[NodePlan]:
    """Per node: the command the launch path runs and the file its probe will be written to."""
    run_dir = Path(cluster.storage.runs) / name
    return [
        NodePlan(node=n.label, host=n.host, argv=["python", PROBE_SCRIPT, *probe_args(quick)],
                 probe_file=str(run_dir / "node" / f"{n.label}.json"), expected_gpus=n.gpus)
        for n in cluster.nodes
    ]


def probe_local(*, quick: bool, host: str | None = None) -> dict[str, Any]:
    from benchmarks.node.probe import run_probe

    return run_probe(quick=quick, host=host)


def probe_cluster(cluster, *, name: str, quick: bool, timeout: float) -> list[dict[str, Any]]:
    """Run the probe on every node through the launch path; a node without a result becomes a 'missing' entry."""
    try:
        from launcher import api
    except ImportError:
        raise UserError(
            "probing a cluster needs the launch path (launcher/api.py), which this checkout does not have yet",
            hint="run `corral bench node` without -c on each node, or update corral",
        ) from None
    from launcher.config.job import JobConfig

    from launcher.errors import RunFailed

    job = JobConfig(name=name, script=PROBE_SCRIPT, args=probe_args(quick), nproc_per_node=1, backend="gloo")
    # preflight=False: a node with the wrong GPU count is what this benchmark reports, not a reason to refuse.
    handle = api.launch(job, cluster, name=name, plain=True, preflight=False)
    try:
        status = api.wait(name, cluster, timeout=timeout)
    except RunFailed as exc:  # timed out: stop what still runs, judge what arrived
        log.warning("bench node: %s; stopping the probes that still run", exc)
        api.stop(name, cluster)
        status = api.status(name, cluster)
    run_dir = Path(getattr(handle, "run_dir", Path(cluster.storage.runs) / name))
    probes = []
    # on Slurm the cluster file names no nodes: the allocation's nodes are those the status reports
    labels = [n.label for n in cluster.nodes] or [e["node"] for e in _status_entries(status)]
    for label in labels:
        path = run_dir / "node" / f"{label}.json"
        try:
            probes.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            probes.append(missing_probe(label, _node_failure(status, label, run_dir, path, exc)))
    return probes


def _node_failure(status, node: str, run_dir: Path, path: Path, exc: Exception) -> str:
    detail = ""
    for entry in _status_entries(status):
        if entry.get("node") == node:
            detail = f" (state {entry.get('state')}, exit code {entry.get('exit_code')})"
    return f"no probe result at {path}{detail}: {exc.__class__.__name__}; see {run_dir / 'logs' / (node + '.log')}"


def _status_entries(status) -> list[dict[str, Any]]:
    """JobStatus as a list of per-node dicts, whatever shape the launch path gives it."""
    nodes = getattr(status, "nodes", status)
    if isinstance(nodes, dict):
        nodes = [{"node": k, **(v if isinstance(v, dict) else vars(v))} for k, v in nodes.items()]
    out = []
    for n in nodes or []:
        d = n if isinstance(n, dict) else {k: getattr(n, k, None) for k in ("node", "state", "exit_code")}
        out.append(d)
    return out


def missing_probe(host: str, reason: str) -> dict[str, Any]:
    return {"format": "missing", "host": host, "reason": reason}


def read_probes(path: Path) -> list[dict[str, Any]]:
    """Probes recorded with --record: one probe, or ``{"format": PROBES_FORMAT, "probes": [...]}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--from {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--from {path}: cannot read a probe: {exc}") from None
    if isinstance(data, dict) and data.get("format") == PROBES_FORMAT:
        return data["probes"]
    if isinstance(data, dict) and data.get("format") == "corral-node-probe/1":
        return [data]
    raise UserError(f"--from {path}: not a recorded node probe (expected format corral-node-probe/1 or {PROBES_FORMAT})",
                    hint="record one with `corral bench node --record FILE`")


def record_probes(probes: list[dict[str, Any]], path: Path) -> None:
    data = probes[0] if len(probes) == 1 else {"format": PROBES_FORMAT, "probes": probes}
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def judge_probes(probes: list[dict[str, Any]], expected_gpus: dict[str, int | None] | None = None) -> list[dict[str, Any]]:
    """Parse and judge every probe, then compare peers."""
    from benchmarks.node.judge import FAIL, Check, judge_node, judge_peers
    from benchmarks.node.probe import load_probe

    expected_gpus = expected_gpus or {}
    nodes = []
    for raw in probes:
        if raw.get("format") == "missing":
            nodes.append({"host": raw["host"], "gpus": [], "speed": {}, "system": None, "host_info": None, "status": FAIL,
                          "checks": [Check("probe", FAIL, None, None, raw["reason"]).to_dict()]})
            continue
        try:
            node = load_probe(raw)
        except (ValueError, KeyError, TypeError) as exc:
            nodes.append({"host": raw.get("host", "?"), "gpus": [], "speed": {}, "system": None, "host_info": None, "status": FAIL,
                          "checks": [Check("probe", FAIL, None, None, f"unreadable probe: {exc}").to_dict()]})
            continue
        nodes.append(judge_node(node, expected_gpus=expected_gpus.get(raw["host"])))
    judge_peers(nodes)
    return nodes

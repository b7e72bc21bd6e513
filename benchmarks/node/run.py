"""Where probes come from: this machine (in-process), every node of a cluster (through the launch path), or a file.

``dry_run_plan`` is the launch plan ``--dry-run`` prints; ``probe_cluster`` runs it with
``launcher.api.run_to_completion(..., plain=True)``, exactly as a training job is started: tmux on
every node, so a dropped connection does not lose the probe; the probes come back through the node agents.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from launcher.errors import UserError

log = logging.getLogger(__name__)

PROBE_MODULE = "benchmarks.node.probe"
PROBE_FILE = "node/{node}.json"
"""Where each node's probe lands, relative to the run dir (``probe.PROBE_DIR``)."""
PROBES_FORMAT = "corral-node-probes/1"


def is_local_only(cluster) -> bool:
    """One localhost node: probe in this process, no launch needed."""
    return len(cluster.nodes) == 1 and cluster.nodes[0].is_local


def job_name(now: float | None = None) -> str:
    return (
        time.strftime("bench-node-%Y%m%d-%H%M%S", time.localtime(now))
        + f"-{int((now or time.time()) * 1000) % 1000:03d}"
    )


def probe_args(quick: bool) -> list[str]:
    return ["--quick"] if quick else []


def dry_run_plan(cluster, *, name: str, quick: bool):
    """What the launch path would do (``--dry-run``: text, run dir, nodes), from the same preparation as a launch."""
    from launcher import api

    return api.dry_run(build_job(name, quick), cluster, name=name, plain=True)


def probe_local(*, quick: bool, host: str | None = None) -> dict[str, Any]:
    from benchmarks.node.probe import run_probe

    return run_probe(quick=quick, host=host)


def probe_cluster(cluster, *, name: str, quick: bool, timeout: float, on_poll=None) -> list[dict[str, Any]]:
    """Run the probe on every node through the launch path; a node without a result becomes a 'missing' entry."""
    from launcher import api

    # preflight=False: a node with the wrong GPU count is what this benchmark reports, not a reason to refuse.
    done = api.run_to_completion(
        build_job(name, quick),
        cluster,
        name=name,
        plain=True,
        preflight=False,
        timeout=timeout,
        collect=[PROBE_FILE],
        on_poll=on_poll,
    )
    states = {n.node: n for n in done.status.nodes}
    probes = []
    # on Slurm the cluster file names no nodes: the allocation's nodes are those the run reports
    labels = [n.label for n in cluster.nodes] or sorted(done.files)
    for label in labels:
        text = done.files.get(label, {}).get(PROBE_FILE)
        try:
            if text is None:
                raise FileNotFoundError(PROBE_FILE.format(node=label))
            probes.append(json.loads(text))
        except (OSError, ValueError) as exc:
            probes.append(missing_probe(label, _node_failure(states.get(label), done.handle.run_dir, label, exc)))
    return probes


def build_job(name: str, quick: bool):
    from launcher.config.job import JobConfig

    return JobConfig(name=name, module=PROBE_MODULE, args=probe_args(quick), nproc_per_node=1, backend="gloo")


def _node_failure(state, run_dir: Path, node: str, exc: Exception) -> str:
    detail = f" (state {state.state}, exit code {state.exit_code})" if state is not None else ""
    path = run_dir / PROBE_FILE.format(node=node)
    return f"no probe result at {path}{detail}: {exc.__class__.__name__}; see {run_dir / 'logs' / (node + '.log')}"


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
    raise UserError(
        f"--from {path}: not a recorded node probe (expected format corral-node-probe/1 or {PROBES_FORMAT})",
        hint="record one with `corral bench node --record FILE`",
    )


def record_probes(probes: list[dict[str, Any]], path: Path) -> None:
    data = probes[0] if len(probes) == 1 else {"format": PROBES_FORMAT, "probes": probes}
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def judge_probes(
    probes: list[dict[str, Any]], expected_gpus: dict[str, int | None] | None = None
) -> list[dict[str, Any]]:
    """Parse and judge every probe, then compare peers."""
    from benchmarks.node.judge import FAIL, Check, judge_node, judge_peers
    from benchmarks.node.probe import load_probe

    expected_gpus = expected_gpus or {}
    nodes = []
    for raw in probes:
        if raw.get("format") == "missing":
            nodes.append(
                {
                    "host": raw["host"],
                    "gpus": [],
                    "speed": {},
                    "system": None,
                    "host_info": None,
                    "status": FAIL,
                    "checks": [Check("probe", FAIL, None, None, raw["reason"]).to_dict()],
                }
            )
            continue
        try:
            node = load_probe(raw)
        except (ValueError, KeyError, TypeError) as exc:
            nodes.append(
                {
                    "host": raw.get("host", "?"),
                    "gpus": [],
                    "speed": {},
                    "system": None,
                    "host_info": None,
                    "status": FAIL,
                    "checks": [Check("probe", FAIL, None, None, f"unreadable probe: {exc}").to_dict()],
                }
            )
            continue
        nodes.append(judge_node(node, expected_gpus=expected_gpus.get(raw["host"])))
    judge_peers(nodes)
    return nodes

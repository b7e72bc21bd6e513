"""Leaving nodes out: ``--exclude NODE`` and ``--exclude-from REPORT.json`` for every command that runs on nodes.

One place decides which nodes a command may use: the cluster as loaded, minus the excluded
nodes. Launch, sweeps and the benchmarks all take the cluster this returns, so none of them
needs its own notion of exclusion. On Slurm (the cluster file names no nodes) the names go to
``sbatch --exclude``, where the scheduler checks them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import UserError

REPORT_SCHEMA_PREFIX = "corral.bench.cluster/"


@dataclass(frozen=True)
class LeftOut:
    """A node taken out of the cluster, and why (shown by ``--dry-run`` and on stderr)."""

    node: str
    reason: str

    def line(self) -> str:
        return f"left out: {self.node} ({self.reason})"


def read_exclude_report(path: str | Path) -> list[LeftOut]:
    """The ``exclude`` list of a ``corral bench cluster`` report.json, each with its first failed finding."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--exclude-from {p}: file not found; give the report.json of `corral bench cluster`") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--exclude-from {p}: not readable as JSON ({exc}); give a report.json") from None
    if not (isinstance(data, dict) and str(data.get("schema", "")).startswith(REPORT_SCHEMA_PREFIX)):
        raise UserError(
            f"--exclude-from {p}: not a `corral bench cluster` report (no schema {REPORT_SCHEMA_PREFIX}N); "
            "give the report.json it wrote"
        )
    exclude = data.get("exclude")
    if not isinstance(exclude, list) or not all(isinstance(n, str) for n in exclude):
        raise UserError(f"--exclude-from {p}: its 'exclude' is not a list of node names")
    why = {}
    for node in data.get("nodes") or []:
        failed = [f for f in node.get("findings") or [] if f.get("severity") == "fail"]
        if failed:
            why[node.get("name")] = f"{failed[0].get('check')}: {failed[0].get('message')}"
    return [LeftOut(n, f"{p}: {why.get(n, 'failed')}") for n in exclude]


def exclusions(exclude: Sequence[str] = (), exclude_from: str | Path | None = None) -> list[LeftOut]:
    """``--exclude`` names (reason: asked) then the report's, each node once."""
    out = [LeftOut(n, "--exclude") for n in exclude]
    if exclude_from is not None:
        out += read_exclude_report(exclude_from)
    seen: dict[str, LeftOut] = {}
    for item in out:
        seen.setdefault(item.node, item)
    return list(seen.values())


def exclude_nodes(cluster, left_out: Sequence[LeftOut]):
    """The cluster without ``left_out``'s nodes. An unknown name, or leaving every node out, is an error (exit 2)."""
    if not left_out:
        return cluster
    if cluster.slurm is not None and not cluster.nodes:
        names = ",".join(item.node for item in left_out)
        slurm = cluster.slurm.model_copy(update={"sbatch_args": [*cluster.slurm.sbatch_args, f"--exclude={names}"]})
        return cluster.model_copy(update={"slurm": slurm})
    drop = []
    for item in left_out:
        try:
            drop.append(cluster.node(item.node))
        except KeyError:
            known = ", ".join(n.label for n in cluster.nodes)
            source = "--exclude" if item.reason == "--exclude" else f"--exclude-from {item.reason.split(': ')[0]}"
            raise UserError(
                f"{source}: node {item.node!r} is not in the cluster file; its nodes are: {known}",
                hint="check the name, or the report was written for another cluster",
            ) from None
    kept = [n for n in cluster.nodes if n not in drop]
    if not kept:
        raise UserError(
            f"every node of the cluster file is excluded ({', '.join(i.node for i in left_out)}); nothing would run",
            hint="exclude fewer nodes, or replace the failed ones and run `corral bench cluster` again",
        )
    return cluster.model_copy(update={"nodes": kept})

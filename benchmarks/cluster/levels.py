"""The plan of ``corral bench cluster``: which steps a level runs, with which parameters and time budgets.

Pure: the cluster's node names, GPU counts and the command-line values in, a printable plan out
(``--dry-run`` prints ``describe``). Like DCGM's diagnostic levels, a higher level runs longer and
covers more: ``quick`` a few minutes on 8 nodes, ``standard`` all network pairs up to 16 nodes and
longer runs, ``burn-in`` sustained load for ``--duration`` with the health counters read around it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from launcher.errors import UserError

LEVELS = ("quick", "standard", "burn-in")
ALL_PAIRS_MAX_NODES = 16
"""Up to this many nodes ``standard`` measures every ordered pair (n*(n-1) pairs); beyond, the ring."""
STEP_SLACK_S = 60.0
"""Added to each step's budget for launching (tmux, importing torch on every node) and collecting."""


@dataclass(frozen=True)
class LevelSpec:
    """What one level runs; every figure here is one of the existing benchmarks' own parameters."""

    net_pairs: str
    net_duration_s: float
    ar_max_bytes_cpu: str
    ar_max_bytes_gpu: str
    ar_iters: int
    volume_size: str
    volume_modes: str
    volume_duration_s: float
    node_allreduce: bool
    """Also an all-reduce inside each GPU node (Azure's single-node NVLink check); needs GPUs."""


LEVEL_SPECS: dict[str, LevelSpec] = {
    "quick": LevelSpec("ring", 2.0, "1M", "256M", 5, "64M", "seqwrite,seqread", 2.0, False),
    "standard": LevelSpec("all", 5.0, "64M", "8G", 20, "1G", "seqwrite,seqread,randread,randwrite", 10.0, True),
    "burn-in": LevelSpec("all", 5.0, "64M", "8G", 20, "1G", "seqwrite,seqread,randread,randwrite", 10.0, True),
}


@dataclass(frozen=True)
class StepPlan:
    """One step: its name, what it runs (for people) and its time budget (seconds, launch included)."""

    name: str
    what: str
    budget_s: float
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterPlan:
    level: str
    nodes: tuple[str, ...]
    gpu_nodes: bool
    steps: tuple[StepPlan, ...]

    @property
    def budget_s(self) -> float:
        return sum(s.budget_s for s in self.steps)

    def step(self, name: str) -> StepPlan | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "nodes": list(self.nodes),
            "budget_s": self.budget_s,
            "steps": [asdict(s) for s in self.steps],
        }


def net_pairs_mode(level: str, n_nodes: int) -> str:
    spec = LEVEL_SPECS[level]
    if spec.net_pairs == "all" and n_nodes <= ALL_PAIRS_MAX_NODES:
        return "all"
    return "ring" if n_nodes > 2 else "all"


def pair_count(mode: str, n_nodes: int) -> int:
    if n_nodes < 2:
        return 0
    return n_nodes * (n_nodes - 1) if mode == "all" else (n_nodes if n_nodes > 2 else 2)


def build_plan(
    level: str,
    nodes: list[str],
    *,
    gpus: bool,
    volume_path: str | None,
    duration_s: float | None = None,
    net_duration_s: float | None = None,
    skip: tuple[str, ...] = (),
    budgets: dict[str, float] | None = None,
) -> ClusterPlan:
    """The steps of ``level`` over ``nodes``; ``skip`` drops steps by name (``--skip volume``), ``budgets``
    replaces a step's budget in seconds (``--step-budget volume=600``: a slow cloud disk, a long burn-in)."""
    if level not in LEVELS:
        raise UserError(f"--level: choose quick, standard or burn-in (got {level!r})")
    spec = LEVEL_SPECS[level]
    if level == "burn-in" and (duration_s is None or duration_s <= 0):
        raise UserError("--level burn-in needs --duration SECONDS (how long to keep every node under load)")
    if duration_s is not None and duration_s <= 0:
        raise UserError(f"--duration must be positive (got {duration_s:g})")
    if net_duration_s is not None and net_duration_s <= 0:
        raise UserError(f"--net-duration must be positive (got {net_duration_s:g})")
    unknown = sorted(set(skip) - set(STEP_NAMES))
    if unknown:
        raise UserError(f"--skip {unknown[0]}: no such step; the steps are {', '.join(STEP_NAMES)}")
    budgets = budgets or {}
    for name, seconds in budgets.items():
        if name not in STEP_NAMES:
            raise UserError(f"--step-budget {name}=...: no such step; the steps are {', '.join(STEP_NAMES)}")
        if not seconds > 0:
            raise UserError(f"--step-budget {name}={seconds:g}: a budget is a positive number of seconds")
    n = len(nodes)
    steps: list[StepPlan] = [
        StepPlan(
            "node",
            "inventory, health counters, compute and memory speed on every node at once (bench node)",
            STEP_SLACK_S + (240.0 if gpus else 60.0),
            {"quick": False},
        )
    ]
    if n >= 2 or not nodes:
        mode = net_pairs_mode(level, n)
        dur = net_duration_s or spec.net_duration_s
        pairs = pair_count(mode, n)
        # each pair: its seconds plus up to 10 s to start both ends on a loaded machine; the second pass can
        # re-test as many pairs again as the first pass had, twice (both directions)
        steps.append(
            StepPlan(
                "net",
                f"TCP throughput, {mode} pairs ({pairs}), {dur:g}s each, suspects re-tested with a good node (bench net)",
                STEP_SLACK_S + pairs * (dur + 10) * 3,
                {"pairs": mode, "duration_s": dur},
            )
        )
        ar_max = spec.ar_max_bytes_gpu if gpus else spec.ar_max_bytes_cpu
        # the all-node run, then (only when it is slow) a bisection: two runs per halving and one per suspect
        runs = 1 + 2 * math.ceil(math.log2(max(n, 2))) + 1
        steps.append(
            StepPlan(
                "allreduce",
                f"all-reduce across all nodes, 1K..{ar_max} (bench allreduce); bisected when slow",
                runs * (2 * STEP_SLACK_S + (60.0 if gpus else 0.0)),
                {"min_bytes": "1K", "max_bytes": ar_max, "factor": 4, "iters": spec.ar_iters, "warmup": 2},
            )
        )
    if gpus and spec.node_allreduce:
        steps.append(
            StepPlan(
                "node_allreduce",
                "all-reduce inside each node over its GPUs (NVLink), one node at a time",
                (STEP_SLACK_S + 60.0) * max(n, 1),
                {"min_bytes": "1M", "max_bytes": "8G", "factor": 2, "iters": 20, "warmup": 5},
            )
        )
    if volume_path:
        steps.append(
            StepPlan(
                "volume",
                f"{spec.volume_modes} on {volume_path}, {spec.volume_size} per node, every node at once (bench volume)",
                STEP_SLACK_S + 4 * spec.volume_duration_s * len(spec.volume_modes.split(",")) + 30,
                {
                    "path": volume_path,
                    "size": spec.volume_size,
                    "modes": spec.volume_modes,
                    "duration_s": spec.volume_duration_s,
                },
            )
        )
    if level == "burn-in":
        steps.append(
            StepPlan(
                "burn",
                f"sustained compute and memory load for {duration_s:g}s on every node, health counters read around it",
                STEP_SLACK_S + float(duration_s or 0) * 1.2,
                {"duration_s": duration_s},
            )
        )
    steps = [replace(s, budget_s=budgets[s.name]) if s.name in budgets else s for s in steps if s.name not in skip]
    return ClusterPlan(level, tuple(nodes), gpus, tuple(steps))


def parse_step_budgets(values: list[str]) -> dict[str, float]:
    """``--step-budget STEP=SECONDS`` (repeatable) as a dict; the step names are checked by ``build_plan``."""
    out: dict[str, float] = {}
    for value in values:
        name, _, seconds = value.partition("=")
        try:
            out[name.strip()] = float(seconds)
        except ValueError:
            raise UserError(f"--step-budget {value!r}: write STEP=SECONDS, e.g. --step-budget volume=600") from None
    return out


STEP_NAMES = ("node", "net", "allreduce", "node_allreduce", "volume", "burn")


def describe(plan: ClusterPlan, left_out: list[str] | None = None) -> str:
    """The plan as ``--dry-run`` prints it."""
    lines = [
        f"corral bench cluster --level {plan.level}: {len(plan.nodes)} node(s) "
        f"({', '.join(plan.nodes) or 'the Slurm allocation'}), budget {plan.budget_s:.0f}s in all"
    ]
    lines += list(left_out or [])
    for i, s in enumerate(plan.steps, 1):
        lines.append(f"  {i}. {s.name} (budget {s.budget_s:.0f}s): {s.what}")
    return "\n".join(lines)

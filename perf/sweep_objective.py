"""A synthetic training objective with a known optimum, and an in-process launch path that "trains" on it.

``loss(params, step)`` is a known function of the parameters and the step, so a sweep's result
can be checked against the optimum. The real trial script on the simulated cluster
(``tests/sweep_objective_trial.py``) reports exactly these values; ``SyntheticBackend``
produces them in-process, so the sweep controller's own decision code (scheduling, journal,
Optuna study, pruning) runs thousands of trials without launching a process per trial.

    final(p) = 1 + 0.1 * (log10(lr) + 2.5)**2 + 0.5 * (momentum - 0.8)**2 + 0.025 * (log10(wd) + 4)**2
                 + 0.005 * (layers - 4)**2 + OPT_PENALTY[opt]
    loss(p, t) = final(p) + 2 * (1 - t/27) * exp(-t * speed(lr) / 9)    speed(lr) = clip(sqrt(lr / 1e-3), 0.5, 2)

for t = 0..27; a run of N steps reports step s at t = 27 s / N, so its last report is final(p).
The optimum is 1.0 (lr = 10**-2.5, momentum 0.8, wd = 1e-4, layers 4, opt adam); 0.95% of the
search space (PARAMETERS, drawn uniformly as random does) is within 5% of it, so random search
needs about 73 trials for an even chance of getting there. A larger learning rate learns
faster early on but ends worse, so early steps rank trials imperfectly, as in real training.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPT_PENALTY = {"adam": 0.0, "rmsprop": 0.1, "sgd": 0.3}
OPTIMUM = 1.0
MAX_STEPS = 27

PARAMETERS: dict[str, Any] = {
    "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1.0},
    "momentum": {"min": 0.0, "max": 1.0},
    "wd": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-1},
    "layers": {"min": 1, "max": 8},
    "opt": {"values": list(OPT_PENALTY)},
}
"""The search space, as a sweep file's `parameters:`."""


def final_loss(p: dict[str, Any]) -> float:
    """The loss a run ends at; parameters left out take their optimal values."""
    lr, wd = math.log10(p["lr"]) + 2.5, math.log10(p.get("wd", 1e-4)) + 4
    return (
        1.0
        + 0.1 * lr**2
        + 0.5 * (p.get("momentum", 0.8) - 0.8) ** 2
        + 0.025 * wd**2
        + 0.005 * (p.get("layers", 4) - 4) ** 2
        + OPT_PENALTY[p.get("opt", "adam")]
    )


def loss(p: dict[str, Any], step: int, steps: int = MAX_STEPS) -> float:
    """The loss a run of ``steps`` steps reports at ``step`` (1..steps); at its last step, final_loss(p)."""
    t = step * MAX_STEPS / steps
    speed = min(max(math.sqrt(p["lr"] / 1e-3), 0.5), 2.0)
    return final_loss(p) + 2.0 * (1 - t / MAX_STEPS) * math.exp(-t * speed / 9.0)


@dataclass
class SyntheticRun:
    params: dict[str, Any]
    nodes: list[str]
    step: int = 0
    stopped: bool = False


@dataclass
class SyntheticBackend:
    """The sweep's TrialBackend, in-process: each poll advances a run by ``steps_per_poll`` steps of ``loss``."""

    runs_root: Path
    max_steps: int = MAX_STEPS
    steps_per_poll: int = 1
    metric: str = "loss"
    runs: dict[str, SyntheticRun] = field(default_factory=dict)

    def launch(self, job: Any, nodes: list[str], *, plain: bool, preflight: bool) -> None:
        self.runs[job.name] = SyntheticRun(json.loads(job.env["CORRAL_TRIAL_PARAMS"]), list(nodes))
        self.run_dir(job.name).mkdir(parents=True, exist_ok=True)

    def poll(self, name: str) -> dict[str, Any]:
        from launcher.sweep.scheduler import NodeRun

        run = self.runs.get(name)
        if run is None:
            return {}
        if run.stopped:
            return {n: NodeRun("exited", 143) for n in run.nodes}
        if run.step < self.max_steps:
            new = range(run.step + 1, min(run.step + self.steps_per_poll, self.max_steps) + 1)
            lines = "".join(
                json.dumps({"step": s, self.metric: loss(run.params, s, self.max_steps)}) + "\n" for s in new
            )
            with open(self.run_dir(name) / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(lines)
            run.step = new[-1]
        if run.step >= self.max_steps:
            return {n: NodeRun("exited", 0) for n in run.nodes}
        return {n: NodeRun("running") for n in run.nodes}

    def stop(self, name: str) -> None:
        if name in self.runs:
            self.runs[name].stopped = True

    def run_dir(self, name: str) -> Path:
        return self.runs_root / name

    def steps_spent(self) -> int:
        return sum(r.step for r in self.runs.values())

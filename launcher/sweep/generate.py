"""Turning a sweep's parameter space into an ordered list of trials with deterministic ids.

The same sweep file always yields the same trials in the same order (random draws come
from ``seed``), and a trial's id is a hash of its parameters, so a re-run of the sweep
recognises the trials its journal already holds instead of running them again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass
from typing import Any

from launcher.sweep.config import NORMALS, QUANTIZED, ParameterSpec, SweepConfig

ID_LENGTH = 10
"""Hex digits of the parameter hash: 40 bits, collision-free for any sweep people run."""

RANDOM_DRAW_FACTOR = 50
"""Draws allowed per wanted trial before random gives up on finding new parameter sets (a small discrete space)."""


@dataclass(frozen=True)
class Trial:
    """One point of the parameter space."""

    id: str
    params: dict[str, Any]


def canonical_params(params: dict[str, Any]) -> str:
    """The parameters as canonical JSON: key order and spacing never change the id."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def trial_id(params: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_params(params).encode()).hexdigest()[:ID_LENGTH]


def bayes_trial_id(number: int, params: dict[str, Any]) -> str:
    """A bayes trial's id: its parameters and its Optuna trial number (TPE may pick the same point twice)."""
    return trial_id({"optuna_trial": number, "params": params})


def generate_trials(cfg: SweepConfig) -> list[Trial]:
    """The sweep's trials, in the order they are started, at most run_cap of them (bayes: none ahead, it asks its study)."""
    if cfg.method == "bayes":
        return []
    points = _grid(cfg.parameters) if cfg.method == "grid" else _random(cfg.parameters, cfg.run_cap or 0, cfg.seed)
    trials: list[Trial] = []
    seen: set[str] = set()
    for params in points:
        t = Trial(trial_id(params), params)
        if t.id not in seen:
            seen.add(t.id)
            trials.append(t)
        if cfg.run_cap is not None and len(trials) >= cfg.run_cap:
            break
    return trials


def _grid(parameters: dict[str, ParameterSpec]):
    names = list(parameters)
    for combo in itertools.product(*(parameters[n].choices() for n in names)):
        yield dict(zip(names, combo))


def _random(parameters: dict[str, ParameterSpec], wanted: int, seed: int):
    rng = random.Random(seed)
    for _ in range(max(wanted, 1) * RANDOM_DRAW_FACTOR):
        yield {name: sample(spec, rng) for name, spec in parameters.items()}


def sample(spec: ParameterSpec, rng: random.Random) -> Any:
    """One random value of a parameter; floats are rounded to 6 significant digits so ids and args stay readable."""
    if spec.value is not None:
        return spec.value
    if spec.values is not None:
        return rng.choice(spec.values)
    d = spec.distribution
    if d in NORMALS:
        mu, sigma, q = spec.mu or 0.0, spec.sigma or 1.0, spec.q or 1.0
        x = rng.gauss(mu, sigma)
        x = math.exp(x) if d in ("log_normal", "q_log_normal") else x
        return _quantize(x, q) if d in QUANTIZED else float(f"{x:.6g}")
    lo, hi = float(spec.min), float(spec.max)  # type: ignore[arg-type]
    if d == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if d == "log_uniform":
        return _round(math.exp(rng.uniform(lo, hi)), math.exp(lo), math.exp(hi))
    if d in ("log_uniform_values", "q_log_uniform_values"):
        x = _round(math.exp(rng.uniform(math.log(lo), math.log(hi))), lo, hi)
        return _quantize(x, spec.q or 1.0) if d in QUANTIZED else x
    x = _round(rng.uniform(lo, hi), lo, hi)
    return _quantize(x, spec.q or 1.0) if d in QUANTIZED else x


def _quantize(x: float, q: float) -> float:
    """W&B's q_ forms: round(x / q) * q, spelled without float noise (0.30000000000000004 -> 0.3)."""
    return float(f"{round(x / q) * q:.12g}")


def _round(x: float, lo: float, hi: float) -> float:
    return min(max(float(f"{x:.6g}"), lo), hi)

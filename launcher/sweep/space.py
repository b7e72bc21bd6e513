"""W&B-style parameter forms as Optuna distributions, for ``method: bayes``.

``bayes_problems`` is pure (the config check calls it, and must not import optuna); it names
every form that has no Optuna distribution. ``to_distributions`` builds them (imports optuna).

| sweep form                                   | Optuna distribution                         |
|----------------------------------------------|---------------------------------------------|
| ``value: X`` / ``distribution: constant``    | none: a fixed parameter, added to each trial |
| ``values: [...]`` (categorical)              | CategoricalDistribution(values)             |
| ``int_uniform`` (integer min/max)            | IntDistribution(min, max)                   |
| ``uniform``                                  | FloatDistribution(min, max)                 |
| ``q_uniform`` (min, max multiples of q)      | FloatDistribution(min, max, step=q)         |
| ``log_uniform_values``                       | FloatDistribution(min, max, log=True)       |
| ``log_uniform`` (bounds are exponents of e)  | FloatDistribution(e**min, e**max, log=True) |
| ``q_log_uniform_values``, the normal family  | unmappable: Optuna has no quantised log and no unbounded distribution |
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from launcher.sweep.config import ParameterSpec

UNMAPPABLE = {
    "q_log_uniform_values": "Optuna cannot quantise a log distribution; use log_uniform_values, or q_uniform",
    "normal": "Optuna has no unbounded distribution; use uniform with min and max",
    "q_normal": "Optuna has no unbounded distribution; use q_uniform with min and max",
    "log_normal": "Optuna has no unbounded distribution; use log_uniform_values with min and max",
    "q_log_normal": "Optuna has no unbounded distribution; use log_uniform_values with min and max",
}


def bayes_problems(parameters: dict[str, ParameterSpec]) -> list[str]:
    """``parameters.NAME: why`` for every parameter bayes cannot search; empty when all map."""
    problems = []
    for name, spec in parameters.items():
        why = UNMAPPABLE.get(spec.distribution or "")
        if why:
            problems.append(
                f"parameters.{name}: method bayes cannot map distribution {spec.distribution} onto Optuna: {why}"
            )
        elif spec.distribution == "q_uniform":
            q = spec.q or 1.0
            if not (_multiple(spec.min, q) and _multiple(spec.max, q)):  # type: ignore[arg-type]
                problems.append(
                    f"parameters.{name}: method bayes needs q_uniform's min and max to be multiples of q "
                    f"(got min {spec.min:g}, max {spec.max:g}, q {q:g}): Optuna steps from min"
                )
        elif spec.values is not None and len({repr(v) for v in spec.values}) != len(spec.values):
            problems.append(f"parameters.{name}.values: method bayes needs distinct values (got {spec.values})")
    if parameters and all(fixed(s) for s in parameters.values()):
        problems.append("parameters: method bayes needs at least one parameter to search (all are constants)")
    return problems


def _multiple(x: float, q: float) -> bool:
    k = round(x / q)
    return math.isclose(k * q, x, rel_tol=1e-9, abs_tol=1e-12)


def fixed(spec: ParameterSpec) -> bool:
    return spec.value is not None


def fixed_params(parameters: dict[str, ParameterSpec]) -> dict[str, Any]:
    return {name: spec.value for name, spec in parameters.items() if fixed(spec)}


def to_distributions(parameters: dict[str, ParameterSpec]) -> dict[str, BaseDistribution]:
    """The searched parameters as Optuna distributions (call only after bayes_problems found none)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, BaseDistribution] = {}
    for name, spec in parameters.items():
        d = spec.distribution
        if fixed(spec):
            continue
        if spec.values is not None:
            out[name] = CategoricalDistribution(list(spec.values))
        elif d == "int_uniform":
            out[name] = IntDistribution(int(spec.min), int(spec.max))  # type: ignore[arg-type]
        elif d == "uniform":
            out[name] = FloatDistribution(spec.min, spec.max)  # type: ignore[arg-type]
        elif d == "q_uniform":
            out[name] = FloatDistribution(spec.min, spec.max, step=spec.q or 1.0)  # type: ignore[arg-type]
        elif d == "log_uniform_values":
            out[name] = FloatDistribution(spec.min, spec.max, log=True)  # type: ignore[arg-type]
        elif d == "log_uniform":
            out[name] = FloatDistribution(math.exp(spec.min), math.exp(spec.max), log=True)  # type: ignore[arg-type]
        else:  # bayes_problems rejects the rest before anything starts
            raise ValueError(f"parameters.{name}: distribution {d} has no Optuna counterpart")
    return out


def describe_space(parameters: dict[str, ParameterSpec]) -> list[str]:
    """Pure: one line per parameter saying what bayes searches (for `corral sweep FILE --dry-run`)."""
    lines = []
    for name, spec in parameters.items():
        d = spec.distribution
        if fixed(spec):
            lines.append(f"{name}: constant {spec.value!r}")
        elif spec.values is not None:
            lines.append(f"{name}: CategoricalDistribution({list(spec.values)!r})")
        elif d == "int_uniform":
            lines.append(f"{name}: IntDistribution({int(spec.min)}, {int(spec.max)})")  # type: ignore[arg-type]
        elif d == "log_uniform":
            lines.append(f"{name}: FloatDistribution({math.exp(spec.min):g}, {math.exp(spec.max):g}, log=True)")  # type: ignore[arg-type]
        else:
            extra = {"q_uniform": f", step={spec.q or 1.0:g}", "log_uniform_values": ", log=True"}.get(d or "", "")
            lines.append(f"{name}: FloatDistribution({spec.min:g}, {spec.max:g}{extra})")
    return lines

"""W&B-style parameter forms as Optuna distributions, for ``method: bayes``.

What bayes cannot search is a rule of the sweep file, checked there (``config.bayes_problems``,
pure, no optuna); ``to_distributions`` builds the distributions (imports optuna).

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

from launcher.sweep.config import ParameterSpec, fixed

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


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
        else:  # config.bayes_problems rejects the rest before anything starts
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

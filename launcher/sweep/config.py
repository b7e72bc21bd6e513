"""The sweep file: which job, which parameters, which metric, how many trials on how many nodes.

A W&B-style sweep (``method``, ``parameters``, ``metric``, ``run_cap``) plus what a
multi-node cluster needs (``nodes`` per trial, ``max_concurrent``, ``retries``).
Everything that can be checked before a trial launches is checked here, and every
problem names the field path so the user can fix the YAML.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from launcher.config.base import StrictModel
from launcher.config.job import JobConfig
from launcher.config.loading import format_validation_error, read_yaml
from launcher.errors import ConfigError

Scalar = Union[bool, int, float, str]

SWEEP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$"
"""A trial's run is named ``<sweep>-<trial id>[-<attempt>]``: 48 + 1 + 10 + 3 stays within a job name's 63."""

PARAM_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
"""Parameter names become ``--<name>=<value>``: no spaces, '=' or leading '-'."""

Distribution = Literal[
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
]
"""W&B's names. log_uniform takes min/max as exponents of e; the normal family takes mu/sigma, not bounds."""
BOUNDED = frozenset(
    {"uniform", "q_uniform", "log_uniform", "log_uniform_values", "q_log_uniform_values", "int_uniform"}
)
NORMALS = frozenset({"normal", "q_normal", "log_normal", "q_log_normal"})
QUANTIZED = frozenset({"q_uniform", "q_log_uniform_values", "q_normal", "q_log_normal"})
CONTINUOUS = BOUNDED | NORMALS
"""The distributions random draws from and a grid cannot enumerate."""


class ParameterSpec(StrictModel):
    """One parameter: a fixed ``value``, a list of ``values``, a ``distribution`` with ``min``/``max``, or a normal with ``mu``/``sigma``."""

    value: Optional[Scalar] = Field(default=None, description="A constant: every trial gets this value.")
    values: Optional[list[Scalar]] = Field(
        default=None, description="The choices: a grid enumerates them all, random and bayes pick one per trial."
    )
    distribution: Optional[Distribution] = Field(
        default=None,
        description="How random and bayes pick a value (W&B's names): uniform / q_uniform / int_uniform / log_uniform_values / "
        "q_log_uniform_values between min and max, log_uniform between e**min and e**max, normal / q_normal / log_normal / "
        "q_log_normal from mu and sigma, categorical (one of values), constant (value). Default: categorical with values, "
        "int_uniform when min and max are integers, uniform otherwise.",
    )
    min: Optional[float] = Field(default=None, description="Lower bound (inclusive) of a distribution.")
    max: Optional[float] = Field(default=None, description="Upper bound (inclusive) of a distribution.")
    q: Optional[float] = Field(
        default=None, gt=0, description="Quantum of a q_ distribution: values are round(x / q) * q (default 1)."
    )
    mu: Optional[float] = Field(
        default=None, description="Mean of a normal distribution (of the logarithm for log_normal; default 0)."
    )
    sigma: Optional[float] = Field(
        default=None, gt=0, description="Standard deviation of a normal distribution (default 1)."
    )

    @field_validator("values")
    @classmethod
    def _values_not_empty(cls, v: Optional[list[Scalar]]) -> Optional[list[Scalar]]:
        if v is not None and not v:
            raise ValueError("values must not be empty: list at least one value, or use value: X for a constant")
        return v

    @model_validator(mode="before")
    @classmethod
    def _remember_int_bounds(cls, data: Any) -> Any:
        # min/max are stored as floats; int_uniform is inferred from integer bounds as written in the YAML.
        if isinstance(data, dict) and "distribution" not in data and "min" in data and "max" in data:
            ints = all(isinstance(data[k], int) and not isinstance(data[k], bool) for k in ("min", "max"))
            data = {**data, "distribution": "int_uniform" if ints else "uniform"}
        if isinstance(data, dict) and "distribution" not in data and "values" in data:
            data = {**data, "distribution": "categorical"}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> ParameterSpec:
        if self.distribution in NORMALS:
            return self._check_normal()
        kinds = [
            k
            for k, present in (
                ("value", self.value is not None),
                ("values", self.values is not None),
                ("min/max", self.min is not None or self.max is not None),
            )
            if present
        ]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of value, values, or min and max (got {', '.join(kinds) or 'none'})")
        if self.distribution == "categorical" and self.values is None:
            raise ValueError("distribution categorical needs values: [...]")
        if self.distribution == "constant" and self.value is None:
            raise ValueError("distribution constant needs value: X")
        if self.distribution in BOUNDED:
            if self.min is None or self.max is None:
                raise ValueError(f"distribution {self.distribution} needs both min and max")
            if self.min > self.max:
                raise ValueError(f"min must be <= max (got min {self.min:g} > max {self.max:g})")
            if self.distribution in ("log_uniform_values", "q_log_uniform_values") and self.min <= 0:
                raise ValueError(f"{self.distribution} needs min > 0: the logarithm of {self.min:g} is undefined")
            if self.distribution == "int_uniform" and (self.min != int(self.min) or self.max != int(self.max)):
                raise ValueError("int_uniform needs integer min and max")
        if self.values is not None and self.distribution not in (None, "categorical"):
            raise ValueError(f"values go with distribution categorical, not {self.distribution}")
        if self.value is not None and self.distribution not in (None, "constant"):
            raise ValueError(f"value goes with distribution constant, not {self.distribution}")
        self._check_extras()
        return self

    def _check_normal(self) -> ParameterSpec:
        given = [k for k in ("value", "values", "min", "max") if getattr(self, k) is not None]
        if given:
            raise ValueError(f"distribution {self.distribution} takes mu and sigma, not {', '.join(given)}")
        self._check_extras()
        return self

    def _check_extras(self) -> None:
        if self.q is not None and self.distribution not in QUANTIZED:
            raise ValueError(f"q goes with a q_ distribution ({', '.join(sorted(QUANTIZED))}), not {self.distribution}")
        if (self.mu is not None or self.sigma is not None) and self.distribution not in NORMALS:
            raise ValueError(
                f"mu and sigma go with a normal distribution ({', '.join(sorted(NORMALS))}), not {self.distribution}"
            )

    @property
    def is_range(self) -> bool:
        return self.distribution in CONTINUOUS

    def choices(self) -> list[Scalar]:
        """The finite choices a grid enumerates (a range has none)."""
        if self.value is not None:
            return [self.value]
        return list(self.values or [])


class MetricSpec(StrictModel):
    """The number a trial reports with ``report(<name>=...)`` and which way is better."""

    name: str = Field(
        min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", description="Key passed to report(), e.g. loss."
    )
    goal: Literal["minimize", "maximize"] = Field(
        default="minimize", description="Whether a lower or a higher value is better."
    )


class EarlyTerminate(StrictModel):
    """W&B's ``early_terminate``: stop trials whose intermediate metric is clearly losing (Optuna's pruners).

    Milestones ("brackets" in W&B's words) are steps of the reported metric: with ``min_iter`` they are
    min_iter, min_iter*eta, min_iter*eta**2, ...; with ``max_iter`` and ``s`` they are max_iter/eta**s, ...,
    max_iter/eta. At each milestone a trial goes on only if its metric there is in the best 1/eta of the
    trials that reached it (successive halving: Optuna's SuccessiveHalvingPruner).
    """

    type: Literal["hyperband"] = Field(
        description="The early-termination algorithm; W&B's hyperband is the one there is."
    )
    min_iter: Optional[int] = Field(
        default=None, ge=1, description="Step of the first milestone (give this, or max_iter and s)."
    )
    max_iter: Optional[int] = Field(
        default=None, ge=1, description="Most steps a trial runs; milestones are max_iter/eta**s ... max_iter/eta."
    )
    s: Optional[int] = Field(default=None, ge=1, description="Number of milestones below max_iter (needs max_iter).")
    eta: int = Field(default=3, ge=2, description="Keep the best 1/eta of the trials at each milestone.")
    pruner: Literal["successive_halving", "hyperband"] = Field(
        default="successive_halving",
        description="successive_halving: one bracket, as W&B runs it; hyperband: Optuna's HyperbandPruner, several brackets "
        "from min_iter to max_iter, trials spread over them (needs max_iter, or min_iter with max_iter: auto from the trials).",
    )

    @model_validator(mode="after")
    def _milestones(self) -> EarlyTerminate:
        if self.min_iter is None and self.max_iter is None:
            raise ValueError("give min_iter (the first milestone), or max_iter with s")
        if self.s is not None and self.max_iter is None:
            raise ValueError("s needs max_iter (milestones are max_iter/eta**s ... max_iter/eta)")
        if self.max_iter is not None and self.min_iter is None:
            if self.s is None:
                raise ValueError("max_iter needs s, the number of milestones, or give min_iter instead")
            if self.max_iter < self.eta**self.s:
                raise ValueError(
                    f"max_iter / eta**s must be >= 1 (got {self.max_iter} / {self.eta}**{self.s}): lower s or eta, or raise max_iter"
                )
        if self.min_iter is not None and self.max_iter is not None and self.min_iter >= self.max_iter:
            raise ValueError(f"min_iter must be < max_iter (got {self.min_iter} >= {self.max_iter})")
        return self

    @property
    def first_milestone(self) -> int:
        if self.min_iter is not None:
            return self.min_iter
        return int(self.max_iter // self.eta**self.s)  # type: ignore[operator]

    def milestones(self, up_to: int) -> list[int]:
        """The steps where a trial is judged, up to ``up_to`` (and below max_iter when given)."""
        out, m = [], self.first_milestone
        limit = min(up_to, self.max_iter - 1) if self.max_iter is not None else up_to
        while m <= limit:
            out.append(m)
            m *= self.eta
        return out


class SweepConfig(StrictModel):
    """A hyperparameter sweep: trials of one job with different parameters, spread over the cluster's nodes."""

    name: str = Field(
        pattern=SWEEP_NAME,
        description="Sweep name: 1-48 letters, digits, '-' or '_'; trials are runs named <name>-<trial id>.",
    )
    job: Union[str, dict[str, Any]] = Field(
        description="The base job: a job mapping as in a job file (its name may be left out), or the path of a job file "
        "relative to the sweep file."
    )
    method: Literal["grid", "random", "bayes"] = Field(
        description="grid: every combination of values; random: run_cap draws from a seed; bayes: Optuna's TPE picks each "
        "trial from the results so far (run_cap trials)."
    )
    parameters: dict[str, ParameterSpec] = Field(
        min_length=1, description="Parameter name -> how its values are chosen."
    )
    metric: MetricSpec = Field(description="The reported metric trials are ranked by.")
    run_cap: Optional[int] = Field(
        default=None,
        ge=1,
        description="Most trials ever started (retries of a trial do not count). Required for random; "
        "default for grid: the grid's size.",
    )
    allow_partial_grid: bool = Field(
        default=False, description="Allow a grid larger than run_cap: only its first run_cap combinations run."
    )
    seed: int = Field(
        default=0,
        description="Seed of random and bayes: the same seed draws the same trials (random: so a re-run resumes them).",
    )
    nodes: int = Field(
        default=1, ge=1, description="Nodes per trial; more than 1 gang-schedules a multi-node torchrun trial."
    )
    nproc_per_node: Union[int, Literal["auto"], None] = Field(
        default=None, description="Processes per node of each trial (default: the job's nproc_per_node)."
    )
    max_concurrent: Optional[int] = Field(
        default=None, ge=1, description="Most trials running at once (default: as many as free nodes allow)."
    )
    retries: int = Field(
        default=1, ge=0, le=100, description="Extra attempts for a trial that fails before it is marked failed."
    )
    args_template: Optional[list[str]] = Field(
        default=None,
        description="Arguments appended to the job's args instead of --<name>=<value> for each parameter; "
        "'{name}' is replaced by the parameter's value, e.g. ['--lr', '{lr}'].",
    )
    plain: bool = Field(
        default=False,
        description="Run each trial as plain `python SCRIPT ARGS` on its node instead of torchrun (single-process trials).",
    )
    poll_interval: float = Field(
        default=2.0, ge=0.1, le=600, description="Seconds between the controller's checks on running trials."
    )
    early_terminate: Optional[EarlyTerminate] = Field(
        default=None,
        description="Stop losing trials early from the metric they report per step, e.g. {type: hyperband, min_iter: 3}.",
    )

    @property
    def uses_study(self) -> bool:
        """Whether the sweep keeps an Optuna study (bayes asks it for trials; early_terminate asks its pruner)."""
        return self.method == "bayes" or self.early_terminate is not None

    @field_validator("parameters")
    @classmethod
    def _param_names(cls, v: dict[str, ParameterSpec]) -> dict[str, ParameterSpec]:
        import re

        bad = [k for k in v if not re.match(PARAM_NAME, k)]
        if bad:
            raise ValueError(
                f"parameter names become --NAME=VALUE: use letters, digits, '_', '.', '-', not starting with '-' (got {bad})"
            )
        return v

    @field_validator("nproc_per_node")
    @classmethod
    def _nproc_positive(cls, v: Union[int, str, None]) -> Union[int, str, None]:
        if isinstance(v, int) and v < 1:
            raise ValueError("nproc_per_node must be >= 1 or 'auto'")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> SweepConfig:
        problems = []
        if self.method == "grid":
            ranges = [k for k, p in self.parameters.items() if p.is_range]
            for k in ranges:
                problems.append(
                    f"parameters.{k}: grid cannot enumerate a {self.parameters[k].distribution} range; "
                    "give values: [...] or use method: random"
                )
            if not ranges:
                size = grid_size(self.parameters)
                if self.run_cap is not None and size > self.run_cap and not self.allow_partial_grid:
                    problems.append(
                        f"run_cap: the grid has {size} combinations but run_cap is {self.run_cap}; raise run_cap, "
                        "or set allow_partial_grid: true to run only the first run_cap"
                    )
        if self.method in ("random", "bayes") and self.run_cap is None:
            problems.append(f"run_cap: method {self.method} needs run_cap (how many trials to draw)")
        if self.method == "bayes":
            problems += bayes_problems(self.parameters)
        if self.args_template is not None:
            for i, item in enumerate(self.args_template):
                try:
                    fields = [f for _, f, _, _ in string.Formatter().parse(item) if f is not None]
                except ValueError as exc:
                    problems.append(f"args_template.{i}: {exc} (write '{{{{' for a literal brace)")
                    continue
                for f in fields:
                    if f not in self.parameters:
                        problems.append(
                            f"args_template.{i}: '{{{f}}}' is not a parameter (known: {', '.join(self.parameters)})"
                        )
        if problems:
            raise ValueError("\n".join(problems))
        return self


UNMAPPABLE = {  # the W&B forms without an Optuna distribution (launcher.sweep.space)
    "q_log_uniform_values": "Optuna cannot quantise a log distribution; use log_uniform_values, or q_uniform",
    "normal": "Optuna has no unbounded distribution; use uniform with min and max",
    "q_normal": "Optuna has no unbounded distribution; use q_uniform with min and max",
    "log_normal": "Optuna has no unbounded distribution; use log_uniform_values with min and max",
    "q_log_normal": "Optuna has no unbounded distribution; use log_uniform_values with min and max",
}


def bayes_problems(parameters: dict[str, ParameterSpec]) -> list[str]:
    """``parameters.NAME: why`` for every parameter bayes cannot search (no Optuna distribution,
    ``launcher.sweep.space``); empty when all map. Pure: the config check must not import optuna."""
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


def grid_size(parameters: dict[str, ParameterSpec]) -> int:
    return math.prod(len(p.choices()) for p in parameters.values())


@dataclass(frozen=True)
class Sweep:
    """A validated sweep with its base job resolved (the file's `job:` may be a path)."""

    config: SweepConfig
    job: JobConfig
    source: str

    @property
    def name(self) -> str:
        return self.config.name


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; every problem is one ``field.path: message`` line of a ConfigError."""
    source = str(path)
    data = read_yaml(path)
    return sweep_from_mapping(data, source, base_dir=Path(path).resolve().parent)


def sweep_from_mapping(data: dict[str, Any], source: str, base_dir: Path | None = None) -> Sweep:
    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as err:
        problems = _split_cross_field(format_validation_error(err, data, SweepConfig))
        if isinstance(data.get("job"), dict):  # report the inline job's problems in the same pass
            problems += _job_problems({**data["job"], "name": data["job"].get("name", "x")}, "job.")
        raise ConfigError(source, problems) from None
    job = _resolve_job(cfg, source, base_dir or Path.cwd())
    return Sweep(config=cfg, job=job, source=source)


def _split_cross_field(lines: list[str]) -> list[str]:
    # Cross-field checks raise one multi-line error at the top level; each of its lines already starts with its path.
    out = []
    for line in lines:
        if line.startswith("(top level): "):
            out.extend(x.strip() for x in line.removeprefix("(top level): ").split("\n") if x.strip())
        else:
            out.append(line)
    return out


def _resolve_job(cfg: SweepConfig, source: str, base_dir: Path) -> JobConfig:
    if isinstance(cfg.job, str):
        job_path = Path(cfg.job)
        if not job_path.is_absolute():
            job_path = base_dir / job_path
        data = read_yaml(job_path)
        where = f"{source}: job ({job_path})"
    else:
        data = dict(cfg.job)
        where = source
    data.setdefault("name", cfg.name)
    problems = _job_problems(data, "" if isinstance(cfg.job, str) else "job.")
    if problems:
        raise ConfigError(where, problems)
    return JobConfig.model_validate(data)


def _job_problems(data: dict[str, Any], prefix: str) -> list[str]:
    try:
        JobConfig.model_validate(data)
    except ValidationError as err:
        return [prefix + line for line in format_validation_error(err, data, JobConfig)]
    return []

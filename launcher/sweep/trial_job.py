"""Pure builders: the corral job a trial runs (name, args, env) from the sweep's base job."""

from __future__ import annotations

from typing import Any

from launcher.config.job import JobConfig
from launcher.sweep.config import Sweep
from launcher.sweep.generate import Trial, canonical_params


def run_name(sweep: str, trial_id: str, attempt: int) -> str:
    """``<sweep>-<id>`` for a trial's first attempt, ``<sweep>-<id>-<n>`` for retries: each attempt its own run dir."""
    return f"{sweep}-{trial_id}" if attempt <= 1 else f"{sweep}-{trial_id}-{attempt}"


def format_value(value: Any) -> str:
    """How a parameter value is spelled on the command line (booleans as true/false, like YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def trial_args(sweep: Sweep, params: dict[str, Any]) -> list[str]:
    """Arguments appended to the base job's: the args template filled in, or ``--<name>=<value>`` per parameter."""
    template = sweep.config.args_template
    if template is None:
        return [f"--{k}={format_value(v)}" for k, v in params.items()]
    spelled = {k: format_value(v) for k, v in params.items()}
    return [item.format_map(spelled) for item in template]


def build_trial_job(sweep: Sweep, trial: Trial, attempt: int) -> JobConfig:
    """The base job renamed for this attempt, with the trial's args, env and per-trial resources."""
    cfg = sweep.config
    update: dict[str, Any] = {
        "name": run_name(sweep.name, trial.id, attempt),
        "args": [*sweep.job.args, *trial_args(sweep, trial.params)],
        "nnodes": cfg.nodes,
        "env": {
            **sweep.job.env,
            "CORRAL_TRIAL_PARAMS": canonical_params(trial.params),
            "CORRAL_SWEEP": sweep.name,
            "CORRAL_TRIAL_ID": trial.id,
            "CORRAL_TRIAL_ATTEMPT": str(attempt),
        },
    }
    if cfg.nproc_per_node is not None:
        update["nproc_per_node"] = cfg.nproc_per_node
    return JobConfig.model_validate({**sweep.job.model_dump(), **update})


def describe_plan(sweep: Sweep, trials: list[Trial]) -> list[dict[str, Any]]:
    """What `corral sweep FILE --dry-run` prints: per trial its id, run name, params and the args it gets."""
    return [
        {
            "id": t.id,
            "run": run_name(sweep.name, t.id, 1),
            "params": t.params,
            "args": build_trial_job(sweep, t, 1).args,
            "env": {"CORRAL_TRIAL_PARAMS": canonical_params(t.params)},
        }
        for t in trials
    ]

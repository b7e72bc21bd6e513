"""``corral config``: validate config files and print their JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

app = typer.Typer(help="Check config files and print their schema.", no_args_is_help=True)

KINDS = ("cluster", "job")


@app.command("check")
def check(
    files: list[Path] = typer.Argument(..., help="Cluster or job YAML files."),
    kind: Literal["auto", "cluster", "job"] = typer.Option(
        "auto",
        "--kind",
        "-k",
        help="auto: a file with 'nodes' or 'slurm' is a cluster; otherwise its keys decide (said with the result).",
    ),
) -> None:
    """Validate config files: 'ok' and a summary, or every problem with its field path (exit 2).

    Example: corral config check configs/local.yaml configs/demo.yaml
    """
    from launcher.cli.output import console
    from launcher.config import ClusterConfig, JobConfig, read_yaml, validate
    from launcher.config.loading import guess_kind, wrong_kind_note
    from launcher.errors import ConfigError, UserError

    if kind not in ("auto", *KINDS):
        raise UserError(f"--kind must be auto, cluster or job (got {kind!r})")
    failed: list[ConfigError] = []
    checked: list = []
    out = console()
    for path in files:
        try:
            data = read_yaml(path)
        except ConfigError as err:
            failed.append(err)
            continue
        k, why = guess_kind(data) if kind == "auto" else (kind, f"--kind {kind}")
        try:
            model = validate(ClusterConfig if k == "cluster" else JobConfig, data, str(path))
        except ConfigError as err:
            # which kind the file was read as decides every line below: say it (and, with --kind, if it looks
            # like the other kind)
            note = wrong_kind_note(data, k) if kind != "auto" else None
            failed.append(
                ConfigError(f"{path} (read as a {k} file: {why})", [*([note] if note else []), *err.problems])
            )
            continue
        out.print(f"{path}: ok ({k})" + (f", read as a {k} file: {why}" if kind == "auto" else ""), highlight=False)
        checked.append((path, model))
        for line in summarize(model):
            out.print(f"  {line}")
    _warn_missing_scripts(checked, out)
    if failed:
        raise ConfigError(
            ", ".join(e.source for e in failed),
            [p if len(failed) == 1 else f"{e.source}: {p}" for e in failed for p in e.problems],
        )


def _warn_missing_scripts(checked: list, out) -> None:
    """A job's script missing where a local node would run it: checked against the one cluster
    file among the arguments, else the embedded default."""
    from launcher.config import ClusterConfig, load_cluster
    from launcher.jobs import local_script_warnings

    clusters = [(p, m) for p, m in checked if isinstance(m, ClusterConfig)]
    jobs = [(p, m) for p, m in checked if not isinstance(m, ClusterConfig)]
    if not jobs or len(clusters) > 1:
        return
    cluster = load_cluster(clusters[0][0] if clusters else None)
    for path, job in jobs:
        for warning in local_script_warnings(job, cluster):
            out.print(f"[yellow]warning:[/] {path}: {warning}", highlight=False)


def summarize(model) -> list[str]:
    """A one-screen summary of a validated config."""
    from launcher.config import ClusterConfig

    if isinstance(model, ClusterConfig) and model.slurm is not None:
        s = model.slurm
        extra = "".join(f" {k}={v}" for k, v in (("account", s.account), ("qos", s.qos), ("time", s.time)) if v)
        return [
            f"Slurm partition {s.partition}{extra} (jobs run as batch jobs; nodes come from the allocation)",
            f"workdir={model.workdir} venv={model.venv or '-'} rendezvous port={model.rendezvous.port}",
            f"runs={model.storage.runs} checkpoints={model.storage.checkpoints}",
        ]
    if isinstance(model, ClusterConfig):
        lines = [f"{len(model.nodes)} node(s):"]
        for n in model.nodes[:16]:
            gpus = "gpus=detect" if n.gpus is None else f"gpus={n.gpus}"
            lines.append(f"  {n.label:<16} host={n.host} {gpus}" + (f" addr={n.addr}" if n.addr else ""))
        if len(model.nodes) > 16:
            lines.append(f"  ... and {len(model.nodes) - 16} more")
        lines.append(f"workdir={model.workdir} venv={model.venv or '-'} rendezvous port={model.rendezvous.port}")
        lines.append(f"runs={model.storage.runs} checkpoints={model.storage.checkpoints}")
        return lines
    entry = model.script or f"-m {model.module}"
    return [
        f"job {model.name}: {entry} {' '.join(model.args)}".rstrip(),
        f"nnodes={model.nnodes} nproc_per_node={model.nproc_per_node} backend={model.backend} max_restarts={model.max_restarts}",
        f"container={'none' if model.container is None else model.container.image}",
    ]


@app.command("schema")
def schema(kind: Literal["cluster", "job"] = typer.Argument("cluster", help="Which config file.")) -> None:
    """Print the JSON Schema of a config file (for editor completion).

    Example: corral config schema job > job.schema.json
    """
    from launcher.config import ClusterConfig, JobConfig
    from launcher.errors import UserError

    models = {"cluster": ClusterConfig, "job": JobConfig}
    if kind not in models:
        raise UserError(f"unknown schema {kind!r}: choose cluster or job")
    typer.echo(json.dumps(models[kind].model_json_schema(), indent=2))


__all__ = ["app", "check", "schema", "summarize"]

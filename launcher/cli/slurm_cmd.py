"""What `launch` and `preflight` print on a Slurm cluster (the other job commands share the ssh code paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.cli.common import console, emit_json, write_json


def launch_on_slurm(jobcfg, clustercfg, *, name, set_, dry_run: bool, follow: bool, as_json: bool, hint_c: str) -> int:
    from launcher.backends.slurm.backend import SlurmBackend

    backend = SlurmBackend()
    if dry_run:
        text, data = backend.describe(jobcfg, clustercfg, name=name, set_=set_)
        if as_json:
            write_json(data, "-")
        else:
            typer.echo(text)
        return 0
    out = console(stderr=as_json)
    with out.status(f"submitting {name or jobcfg.name} to Slurm partition {clustercfg.slurm.partition}..."):
        record = backend.launch(jobcfg, clustercfg, name=name, set_=set_)
    if as_json:
        write_json(record.to_dict(), "-")
    n = record.name
    out.print(
        f"submitted {n} as Slurm job {record.slurm['job_id']} on partition {clustercfg.slurm.partition}; logs in {record.plan.run_dir}/logs"
    )
    out.print(
        f"  corral ps{hint_c}\n  corral logs {n}{hint_c} -f\n  corral attach {n}{hint_c}\n  corral stop {n}{hint_c}"
    )
    if follow:
        from launcher.cli.jobs_cmd import _follow_to_end

        return _follow_to_end(record, clustercfg)
    return 0


def preflight_on_slurm(jobcfg, clustercfg, as_json: bool, json_out: Optional[Path]) -> int:
    from launcher.backends.slurm.backend import preflight_checks
    from launcher.errors import UserError
    from launcher.jobs import cluster_base

    out = console(stderr=as_json)
    with out.status(f"checking Slurm partition {clustercfg.slurm.partition}..."):
        checks = preflight_checks(clustercfg, jobcfg, base_dir=cluster_base(clustercfg))
    emit_json([c.__dict__ for c in checks], as_json, json_out)
    marks = {True: "ok", False: "FAIL", None: "skipped"}
    for c in checks:
        out.print(f"{c.check}: {marks[c.ok]}: {c.detail}")
    failed = [c for c in checks if c.ok is False]
    if failed:
        raise UserError(failed[0].detail)
    out.print("all checks passed")
    return 0

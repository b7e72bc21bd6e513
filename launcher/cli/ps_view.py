"""``corral ps``: each job's state and its nodes' states, as a table or JSON. Free of typer, so that
``launcher.cli.quick`` can run it without the command-line framework's start."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from launcher.cli.output import console, emit_json


def show_jobs(
    cluster: Optional[Path],
    *,
    all_: bool = False,
    per_node: bool = False,
    as_json: bool = False,
    json_out: Optional[Path] = None,
) -> None:
    """What ``corral ps`` prints (see its help): one line per job, or one row per node with ``per_node``."""
    from launcher.config import load_cluster
    from launcher.jobs import all_records, is_benchmark_run, read_statuses

    clustercfg = load_cluster(cluster)
    records = [r for r in all_records(clustercfg) if all_ or not is_benchmark_run(r.name)]
    statuses = read_statuses(records, clustercfg)
    envs = {s.name: job_env_of(r) for r, s in zip(records, statuses)}
    sweeps = {name: env.get("CORRAL_SWEEP") or None for name, env in envs.items()}
    grouped = [] if all_ else sweep_rows(statuses, sweeps, {name: trial_of(env, name) for name, env in envs.items()})
    statuses = [s for s in statuses if all_ or sweeps[s.name] is None]
    rows = [
        {
            "name": s.name,
            "kind": "job" if sweeps[s.name] is None else "trial",
            "sweep": sweeps[s.name],
            "state": s.state,
            "nodes": [
                {
                    "host": n.host,
                    "node": n.node,
                    "state": n.state,
                    "exit_code": n.exit_code,
                    "elapsed_s": n.elapsed_s,
                    "detail": n.detail,
                }
                for n in s.nodes
            ],
            "suspect": s.watchdog.suspect_line(),
            "events": s.events,
        }
        for s in statuses
    ] + grouped
    if emit_json(rows, as_json, json_out):
        return
    if not rows:
        from launcher.jobs import runs_dir

        console().print(f"no jobs in {runs_dir(clustercfg)}")
        return
    if per_node:
        _print_node_rows(rows)
    else:
        _print_job_lines(rows)


UNREACHABLE_SHOWN = 4
"""Unreachable nodes whose reason ``ps`` prints under the job line (all with --nodes)."""


def _print_job_lines(rows: list[dict]) -> None:
    """One line per job: its state, node count, the nodes' states folded, the longest elapsed."""
    from rich.table import Table

    from launcher.runs.summary import fold, node_state_label

    table = Table("job", "job state", "nodes", "elapsed", "node states", box=None)
    notes = []
    for row in rows:
        if row["kind"] == "sweep":
            trials = row["trials"]
            states = ", ".join(f"{n} {state}" for state, n in trials.items())
            table.add_row(f"{row['name']} (sweep)", row["state"], f"{sum(trials.values())} trials", "", states)
            notes.append(f"{row['name']}: {row['detail']} lists its trials")
            continue
        ns = row["nodes"]
        elapsed = [n["elapsed_s"] for n in ns if n["elapsed_s"] is not None]
        table.add_row(
            row["name"],
            row["state"],
            str(len(ns)),
            f"{max(elapsed):.0f}s" if elapsed else "",
            fold((n["node"], node_state_label(n["state"], n["exit_code"])) for n in ns),
        )
        if row.get("suspect"):
            notes.append(f"{row['name']}: {row['suspect']}")
        bad = [n for n in ns if n["state"] == "unknown"]
        notes += [f"{row['name']} on {n['node']}: {n['detail']}" for n in bad[:UNREACHABLE_SHOWN]]
        if len(bad) > UNREACHABLE_SHOWN:
            notes.append(f"{row['name']}: {len(bad) - UNREACHABLE_SHOWN} more unreachable node(s) (corral ps --nodes)")
    out = console()
    out.print(table)
    for note in notes:
        out.print(note, highlight=False)


def _print_node_rows(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table("job", "job state", "node", "node state", "elapsed", "detail", box=None)
    for row in rows:
        if row["kind"] == "sweep":  # in the node columns: how many trials, and their states
            trials = row["trials"]
            states = ", ".join(f"{n} {state}" for state, n in trials.items())
            table.add_row(
                f"{row['name']} (sweep)", row["state"], f"{sum(trials.values())} trials", states, "", row["detail"]
            )
            continue
        for i, n in enumerate(row["nodes"]):
            state = n["state"] if n["exit_code"] is None else f"{n['state']} {n['exit_code']}"
            elapsed = "" if n["elapsed_s"] is None else f"{n['elapsed_s']:.0f}s"
            first = i == 0
            table.add_row(
                row["name"] if first else "",
                row["state"] if first else "",
                n["node"],
                state,
                elapsed,
                n.get("detail") or "",
            )
        if row.get("suspect"):
            table.add_row("", "", "", "", "", row["suspect"])
    console().print(table)


def job_env_of(record) -> dict[str, str]:
    """The environment a run's ranks got, as its backend recorded it: a trial's sweep (``CORRAL_SWEEP``), its
    trial id and attempt (``launcher.sweep.trial_job``)."""
    from launcher.backends import backend_of

    return backend_of(record).job_env(record)


def trial_of(env: dict[str, str], name: str) -> tuple[str, int]:
    """(trial id, attempt) of a sweep's run from its environment; a retried trial has one run per attempt."""
    attempt = env.get("CORRAL_TRIAL_ATTEMPT", "1")
    return env.get("CORRAL_TRIAL_ID") or name, int(attempt) if attempt.isdigit() else 1


def sweep_rows(statuses, sweeps: dict[str, Optional[str]], trials: dict[str, tuple[str, int]]) -> list[dict]:
    """One row per sweep: its trials (each by its latest attempt) counted by job state; running while any
    trial may still run."""
    from collections import Counter

    from launcher.runs.state import ACTIVE

    latest: dict[tuple[str, str], tuple[int, str]] = {}
    for s in statuses:
        if sweeps[s.name] is not None:
            trial, attempt = trials[s.name]
            key = (sweeps[s.name], trial)
            if key not in latest or attempt > latest[key][0]:
                latest[key] = (attempt, s.state)
    by_sweep: dict[str, Counter] = {}
    for (sweep, _), (_, state) in latest.items():
        by_sweep.setdefault(sweep, Counter())[state] += 1
    return [
        {
            "name": name,
            "kind": "sweep",
            "sweep": name,
            "state": "running" if any(state in ACTIVE for state in counts) else "ended",
            "trials": dict(sorted(counts.items())),
            "nodes": [],
            "detail": f"corral sweep status {name}",
        }
        for name, counts in sorted(by_sweep.items())
    ]

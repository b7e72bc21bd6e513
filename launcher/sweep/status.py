"""What `corral sweep status` shows: every trial with its state, node and metric, the best one, counts.

Built from the journal (no lock needed: it only reads), the stored sweep spec, the lock
(is a controller alive?) and, for running trials, what they reported so far.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

from launcher.sweep.config import Sweep
from launcher.sweep.generate import generate_trials
from launcher.sweep.journal import Journal, replay
from launcher.sweep.lock import is_stale, read_lock
from launcher.sweep.metrics import best_value, never_reported, read_reports
from launcher.sweep.paths import SweepPaths


def finished_summary(st: dict[str, Any]) -> Optional[str]:
    """'sweep X is finished: N done, M failed; best ...' when its controller recorded the end and no
    trial is left to run (a sweep file grown since has pending trials again), else None."""
    c = st["counts"]
    if not st["finished"] or not st["trials"] or c["pending"] or c["running"]:
        return None
    pruned = f", {c['pruned']} pruned" if c.get("pruned") else ""
    text = f"sweep {st['name']} is finished: {c['done']} done, {c['failed']} failed{pruned}"
    best = st["best"]
    if best:
        text += f"; best: trial {best['id']} {st['metric']['name']}={format_metric(best['metric'])} ({format_params(best['params'])}), run {best['run']}"
    return text


def build_status(sweep: Sweep, paths: SweepPaths) -> dict[str, Any]:
    cfg = sweep.config
    state = replay(Journal(paths.journal).read())
    runs_root = paths.root.parent.parent
    rows = []
    planned = generate_trials(cfg)
    ids = [t.id for t in planned] + [tid for tid in state.trials if tid not in {t.id for t in planned}]
    params = {t.id: t.params for t in planned}
    for tid in ids:
        rec = state.trials.get(tid)
        row: dict[str, Any] = {
            "id": tid,
            "params": rec.params if rec else params[tid],
            "state": "pending",
            "attempts": 0,
            "node": None,
            "metric": None,
            "run": None,
            "error": None,
            "pruned_at_step": None,
            "stopped_at_step": None,
        }
        if rec and rec.attempts:
            last = rec.done or rec.attempts[-1]
            row.update(
                state=rec.state(cfg.retries),
                attempts=len(rec.attempts),
                node=",".join(last.nodes),
                run=last.run,
                metric=last.metric,
                error=last.error,
            )
            if row["state"] == "pruned" and rec.pruned is not None:
                # why (the journal's verdict) and where the run really stopped, beside the step that decided it
                p = rec.pruned
                row.update(pruned_at_step=p.step, stopped_at_step=p.stopped_at, error=p.error)
                if p.stopped_at is not None:
                    row["error"] = f"{p.error}; its run stopped at step {p.stopped_at}"
            if rec.running:
                row["metric"] = best_value(read_reports(runs_root / last.run), cfg.metric.name, cfg.metric.goal)
            if tid not in params and cfg.method != "bayes":  # bayes trials are asked of the study, never planned
                row["error"] = "not in the current sweep file (kept from an earlier version)"
        rows.append(row)
    rows.sort(key=lambda r: _sort_key(r, cfg.metric.goal))
    done_with_metric = [r for r in rows if r["state"] == "done" and r["metric"] is not None]
    counts = {s: sum(r["state"] == s for r in rows) for s in ("pending", "running", "done", "pruned", "failed")}
    if cfg.method == "bayes":  # trials not asked of the study yet have no row
        counts["pending"] += max((cfg.run_cap or 0) - state.started_trials(), 0)
    missing_metric = [r["id"] for r in rows if r["state"] == "done" and r["metric"] is None]
    return {
        "name": sweep.name,
        "method": cfg.method,
        "metric": {"name": cfg.metric.name, "goal": cfg.metric.goal},
        "controller": controller_info(paths),
        "counts": counts,
        "best": done_with_metric[0] if done_with_metric else None,
        "trials": rows,
        "nodes_aside": state.nodes_aside,
        "finished": state.finished,
        "runs": str(runs_root),
        "warnings": (
            [
                f"{len(missing_metric)} finished trial(s) never reported {cfg.metric.name!r}: {never_reported(cfg.metric.name)}"
            ]
            if missing_metric
            else []
        )
        + state.problems,
    }


def _sort_key(row: dict[str, Any], goal: str) -> tuple:
    m = row["metric"]
    if m is None or not math.isfinite(m):
        order = {"running": 1, "pending": 2, "done": 3, "pruned": 4, "failed": 5}
        return (1, order.get(row["state"], 5), 0.0)
    return (0, 0, m if goal == "minimize" else -m)


def controller_info(paths: SweepPaths) -> dict[str, Any]:
    holder = read_lock(paths.lock)
    if holder is None:
        return {"alive": False}
    alive = not is_stale(holder)
    return {
        "alive": alive,
        "pid": holder.pid,
        "host": holder.host,
        "heartbeat_age_s": round(time.time() - holder.heartbeat, 1),
        "session": holder.session,
        **({} if alive else {"note": "its lock is stale: the controller died; re-run the sweep to resume"}),
    }


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def format_metric(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.6g}"


def plot_status(status: dict[str, Any], path: str) -> None:
    """A PNG of the metric against step for every trial (pruned ones dashed, cut short), the best one highlighted."""
    from launcher.sweep.plot import plot_curves

    plot_curves(status, path)

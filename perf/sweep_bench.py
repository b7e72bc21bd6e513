"""Benchmark of learning sweeps on the synthetic objective: bayes vs random, hyperband vs none, controller overhead.

    python -m perf.sweep_bench [--seeds 7] [--budget 100] [--hb-trials 60] [--json docs/results/sweep-search-quality.json (appends a dated run)] [--plot FILE.png]

What is measured: the sweep controller's own decision code (``launcher.sweep.controller.Controller``:
scheduling, corral's journal, the Optuna study in its journal file with the open-file lock, TPE,
the pruner, corral's stop) driving trials of ``perf/sweep_objective.py`` in-process through
``SyntheticBackend`` on 4 simulated nodes, 4 trials at a time. No process is launched per trial,
so the figures are about search quality (trials, trial-steps) and the controller's bookkeeping,
not about launch latency (see docs/SWEEPS.md for end-to-end figures on the simulated cluster).

* trials to 5%: trials started (in start order) until the first one whose final loss is within 5%
  of the optimum (1.0); a sweep that never gets there counts as budget + 1 (shown as ">budget").
* hyperband: the same random sweep (same seed: the same trials) with and without
  ``early_terminate: {type: hyperband, max_iter: 27, s: 2, eta: 3}``; trial-steps are the steps
  all trials ran, summed; the best is the best final loss among the trials that finished.
* overhead per trial: wall time inside ask + tell + corral's journal appends, per trial started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.config import ClusterConfig
from launcher.sweep import study as study_mod
from launcher.sweep.config import sweep_from_mapping
from launcher.sweep.controller import Controller, load_spec, save_spec
from launcher.sweep.journal import Journal, replay
from launcher.sweep.paths import SweepPaths
from perf import results_log
from perf.sweep_objective import MAX_STEPS, OPTIMUM, PARAMETERS, SyntheticBackend, final_loss

NODES = 4
HYPERBAND = {"type": "hyperband", "max_iter": MAX_STEPS, "s": 2, "eta": 3}


class Meter:
    """Wall time inside the controller's ask, tell and journal appends (its overhead) and inside report, and
    the fsyncs made inside the overhead (Optuna's journal file and corral's journal fsync every record)."""

    OVERHEAD = (
        ("ask", study_mod.SweepStudy, "ask"),
        ("tell", study_mod.SweepStudy, "tell"),
        ("journal", Journal, "append"),
    )

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.fsyncs = 0
        self._depth = 0
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> Meter:
        for name, owner, attr in (*self.OVERHEAD, ("report", study_mod.SweepStudy, "report")):
            self._wrap(owner, attr, name, overhead=name != "report")
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            t = time.perf_counter()
            try:
                real_fsync(fd)
            finally:
                if self._depth:
                    self.fsyncs += 1
                    self.spent["fsync"] = self.spent.get("fsync", 0.0) + time.perf_counter() - t

        os.fsync = fsync  # type: ignore[assignment]
        self._undo.append(lambda: setattr(os, "fsync", real_fsync))
        return self

    def __exit__(self, *exc: Any) -> None:
        for undo in reversed(self._undo):
            undo()

    def _wrap(self, owner: Any, attr: str, name: str, overhead: bool) -> None:
        real = getattr(owner, attr)

        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            self._depth += overhead
            try:
                return real(*a, **k)
            finally:
                self._depth -= overhead
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, real))

    def ms(self, name: str, n: int) -> float:
        return 1000 * self.spent.get(name, 0.0) / n


def run_sweep(
    method: str, seed: int, run_cap: int, *, steps: int, early: dict | None = None, plot: Path | None = None
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="corral-sweep-bench-", dir="/var/tmp"))
    try:
        data = {
            "name": "bench",
            "job": {"script": "train.py", "nproc_per_node": 1},
            "method": method,
            "parameters": PARAMETERS,
            "metric": {"name": "loss"},
            "run_cap": run_cap,
            "seed": seed,
            "max_concurrent": NODES,
            "poll_interval": 0.1,
        }
        if early:
            data["early_terminate"] = early
        paths = SweepPaths(root / "_sweeps" / "bench")
        save_spec(paths, sweep_from_mapping(data, "bench"))
        backend = SyntheticBackend(root, max_steps=steps, steps_per_poll=1)  # run dirs beside _sweeps/, as on a cluster
        cluster = ClusterConfig.model_validate({"nodes": [{"host": f"h{i}", "name": f"n{i}"} for i in range(NODES)]})
        c = Controller(load_spec(paths), cluster, backend, paths, sleep=lambda s: None)
        t0 = time.perf_counter()
        with Meter() as meter:
            rc = c.run()
        wall = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"{method} seed {seed}: controller exited {rc}; see {paths.log}")
        if plot is not None:
            from launcher.sweep.status import build_status, plot_status

            plot_status(build_status(load_spec(paths), paths), str(plot))
        state = replay(Journal(paths.journal).read())
        starts = [r for r in Journal(paths.journal).read() if r["ev"] == "start"]
        finals = [final_loss(r["params"]) for r in starts]
        to5 = next((i + 1 for i, f in enumerate(finals) if f <= OPTIMUM * 1.05), run_cap + 1)
        done = [final_loss(t.params) for t in state.trials.values() if t.done]
        n = len(starts)
        overhead = sum(meter.ms(k, n) for k, _, _ in Meter.OVERHEAD)
        return {
            "method": method,
            "seed": seed,
            "trials": n,
            "trials_to_5pct": to5,
            "best": min(done),
            "pruned": sum(1 for t in state.trials.values() if t.pruned),
            "trial_steps": backend.steps_spent(),
            "wall_s": wall,
            "overhead_ms_per_trial": overhead,
            "ask_ms": meter.ms("ask", n),
            "tell_ms": meter.ms("tell", n),
            "journal_ms": meter.ms("journal", n),
            "report_ms": meter.ms("report", n),
            "fsyncs_per_trial": meter.fsyncs / n,
            "fsync_ms_in_overhead": meter.ms("fsync", n),
            "overhead_ms_excl_fsync": overhead - meter.ms("fsync", n),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over seeds, and whether each bar is met."""
    search = [r for r in rows if not r.get("hb")]
    hb = [r for r in rows if r.get("hb")]
    rnd = statistics.median(r["trials_to_5pct"] for r in search if r["method"] == "random")
    bay = statistics.median(r["trials_to_5pct"] for r in search if r["method"] == "bayes")
    pairs = {}
    for r in hb:
        pairs.setdefault(r["seed"], {})["early" if r["early"] else "full"] = r
    savings = [1 - p["early"]["trial_steps"] / p["full"]["trial_steps"] for p in pairs.values()]
    gaps = [(p["early"]["best"] - p["full"]["best"]) / p["full"]["best"] for p in pairs.values()]
    overhead = [r["overhead_ms_per_trial"] for r in rows]
    bayes = [r for r in search if r["method"] == "bayes"]
    return {
        "bayes_vs_random": {
            "median_trials_to_5pct": {"random": rnd, "bayes": bay},
            "ratio": bay / rnd,
            "bar": "bayes <= random / 2",
            "met": bay <= rnd / 2,
        },
        "hyperband": {
            "median_step_savings": statistics.median(savings),
            "median_best_gap": statistics.median(gaps),
            "worst_best_gap": max(gaps),
            "bar": "savings >= 40%, best within 2%",
            "met": statistics.median(savings) >= 0.40 and statistics.median(gaps) <= 0.02,
        },
        "overhead_ms_per_trial": {
            "median": statistics.median(overhead),
            "max": max(overhead),
            "bar": "< 50 ms",
            "met": max(overhead) < 50,
            "bayes_median": statistics.median(r["overhead_ms_per_trial"] for r in bayes),
            "bayes_median_fsyncs_per_trial": statistics.median(r["fsyncs_per_trial"] for r in bayes),
            "bayes_median_fsync_ms": statistics.median(r["fsync_ms_in_overhead"] for r in bayes),
            "bayes_median_excl_fsync": statistics.median(r["overhead_ms_excl_fsync"] for r in bayes),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=7)
    p.add_argument("--budget", type=int, default=100, help="run_cap of the bayes and random sweeps")
    p.add_argument("--hb-trials", type=int, default=60, help="run_cap of the sweeps with and without hyperband")
    p.add_argument("--json", type=Path, default=None, help="measurement file to append this run to")
    results_log.add_conditions_argument(p)
    p.add_argument(
        "--plot", type=Path, default=None, help="PNG of `sweep status --plot` for seed 0's sweep with hyperband"
    )
    a = p.parse_args(argv)
    logging.disable(logging.WARNING)
    rows = []
    for seed in range(a.seeds):
        for method in ("random", "bayes"):
            rows.append(run_sweep(method, seed, a.budget, steps=1))
            print(json.dumps(rows[-1]), flush=True)
        for early in (False, True):
            row = run_sweep(
                "random",
                seed,
                a.hb_trials,
                steps=MAX_STEPS,
                early=HYPERBAND if early else None,
                plot=a.plot if early and seed == 0 else None,
            )
            rows.append({**row, "hb": True, "early": early})
            print(json.dumps(rows[-1]), flush=True)
    summary = summarize(rows)
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python perf/sweep_bench.py " + " ".join(argv or sys.argv[1:]),
        "seeds": a.seeds,
        "budget": a.budget,
        "hb_trials": a.hb_trials,
        "nodes": NODES,
        "summary": summary,
        "runs": rows,
    }
    print(json.dumps(summary, indent=2))
    if a.json:
        results_log.append_run(
            a.json,
            out,
            measurement="learning sweeps (bayes, hyperband) against random search on the synthetic objective",
            script="perf/sweep_bench.py",
            command=results_log.current_command("perf.sweep_bench", argv),
            conditions=a.conditions,
        )
    return 0 if all(v["met"] for v in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

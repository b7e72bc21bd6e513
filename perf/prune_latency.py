"""How far a pruned trial runs past the report that decided it: the sweep controller's report watch
(each value judged as it is written) against its plain rounds (the pruner asked once per poll_interval,
the behaviour before the watch), interleaved.

On this machine, the local path (a node named localhost, a private tmux server, storage under /var/tmp):
a grid of two trials run one after the other; the first learns, the second (lr 1e-9) does not and is
pruned at the first milestone (step 3). Each trial reports a step every --step-sleep seconds for
--steps steps. Per arm and repetition: the step that decided (journal ``end.step``), the step the run
had reported when its stop took effect (journal ``stopped_at``) and their difference, the overshoot.

    python -m perf.prune_latency --reps 4 --out docs/results/prune-latency.json --conditions 'shared, loaded'
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file as well as with -m
    sys.path.insert(0, str(REPO))

from launcher.config import ClusterConfig  # noqa: E402
from launcher.sweep.backend import LaunchBackend  # noqa: E402
from launcher.sweep.config import sweep_from_mapping  # noqa: E402
from launcher.sweep.controller import Controller, save_spec  # noqa: E402
from launcher.sweep.journal import Journal  # noqa: E402
from launcher.sweep.paths import sweep_paths  # noqa: E402

ARMS = ("watch", "rounds")
WHAT = (
    "steps a pruned sweep trial runs past the report that decided it: the controller's report watch vs its rounds only"
)


def one_sweep(arm: str, root: Path, steps: int, step_sleep: float, poll: float) -> dict:
    cluster = ClusterConfig.model_validate(
        {
            "nodes": [{"host": "localhost", "name": "local"}],
            "workdir": str(REPO),
            "storage": {"runs": str(root / "runs"), "checkpoints": str(root / "ckpt")},
        }
    )
    name = f"prune-{arm}-{uuid.uuid4().hex[:6]}"
    spec = sweep_from_mapping(
        {
            "name": name,
            "job": {
                "script": "tests/sweep_objective_trial.py",
                "args": ["--steps", str(steps), "--step-sleep", str(step_sleep)],
                "nproc_per_node": 1,
            },
            "method": "grid",
            "parameters": {"lr": {"values": [0.001, 1e-9]}},
            "metric": {"name": "loss", "goal": "minimize"},
            "early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 3},
            "max_concurrent": 1,
            "plain": True,
            "poll_interval": poll,
        },
        f"{name}.yaml",
        base_dir=REPO,
    )
    paths = sweep_paths(cluster, name)
    save_spec(paths, spec)
    controller = Controller(spec, cluster, LaunchBackend(cluster), paths)
    if arm == "rounds":  # the controller as it was: the pruner asked only at its rounds
        controller.pause = lambda: controller.sleep(controller.cfg.poll_interval)  # type: ignore[method-assign]
    t0 = time.monotonic()
    rc = controller.run()
    wall = time.monotonic() - t0
    records = Journal(paths.journal).read()
    pruned = next((r for r in records if r["ev"] == "end" and r["result"] == "pruned"), None)
    stopped = next((r for r in records if r["ev"] == "stopped_at"), None)
    decided = pruned.get("step") if pruned else None
    reached = stopped["step"] if stopped else None
    return {
        "arm": arm,
        "rc": rc,
        "pruned": pruned is not None,
        "decided_step": decided,
        "stopped_step": reached,
        "overshoot_steps": None if decided is None or reached is None else reached - decided,
        "wall_s": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--step-sleep", type=float, default=0.05)
    p.add_argument("--poll", type=float, default=2.0, help="poll_interval of the sweep (the default is 2.0)")
    p.add_argument("--out", type=Path, default=None, help="the measurement file a run is appended to")
    from perf import results_log

    results_log.add_conditions_argument(p)
    a = p.parse_args(argv)
    token = uuid.uuid4().hex[:8]
    sock = f"corral-prune-latency-{token}"
    os.environ["CORRAL_TMUX_SOCKET"] = sock
    root = Path("/var/tmp") / f"corral-prune-latency-{token}"
    root.mkdir(parents=True)
    runs = []
    try:
        for rep in range(a.reps):
            for arm in ARMS if rep % 2 == 0 else ARMS[::-1]:  # interleaved, alternating which goes first
                row = {"rep": rep, **one_sweep(arm, root, a.steps, a.step_sleep, a.poll)}
                print(json.dumps(row), flush=True)
                runs.append(row)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
        Path(f"/tmp/tmux-{os.getuid()}/{sock}").unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    summary = {}
    for arm in ARMS:
        over = [r["overshoot_steps"] for r in runs if r["arm"] == arm and r["overshoot_steps"] is not None]
        summary[arm] = {
            "pruned": sum(r["pruned"] for r in runs if r["arm"] == arm),
            "runs": sum(r["arm"] == arm for r in runs),
            "overshoot_steps_median": statistics.median(over) if over else None,
            "overshoot_steps_max": max(over) if over else None,
            "overshoot_s_median": round(statistics.median(over) * a.step_sleep, 3) if over else None,
        }
    result = {
        "settings": {"steps": a.steps, "step_sleep_s": a.step_sleep, "poll_interval_s": a.poll},
        "summary": summary,
        "runs": runs,
    }
    print(json.dumps(summary, indent=2))
    if a.out:  # one file per measurement: this run a dated entry in it
        from perf import results_log

        results_log.append_run(
            a.out,
            result,
            measurement=WHAT,
            script="perf/prune_latency.py",
            command=results_log.current_command("perf.prune_latency", argv),
            conditions=a.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

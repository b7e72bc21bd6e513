"""What the hang watchdog costs and how fast it notices a hang, on the simulated cluster.

Run as root from the repository root:

    python -m perf.watchdog_bench --nodes 3 --hang-after 4 8 16 --repeats 5 --pairs 3 \
        --out docs/results/watchdog-latency-cost.json --conditions "..."

* ``latency``: one job per ``hang_after`` (``on_hang: dump``, 1 process per node, the test loop
  ``tests/workers/hang_train.py``: all-reduce, report, 50 ms sleep). Repeatedly: rank 1 is frozen
  with SIGSTOP, the time until the leader's hang event (its ``at``: the decision, before the
  dumps) and until the event is on disk (after every node's py-spy dumps) are taken, the rank
  is thawed with SIGCONT, and the next freeze waits until the job advanced again (the watchdog
  then watches again). Expected: ``hang_after`` minus the time since the rank's last report,
  plus up to one sampling interval.
* ``cpu``: every node's watchdog process's CPU time (``/proc/PID/stat`` utime + stime) over a
  steady stretch of the same job, as a share of one core, at the job's sampling interval.
* ``step``: the loop's median step time with the watchdog on and off (``watchdog.enabled``), the
  two kinds interleaved in pairs (on, off, off, on, ...); the ratio of the medians and each pair's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file as well as with -m
    sys.path.insert(0, str(REPO))

from launcher import api  # noqa: E402
from launcher.config import ClusterConfig, JobConfig  # noqa: E402
from launcher.tools import ssh  # noqa: E402
from perf import results_log  # noqa: E402
from perf.scale_bench import cpu_seconds  # noqa: E402
from tests.infra.simcluster import SimCluster  # noqa: E402
from tests.infra.waiting import wait_for  # noqa: E402


def job(name: str, *, hang_after: float, enabled: bool = True, steps: int = 100000) -> JobConfig:
    return JobConfig.model_validate(
        {
            "name": name,
            "script": "tests/workers/hang_train.py",
            "args": ["--steps", str(steps), "--step-time", "0.05"],
            "nproc_per_node": 1,
            "backend": "gloo",
            "env": {"PYTHONPATH": str(REPO)},
            "watchdog": {"enabled": enabled, "hang_after": hang_after, "first_step_grace": 120},
        }
    )


def step_of(handle, rank: int) -> int:
    try:
        return int((handle.run_dir / "hang-test" / f"step-rank{rank}").read_text())
    except (OSError, ValueError):
        return -1


def hang_events(handle) -> list[dict]:
    path = handle.run_dir / "watchdog" / "events.jsonl"
    if not path.exists():
        return []
    return [e for e in (json.loads(x) for x in path.read_text().splitlines() if x.strip()) if e["kind"] == "hang"]


def watchdog_pids(run_id: str) -> list[int]:
    marker = f"CORRAL_RUN_ID={run_id}".encode()
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"launcher.watchdog.node" in cmd and marker in env:
            out.append(int(p.name))
    return out


def measure_latency(cl: ClusterConfig, hang_after: float, repeats: int, cpu_window: float) -> dict:
    name = f"wdb-{int(hang_after)}-{uuid.uuid4().hex[:4]}"
    handle = api.launch(job(name, hang_after=hang_after), cl)
    try:
        pid_file = handle.run_dir / "hang-test" / "pid-rank1-restart0"
        wait_for(pid_file.exists, 180, "rank 1 started")
        victim = int(pid_file.read_text())
        wait_for(lambda: step_of(handle, 1) >= 20, 180, "20 steps")
        # CPU of every node's watchdog over a steady stretch
        pids = watchdog_pids(handle.plan.run_id)
        before = {p: cpu_seconds(p) for p in pids}
        t0 = time.monotonic()
        time.sleep(cpu_window)
        wall = time.monotonic() - t0
        cpu = [(cpu_seconds(p) - before[p]) / wall for p in pids]
        interval = handle.plan.nodes[0].watchdog["interval"]
        rows = []
        for _ in range(repeats):
            seen = len(hang_events(handle))
            last_step = step_of(handle, 1)
            os.kill(victim, signal.SIGSTOP)
            frozen = time.time()
            wait_for(
                lambda seen=seen: len(hang_events(handle)) > seen, hang_after + 120, "the hang event", interval=0.05
            )
            on_disk = time.time()
            ev = hang_events(handle)[-1]
            os.kill(victim, signal.SIGCONT)
            rows.append(
                {
                    "detected_s": round(ev["at"] - frozen, 3),
                    "recorded_s": round(on_disk - frozen, 3),
                    "suspect_right": ev["ranks"] == [1],
                    "quiet_s": ev["quiet_s"],
                }
            )
            wait_for(lambda last=last_step: step_of(handle, 1) > last + 20, 120, "progress after the thaw")
            wait_for(
                lambda: json.loads((handle.run_dir / "watchdog" / "state.json").read_text())["state"] == "watching",
                60,
                "the watchdog watching again",
            )
        return {
            "hang_after_s": hang_after,
            "interval_s": interval,
            "repeats": rows,
            "detected_median_s": statistics.median(r["detected_s"] for r in rows),
            "recorded_median_s": statistics.median(r["recorded_s"] for r in rows),
            "cpu_share_per_node": [round(c, 5) for c in cpu],
            "cpu_window_s": round(wall, 1),
        }
    finally:
        api.stop(name, cl, timeout=3)


def median_step_time(handle) -> float:
    records = [json.loads(x) for x in (handle.run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    times = [r["t"] for r in records]
    gaps = sorted(b - a for a, b in zip(times[10:], times[11:]))  # the first steps include warm-up
    return statistics.median(gaps)


def measure_step_time(cl: ClusterConfig, pairs: int, steps: int) -> dict:
    order = []
    for i in range(pairs):
        order += [True, False] if i % 2 == 0 else [False, True]
    runs = []
    for enabled in order:
        name = f"wds-{'on' if enabled else 'off'}-{uuid.uuid4().hex[:4]}"
        handle = api.launch(job(name, hang_after=20, enabled=enabled, steps=steps), cl)
        try:
            st = handle.wait(timeout=600)
            if not st.ok:
                raise RuntimeError(f"{name} failed: {st.to_json()}")
            runs.append({"watchdog": enabled, "median_step_s": median_step_time(handle)})
        finally:
            api.stop(name, cl, timeout=3)
    on = [r["median_step_s"] for r in runs if r["watchdog"]]
    off = [r["median_step_s"] for r in runs if not r["watchdog"]]
    paired = [a / b for a, b in zip(on, off)]
    return {
        "order": order,
        "runs": runs,
        "ratio_of_medians": statistics.median(on) / statistics.median(off),
        "paired_ratios": [round(x, 4) for x in paired],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--hang-after", type=float, nargs="+", default=[4, 8, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu-window", type=float, default=30)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--modes", nargs="+", default=["latency", "step"], choices=["latency", "step"])
    ap.add_argument("--out", type=Path, help="the measurement file a run is appended to (perf/results_log.py)")
    results_log.add_conditions_argument(ap)
    args = ap.parse_args(argv)
    load = os.getloadavg()
    result: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "nodes": args.nodes,
        "load_before": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
    }
    with SimCluster(args.nodes) as sim:
        cl = ClusterConfig.model_validate(sim.cluster_config(workdir=REPO))
        try:
            if "latency" in args.modes:
                result["latency"] = [measure_latency(cl, h, args.repeats, args.cpu_window) for h in args.hang_after]
                for r in result["latency"]:
                    print(
                        f"hang_after {r['hang_after_s']:g} s: detected median {r['detected_median_s']:.2f} s, "
                        f"recorded {r['recorded_median_s']:.2f} s; watchdog CPU {r['cpu_share_per_node']} of a core",
                        flush=True,
                    )
            if "step" in args.modes:
                result["step"] = measure_step_time(cl, args.pairs, args.steps)
                print(
                    f"step time with/without: ratio of medians {result['step']['ratio_of_medians']:.4f}, "
                    f"paired {result['step']['paired_ratios']}",
                    flush=True,
                )
        finally:
            ssh.close_masters(cl.ssh, cl.nodes)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    if args.out:
        results_log.append_run(
            args.out,
            result,
            measurement="hang watchdog: detection latency against hang_after, CPU per node, step time with/without",
            script="perf/watchdog_bench.py",
            command=results_log.current_command("perf.watchdog_bench", argv),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

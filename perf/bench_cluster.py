"""``corral bench cluster --level quick`` against the four benchmarks run by hand, and its detection sensitivity.

On one simulated cluster (``--nodes``, default 4), interleaved and repeated (``--reps``):

* cluster: ``corral bench cluster -c CLUSTER --level quick --out DIR`` (wall time, and whether it kept its budget);
* by hand: the same four benchmarks with the same parameters one after another:
  ``bench node``, ``bench net --pairs ring --duration 2``, ``bench allreduce -b 1K -e 1M -f 4 -n 5 -w 2
  --nproc-per-node 1``, ``bench volume PATH -c --size 64M --mode seqwrite,seqread --duration 2``;
  the figure is the sum of their wall times.

Each command is run in this process through ``launcher.cli.main`` (as a user would type it, minus the interpreter
start, which is the same for both). ``--sensitivity`` then runs the quick level's node step (``--skip net,...``)
with a CPU quota of each of ``--cpu-quotas`` percent on one node, and its network step with each of
``--link-caps`` Mbit/s on one node's link, ``--sens-reps`` times each, and records how often the faulty node
was failed (and whether any other node was). Run as root from the repository root:

    python -m perf.bench_cluster --reps 3 --sensitivity --json docs/results/bench-cluster-quick.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

from launcher.cli import main as corral
from perf import results_log
from tests.infra import faults
from tests.infra.simcluster import SimCluster


def _timed(argv: list[str]) -> tuple[float, int]:
    os.environ["CORRAL_TMUX_SOCKET"] = f"corral-perf-{secrets.token_hex(3)}"
    t0 = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = corral(argv)
    return time.monotonic() - t0, rc


def by_hand(cfg: str, vol: str) -> dict[str, float]:
    steps = {
        "node": ["bench", "node", "-c", cfg],
        "net": ["bench", "net", "-c", cfg, "--pairs", "ring", "--duration", "2"],
        "allreduce": ["bench", "allreduce", "-c", cfg, "-b", "1K", "-e", "1M", "-f", "4", "-n", "5", "-w", "2",
                      "--nproc-per-node", "1"],
        "volume": ["bench", "volume", vol, "-c", cfg, "--size", "64M", "--mode", "seqwrite,seqread", "--duration", "2"],
    }  # fmt: skip
    out = {}
    for name, argv in steps.items():
        out[name], rc = _timed(argv)
        if rc not in (0, 1):
            raise RuntimeError(f"bench {name} exited {rc}")
    return out


def cluster_run(cfg: str, vol: str, out: Path, *extra: str) -> tuple[float, dict]:
    wall, rc = _timed(["bench", "cluster", "-c", cfg, "--volume-path", vol, "--out", str(out), *extra])
    if rc not in (0, 1):
        raise RuntimeError(f"bench cluster exited {rc}")
    return wall, json.loads((out / "report.json").read_text())


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def compare(sim: SimCluster, cfg: str, vol: str, work: Path, reps: int) -> dict:
    rows = []
    for r in range(reps):
        order = ["cluster", "hand"] if r % 2 == 0 else ["hand", "cluster"]
        row: dict = {"rep": r, "order": order, "load_before": load_average()}
        for what in order:
            if what == "cluster":
                wall, report = cluster_run(cfg, vol, work / f"cmp-{r}")
                row["cluster_s"] = round(wall, 1)
                row["cluster_verdict"] = report["verdict"]
                row["cluster_steps"] = {s["name"]: s["duration_s"] for s in report["steps"]}
                row["budget_s"] = sum(s["budget_s"] for s in report["steps"])
                row["budget_held"] = all(s["complete"] for s in report["steps"]) and wall <= row["budget_s"]
            else:
                steps = by_hand(cfg, vol)
                row["hand_steps"] = {k: round(v, 1) for k, v in steps.items()}
                row["hand_s"] = round(sum(steps.values()), 1)
        row["ratio"] = round(row["cluster_s"] / row["hand_s"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratios = [r["ratio"] for r in rows]
    return {"runs": rows, "ratio_median": statistics.median(ratios), "ratio_max": max(ratios)}


def sensitivity(sim: SimCluster, cfg: str, work: Path, quotas: list[int], caps: list[int], reps: int) -> dict:
    names = [n.hostname for n in sim.nodes]
    target = 2
    out: dict = {"cpu": [], "link": [], "target": names[target]}
    only_node = ["--skip", "net", "--skip", "allreduce", "--skip", "volume", "--threshold", "0.7"]
    only_net = ["--skip", "node", "--skip", "allreduce", "--skip", "volume", "--threshold", "0.7"]
    for kind, levels, fault, extra in (
        ("cpu", quotas, lambda v: faults.cpu_quota(sim, target, v), only_node),
        ("link", caps, lambda v: faults.link_cap(sim, target, v), only_net),
    ):
        for value in levels:
            flagged = by_figures = others = 0
            for r in range(reps):
                with fault(value):
                    _, report = cluster_run(cfg, str(work), work / f"sens-{kind}-{value}-{r}", *extra)
                flagged += names[target] in report["exclude"]
                # a CPU quota is also read directly (node.cpu_quota); what the peers' judgement catches is counted apart
                mine = [f for x in report["nodes"] if x["name"] == names[target] for f in x["findings"]]
                by_figures += any(f["check"].startswith(("peer.", "net.")) and f["severity"] == "fail" for f in mine)
                others += any(n != names[target] for n in report["exclude"])
            entry = {
                "value": value,
                "reps": reps,
                "flagged": flagged,
                "flagged_by_figures": by_figures,
                "other_nodes_flagged": others,
            }
            out[kind].append(entry)
            print(json.dumps({kind: entry}), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--sensitivity", action="store_true")
    p.add_argument("--cpu-quotas", type=int, nargs="+", default=[50, 25, 10, 5])
    p.add_argument("--link-caps", type=int, nargs="+", default=[1000, 400, 100, 40])
    p.add_argument("--sens-reps", type=int, default=2)
    p.add_argument("--json", type=Path, help="the measurement file to append this run to (perf/results_log.py)")
    results_log.add_conditions_argument(p)
    args = p.parse_args(argv)
    result: dict = {"date": time.strftime("%Y-%m-%d"), "nodes": args.nodes, "cpus": os.cpu_count()}
    with SimCluster(args.nodes) as sim:
        cfg = str(sim.write_cluster_config())
        work = sim.shared_dir / "bench-cluster"
        work.mkdir(parents=True, exist_ok=True)
        vol = str(work)
        result["load_start"] = load_average()
        result["compare"] = compare(sim, cfg, vol, work, args.reps)
        if args.sensitivity:
            result["sensitivity"] = sensitivity(sim, cfg, work, args.cpu_quotas, args.link_caps, args.sens_reps)
        result["load_end"] = load_average()
    if args.json:
        results_log.append_run(
            args.json,
            result,
            measurement="corral bench cluster --level quick against the four benchmarks by hand, and its detection sensitivity",
            script="perf/bench_cluster.py",
            command=results_log.current_command("perf.bench_cluster", argv),
            conditions=args.conditions,
        )
    print(json.dumps({k: v for k, v in result.items() if k != "sensitivity"}, indent=1)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the hang watchdog adds to a launch: ``corral launch`` with the watchdog, the same job with
``watchdog: {enabled: false}``, and ``pdsh -f 32`` starting the same torchrun line, on the same
simulated nodes, paired, the order rotating per repetition. Launch time is command start -> every
rank past ``init_process_group`` (``perf/scale_bench.py``'s measure). Prints each repetition and the
medians; the figures are kept in docs/results/scale.md. Run as root from the repository root:

    python -m perf.watchdog_launch_cost --nodes 4 --reps 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from perf import scale_bench as sb

VARIANTS = ("watchdog", "no-watchdog", "pdsh")


def launch_and_stop(bench: sb.Bench, n: int, job_extra: dict) -> tuple[float, float]:
    """(launch time, the ``corral launch`` command's own time), then the job stopped and gone."""
    name, cfile, out, phases, took, _ = bench.corral_launch(n, job_extra)
    bench.stop_and_release(name, cfile, out)
    return phases["ready_s"], took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args(argv)
    from tests.infra.simcluster import SimCluster

    launch: dict[str, list[float]] = {v: [] for v in VARIANTS}
    command: dict[str, list[float]] = {v: [] for v in VARIANTS[:2]}
    with SimCluster(args.nodes) as sim:
        work = Path(sim.run_dir) / "watchdog-cost"
        work.mkdir()
        bench = sb.Bench(sim, work, sys.prefix)
        for rep in range(args.reps):
            order = VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]
            row = {}
            for v in order:
                if v == "pdsh":
                    row[v] = bench.pdsh(args.nodes)["launch_s"]
                    continue
                row[v], took = launch_and_stop(
                    bench, args.nodes, {} if v == "watchdog" else {"watchdog": {"enabled": False}}
                )
                command[v].append(took)
            for v, t in row.items():
                launch[v].append(t)
            ratios = {v: round(row[v] / row["pdsh"], 3) for v in VARIANTS[:2]}
            print(
                f"rep {rep}: launch (s) {', '.join(f'{v} {row[v]:.2f}' for v in order)}; ratio to pdsh {ratios}",
                flush=True,
            )
    med = {v: statistics.median(x) for v, x in launch.items()}
    for v in VARIANTS[:2]:
        paired = statistics.median(a / b for a, b in zip(launch[v], launch["pdsh"]))
        print(
            f"{v}: launch median {med[v]:.2f} s, paired ratio to pdsh {paired:.3f}, "
            f"command median {statistics.median(command[v]):.2f} s"
        )
    print(f"pdsh: launch median {med['pdsh']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

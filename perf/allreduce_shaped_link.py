"""Bus bandwidth per message size on two simulated nodes, healthy and with one node's link capped by
``tc tbf`` (tests/infra/faults.py: 64 kB burst): where a capped link's peak comes from, and why
``corral bench cluster`` judges the largest size's figure (docs/BENCH_CLUSTER.md). The same all-reduce
step ``bench cluster --level quick`` runs on CPU nodes (1K..1M, factor 4, 5 iterations). Prints each
run's rows; the figures are kept in docs/results/bench-cluster.md. Run as root from the repository root:

    python -m perf.allreduce_shaped_link --mbit 40 --reps 3
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbit", type=int, default=40)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    from benchmarks.cluster import levels
    from benchmarks.cluster import run as runner
    from launcher.config import ClusterConfig
    from tests.infra import faults
    from tests.infra.simcluster import SimCluster

    with SimCluster(2) as sim:
        cluster = ClusterConfig.model_validate(sim.cluster_config(workdir=REPO, venv=sys.prefix))
        spec = levels.LEVEL_SPECS["quick"]
        ar = {"min_bytes": "1K", "max_bytes": spec.ar_max_bytes_cpu, "factor": 4, "iters": spec.ar_iters, "warmup": 2}
        step = levels.StepPlan("allreduce", "all-reduce", 300, ar)
        req = runner._ar_request(cluster, step)
        for label in ("healthy", f"capped {args.mbit} Mbit/s"):
            for rep in range(args.reps):
                cap = faults.link_cap(sim, 1, args.mbit) if label != "healthy" else contextlib.nullcontext()
                with cap:
                    judged, result, error = runner._ar_busbw(cluster, req, 300)
                rows = sorted((r["size_bytes"], r["inplace"], r["busbw_gbps"]) for r in (result or {}).get("rows", []))
                shown = ", ".join(f"{s}{' in' if i else ''} {b:.4f}" for s, i, b in rows)
                peak = (result or {}).get("peak_busbw_gbps")
                print(f"{label} rep {rep}: largest size {judged}, peak {peak} {error} | {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

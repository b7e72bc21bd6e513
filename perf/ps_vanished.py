"""How long ``corral ps`` takes to name a node whose network vanished (packets dropped, no connection closed).

Launches the scale benchmark's rank script on 2 simulated nodes, runs ``corral ps`` twice (the second as
under ``watch``), cuts the second node off (the simulated cluster's ``disconnect``), waits ``--after``
seconds, and times a third ``ps``, which must name that node. Run as root from the repository root:

    python -m perf.ps_vanished --after 0
    python -m perf.ps_vanished --after 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from perf import scale_bench as sb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=float, default=0.0, help="seconds between the cut and the timed ps")
    args = parser.parse_args(argv)
    from tests.infra.simcluster import SimCluster

    with SimCluster(2) as sim:
        work = Path(sim.run_dir) / "ps-vanished"
        work.mkdir()
        bench = sb.Bench(sim, work, sys.prefix)
        name, cfile, out, *_ = bench.corral_launch(2)
        ps = [*bench.cli, "ps", "-c", str(cfile)]
        try:
            for label in ("first", "again"):
                t0 = time.perf_counter()
                subprocess.run(ps, capture_output=True, check=False)
                print(f"ps, {label}: {time.perf_counter() - t0:.2f} s", flush=True)
            sim.disconnect(sim.nodes[1])
            try:
                time.sleep(args.after)
                t0 = time.perf_counter()
                done = subprocess.run(ps, capture_output=True, text=True, check=False)
                print(f"ps, node 2 cut off {args.after:g} s before: {time.perf_counter() - t0:.2f} s", flush=True)
                print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-400:])
            finally:
                sim.reconnect(sim.nodes[1])
        finally:
            bench.stop_and_release(name, cfile, out)
    return 0


if __name__ == "__main__":
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.exit(main())

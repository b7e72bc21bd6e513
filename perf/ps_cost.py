"""Where ``corral ps``'s time goes on a few simulated nodes, beside ``pdsh -f 32 tmux has-session``.

One job (the scale benchmark's rank script, 1 rank per node) is launched and left running; then, the
order alternating: ``corral ps --json`` as a command, pdsh's bare probe, and ``corral ps`` in this
process under cProfile (the interpreter's start and imports excluded: they are timed alone with
``python -c 'import ...'``). Prints the medians and the profile's heaviest entries. Run as root from
the repository root:

    python -m perf.ps_cost --nodes 4 --reps 7
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from perf import scale_bench as sb

IMPORTS = "import launcher.cli.quick, launcher.cli.ps_view, launcher.config, launcher.jobs, rich.table"
"""What `corral ps` imports before it asks a node (its quick path: no typer)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    from launcher.cli import main as cli_main
    from tests.infra.simcluster import SimCluster

    times: dict[str, list[float]] = {"corral ps": [], "pdsh": [], "in process": [], "interpreter + imports": []}
    with SimCluster(args.nodes) as sim:
        work = Path(sim.run_dir) / "ps-cost"
        work.mkdir()
        bench = sb.Bench(sim, work, sys.prefix)
        name, cfile, out, *_ = bench.corral_launch(args.nodes)
        pdsh, env = bench.pdsh_over(args.nodes)
        pdsh += ["tmux", "has-session", "-t", f"corral-{name}"]
        profile = cProfile.Profile()
        try:
            for rep in range(args.reps):
                steps = [
                    ("corral ps", lambda: sb.timed([*bench.cli, "ps", "--json", "-c", str(cfile)])[0]),
                    ("pdsh", lambda: sb.timed(pdsh, env=env)[0]),
                    ("interpreter + imports", lambda: sb.timed([sys.executable, "-c", IMPORTS])[0]),
                ]
                for what, step in steps if rep % 2 == 0 else reversed(steps):
                    times[what].append(step())
                t0 = time.perf_counter()
                with redirect_stdout(io.StringIO()):
                    profile.runcall(cli_main, ["-q", "ps", "--json", "-c", str(cfile)])
                times["in process"].append(time.perf_counter() - t0)
        finally:
            bench.stop_and_release(name, cfile, out)
    for what, xs in times.items():
        print(f"{what:>22}: median {statistics.median(xs):.3f} s  ({', '.join(f'{x:.3f}' for x in xs)})")
    print(f"{'ratio to pdsh':>22}: {statistics.median(a / b for a, b in zip(times['corral ps'], times['pdsh'])):.2f}")
    stats = pstats.Stats(profile, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())

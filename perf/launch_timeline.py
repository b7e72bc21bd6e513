"""When each step of a launch happens, on simulated nodes, with pdsh's launch beside it.

``corral -v launch``'s every line is stamped with the seconds since the command started, then the time
when every rank was past ``init_process_group``.

The same job, nodes and measure as ``perf/scale_bench.py`` (its ``Bench``); ``-v`` logs each ssh command
and each node's tmux step, so the stamps show how long the interpreter takes before the first ssh and
how long preflight and the start take before the ranks begin; then ``pdsh`` starts the same job for
comparison (its command's time bounds when its tmux sessions started). Run as root from the repository root:

    python -m perf.launch_timeline --nodes 4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from perf import scale_bench as sb


def timeline(bench: sb.Bench, n: int) -> list[str]:
    """The stamped lines of one ``corral -v launch`` on ``n`` nodes; the job is stopped and gone after it."""
    name, cfile, jfile, out = bench.rank_job(n, "t")
    argv = [sys.executable, "-m", "launcher.cli", "-v", "launch", str(jfile), "-c", str(cfile)]
    t0 = time.time()
    proc = subprocess.Popen(argv, cwd=sb.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = [f"{time.time() - t0:7.3f}  {line.rstrip()}" for line in proc.stderr]
    code = proc.wait()
    lines.append(f"{time.time() - t0:7.3f}  (corral launch exited {code})")
    if code == 0:
        lines.append(f"{sb.ready_time(out, n) - t0:7.3f}  (every rank past init_process_group)")
    bench.stop_and_release(name, cfile, out)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4, help="simulated nodes, one rank each (default 4)")
    parser.add_argument("--width", type=int, default=160, help="cut each line to this many characters")
    args = parser.parse_args(argv)
    from tests.infra.simcluster import SimCluster

    with SimCluster(args.nodes) as sim:
        work = Path(sim.run_dir) / "timeline"
        work.mkdir()
        bench = sb.Bench(sim, work, sys.prefix)
        for line in timeline(bench, args.nodes):
            print(line[: args.width], flush=True)
        pdsh = bench.pdsh(args.nodes)
        print(
            f"pdsh -f {sb.FANOUT}: every tmux session started within {pdsh['command_s']:.3f} s (its command's time), ranks ready after {pdsh['launch_s']:.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

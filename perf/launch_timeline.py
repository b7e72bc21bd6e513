"""When each step of a launch happens, on simulated nodes, with pdsh's launch beside it.

``corral -v launch``'s every line is stamped with the seconds since the command started, then the time
when every rank was past ``init_process_group``.

The same job, nodes and measure as ``perf/scale_bench.py`` (its ``Bench``); ``-v`` logs each ssh command
and each node's tmux step, so the stamps show how long the interpreter takes before the first ssh and
how long preflight and the start take before the ranks begin; then ``pdsh`` starts the same job for
comparison (its command's time bounds when its tmux sessions started).

``--reps N`` then measures, N times in a shuffled order, the one part of a launch that is the launcher's
alone: from the command's start until the last node's torchrun process was forked (its start time in
``/proc``, 10 ms ticks), for corral and for pdsh starting the same line; each job is stopped at once.
``--also-root DIR`` adds another checkout's corral (e.g. a ``git worktree`` of an earlier commit) to
the comparison, run with this interpreter. Run as root from the repository root:

    python -m perf.launch_timeline --nodes 4
    python -m perf.launch_timeline --nodes 8 --reps 10 --also-root /var/tmp/before
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
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


def forked_at(marker: str, n: int, since: float, timeout: float = 60) -> float:
    """Seconds from ``since`` (``/proc/uptime``) until the last of ``n`` torchrun processes whose argv holds
    ``marker`` was forked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        starts = [start for start, argv in _processes(marker) if b"torchrun" in argv]
        if len(starts) >= n:
            return max(starts) - since
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {n} torchrun processes with {marker} within {timeout}s")


def _processes(marker: str) -> list[tuple[float, bytes]]:
    """(start time since boot, argv) of every process whose argv holds ``marker``."""
    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for pid in sb.processes_with(marker.encode()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if marker.encode() in argv:  # not only in its environment
            found.append((int(stat[stat.rindex(")") + 2 :].split()[19]) / tick, argv))
    return found


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def corral_forked(bench: sb.Bench, n: int, cli: list[str]) -> float:
    name, cfile, jfile, out = bench.rank_job(n, "f")
    since = _uptime()
    _, code, _ = sb.timed([*cli, "launch", str(jfile), "-c", str(cfile)])
    if code != 0:
        raise RuntimeError(f"corral launch ({shlex.join(cli[:3])}) failed")
    took = forked_at(str(out), n, since)
    bench.stop_and_release(name, cfile, out)
    return took


def pdsh_forked(bench: sb.Bench, n: int) -> float:
    """``Bench.pdsh``'s launch line, stopped as soon as every torchrun is there."""
    name, out, pdsh, env, start = bench.pdsh_job(n)
    since = _uptime()
    sb.timed(start, env=env)
    took = forked_at(str(out), n, since)
    sb.timed([*pdsh, "tmux", "kill-session", "-t", name], env=env)
    sb.wait_gone(name.encode())
    return took


def compare(bench: sb.Bench, n: int, reps: int, also_root: Path | None, seed: int) -> None:
    clis = {"corral": bench.cli}
    if also_root is not None:
        clis[f"corral@{also_root}"] = sb.checkout_cli(also_root)
    kinds = [*clis, "pdsh"]
    got: dict[str, list[float]] = {k: [] for k in kinds}
    rng = random.Random(seed)
    for rep in range(reps):
        order = rng.sample(kinds, len(kinds))
        for kind in order:
            time.sleep(1.0)  # the previous job's teardown is over
            got[kind].append(pdsh_forked(bench, n) if kind == "pdsh" else corral_forked(bench, n, clis[kind]))
        print(f"rep {rep}: " + ", ".join(f"{k} {got[k][-1]:.2f} s" for k in kinds), flush=True)
    print(f"last torchrun forked, {n} nodes, median of {reps} (min-max):")
    for k in kinds:
        print(f"  {k}: {statistics.median(got[k]):.3f} s ({min(got[k]):.2f}-{max(got[k]):.2f})")
    for k in kinds[1:]:
        diffs = [a - b for a, b in zip(got["corral"], got[k])]
        print(f"  corral - {k}, paired median: {statistics.median(diffs):+.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4, help="simulated nodes, one rank each (default 4)")
    parser.add_argument("--width", type=int, default=160, help="cut each line to this many characters")
    parser.add_argument("--reps", type=int, default=0, help="then compare when the last torchrun was forked, N times")
    parser.add_argument("--also-root", type=Path, help="another checkout whose corral joins the comparison")
    parser.add_argument("--seed", type=int, default=1, help="the comparison's order (default 1)")
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
        if args.reps:
            compare(bench, args.nodes, args.reps, args.also_root, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

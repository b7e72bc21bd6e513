"""Launch-to-all-ranks-initialised latency: ``corral launch`` vs a plain ssh+tmux loop.

For 1, 2, 4 and 8 simulated nodes (one simulated cluster, node subsets), in the same run:

* corral: ``python -m launcher.cli launch JOB -c CLUSTER`` as a subprocess (what a user types:
  interpreter start, preflight on every node, plan, tmux start on every node);
* baseline: a plain loop ``ssh HOST tmux new-session -d 'cd WORKDIR && . VENV/bin/activate &&
  torchrun ...'`` over the nodes, one after the other.

Both start the same worker (``launch_latency_worker.py``, 1 process per node), which writes the
wall-clock time at which its process group is initialised. Latency = latest of those times
minus the command's start.

Each simulated node gets its own copy-on-write home (``SimCluster(private_home=True)``), as
separate machines have. With one shared home, a login script that takes a lock under $HOME
(here ``pyenv init``, whose ``rehash`` retries a lock file every 0.1 s) serializes parallel
logins to different nodes, which only the parallel fan-out pays; ``--shared-home`` measures that
setup. Run as root from the repository root:

    python -m perf.launch_latency --sizes 1 2 4 8 --reps 2 --json docs/results/launch-latency.json

``--json FILE`` appends the run, dated, to that measurement file (perf/results_log.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from perf import results_log

REPO = Path(__file__).resolve().parents[1]
WORKER = "perf/launch_latency_worker.py"
MEASUREMENT = (
    "corral launch vs a plain ssh + tmux new-session loop over the nodes, each until every rank has initialised "
    "its process group; 1-8 simulated nodes, interleaved repetitions"
)


def wait_ready(out: Path, world: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(out.glob("ready-*"))
        if len(files) == world:
            return max(float(p.read_text()) for p in files)
        time.sleep(0.05)
    raise RuntimeError(f"only {len(list(out.glob('ready-*')))} of {world} ranks initialised within {timeout}s in {out}")


def wait_done(out: Path, world: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(list(out.glob("done-*"))) < world:
        time.sleep(0.1)


def wait_exited(files: list[Path], timeout: float = 120) -> None:
    """Until every node's command has exited (its exit file exists): a job's teardown (torchrun's
    exit barrier, interpreter shutdown) burns CPU for seconds after the ranks are done, and must
    not be charged to the next measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(f.exists() for f in files):
        time.sleep(0.1)


def busy_cpu_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_busy: float = 0.15, window: float = 0.5, timeout: float = 30) -> float:
    """Until the machine's busy fraction over ``window`` s is below ``max_busy`` (or timeout);
    returns the last fraction, recorded with each measurement."""
    deadline = time.monotonic() + timeout
    cores = os.cpu_count() or 1
    while True:
        b0 = busy_cpu_seconds()
        time.sleep(window)
        frac = (busy_cpu_seconds() - b0) / (window * cores)
        if frac < max_busy or time.monotonic() > deadline:
            return frac


def run_corral(sim, n: int, work: Path, venv: str) -> float:
    import yaml

    name = f"lat{n}-{uuid.uuid4().hex[:6]}"
    out = work / name
    out.mkdir()
    cfg = sim.cluster_config(workdir=REPO, venv=venv)
    cfg["nodes"] = cfg["nodes"][:n]
    cfile = work / f"{name}-cluster.yaml"
    cfile.write_text(yaml.safe_dump(cfg))
    jfile = work / f"{name}-job.yaml"
    jfile.write_text(yaml.safe_dump({"name": name, "script": WORKER, "args": [str(out)], "nproc_per_node": 1}))
    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "launcher.cli", "-q", "launch", str(jfile), "-c", str(cfile)],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ready = wait_ready(out, n)
    wait_done(out, n)
    runs = Path(cfg["storage"]["runs"]) / name / "nodes"
    wait_exited([runs / node.hostname / "exit_code" for node in sim.nodes[:n]])
    return ready - t0


def plain_torchrun(n: int, endpoint: str, name: str, script_args: list[str]) -> list[str]:
    """torchrun as a plain launcher types it: ``n`` nodes of 1 process, c10d rendezvous at ``endpoint``."""
    return [
        "torchrun",
        "--nnodes",
        str(n),
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        name,
        *script_args,
    ]


def baseline_tmux_commands(sim, n: int, name: str, out: Path, venv: str, port: int) -> list[list[str]]:
    """Per node, the baseline's ``tmux new-session``: cd, activate the venv, plain torchrun; after
    torchrun ends (not timed) an exit marker, so the next run waits for this one's teardown."""
    torchrun = plain_torchrun(n, f"{sim.nodes[0].addr}:{port}", name, [WORKER, str(out)])
    inner = f"cd {shlex.quote(str(REPO))} && . {shlex.quote(venv)}/bin/activate && {shlex.join(torchrun)}"
    return [
        ["tmux", "new-session", "-d", "-s", name, f"{inner}; touch {shlex.quote(str(out / f'exit-{i}'))}"]
        for i in range(n)
    ]


def wait_baseline(out: Path, n: int) -> float:
    """The time every rank was ready, once the baseline's job has fully exited."""
    ready = wait_ready(out, n)
    wait_done(out, n)
    wait_exited([out / f"exit-{i}" for i in range(n)])
    return ready


def run_baseline(sim, n: int, work: Path, venv: str, port: int) -> float:
    name = f"base{n}-{uuid.uuid4().hex[:6]}"
    out = work / name
    out.mkdir()
    commands = baseline_tmux_commands(sim, n, name, out, venv, port)
    t0 = time.time()
    for node, command in zip(sim.nodes[:n], commands):
        subprocess.run(sim.ssh_argv(node, command), check=True)
    return wait_baseline(out, n) - t0


def growth_ci(small: list[float], large: list[float], *, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of median(large) - median(small): the paired overheads (corral
    minus baseline, per repetition) at two sizes, resampled independently."""
    rng = random.Random(seed)
    stats = sorted(
        statistics.median(rng.choices(large, k=len(large))) - statistics.median(rng.choices(small, k=len(small)))
        for _ in range(resamples)
    )
    return stats[int(0.025 * (resamples - 1))], stats[int(0.975 * (resamples - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="measurement file to append this run to")
    results_log.add_conditions_argument(parser)
    parser.add_argument(
        "--shared-home",
        action="store_true",
        help="all simulated nodes share the host's home (one lock for every login script)",
    )
    args = parser.parse_args(argv)
    from tests.infra.simcluster import SimCluster

    venv = sys.prefix
    rows = []
    with SimCluster(max(args.sizes), private_home=not args.shared_home) as sim:
        work = Path(sim.run_dir) / "latency"
        work.mkdir()
        port = 29600
        for n in args.sizes:
            corral, base, quiet = [], [], []
            for rep in range(args.reps):  # interleaved, order alternating, each from a quiet machine
                for kind in ("baseline", "corral") if rep % 2 == 0 else ("corral", "baseline"):
                    quiet.append(wait_quiet())
                    if kind == "baseline":
                        port += 1
                        base.append(run_baseline(sim, n, work, venv, port))
                    else:
                        corral.append(run_corral(sim, n, work, venv))
            row = {
                "nodes": n,
                "corral_s": statistics.median(corral),
                "baseline_s": statistics.median(base),
                "corral_all": corral,
                "baseline_all": base,
                "busy_fraction_before": quiet,
            }
            diffs = [c - b for c, b in zip(corral, base)]
            row["paired_overheads_s"] = diffs
            row["paired_overhead_median_s"] = statistics.median(diffs)
            row["ratio"] = row["corral_s"] / row["baseline_s"]
            row["overhead_s"] = row["corral_s"] - row["baseline_s"]
            rows.append(row)
            print(
                f"{n} node(s): corral {row['corral_s']:.2f} s, baseline {row['baseline_s']:.2f} s, "
                f"ratio {row['ratio']:.2f}, overhead {row['overhead_s']:+.2f} s",
                flush=True,
            )
    by = {r["nodes"]: r for r in rows}
    verdict = {"max_ratio": max(r["ratio"] for r in rows)}
    if 2 in by and 8 in by:
        o2, o8 = by[2]["overhead_s"], by[8]["overhead_s"]
        verdict["overhead_8_within_overhead_2_plus_20pct"] = o8 <= o2 + 0.2 * abs(o2)
        p2, p8 = by[2]["paired_overheads_s"], by[8]["paired_overheads_s"]
        verdict["paired_growth_2_to_8_median_s"] = statistics.median(p8) - statistics.median(p2)
        verdict["paired_growth_2_to_8_ci95_s"] = growth_ci(p2, p8)
    home = "one shared home" if args.shared_home else "a private home per node"
    result = {
        "machine": f"2 cores, no GPU, simulated nodes (network namespaces, {home})",
        "rows": rows,
        "verdict": verdict,
    }
    print(json.dumps(verdict))
    if args.json:
        results_log.append_run(
            args.json,
            result,
            measurement=MEASUREMENT,
            script="perf/launch_latency.py",
            command=results_log.current_command("perf.launch_latency", argv),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

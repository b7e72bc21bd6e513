"""Slurm launch latency and sweep overhead, on a real Slurm cluster built here (tests/infra/slurmcluster.py).

1. Submit to all ranks initialised, for a 2-node x 1-process job: ``corral launch`` (through
   ``launcher.api``, preflight included, as a user runs it) against a hand-written sbatch script whose
   srun runs the same torchrun with the same worker, in the same run on the same cluster, the two
   interleaved (order alternating per repetition). The worker is perf/launch_latency_worker.py:
   each rank writes the time its process group is initialised. Each measurement starts after the
   previous job has left Slurm.
2. The sweep controller's own cost per trial: ``LaunchBackend.launch`` (submission, no preflight:
   the controller preflights a slot once) plus one ``poll`` of a queued trial.

    python -m perf.slurm_latency --reps 5 --out docs/results/slurm-launch-latency.json   # appends a dated run

Needs root (network namespaces) and Debian's slurmctld, slurmd, slurm-client and munge.
"""

from __future__ import annotations

import argparse
import json
import os
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


def hand_script(out_dir: Path, venv: Path, nnodes: int) -> str:
    """The baseline: what a person writes by hand to run the same torchrun on Slurm."""
    torchrun = (
        f"torchrun --nnodes $SLURM_NNODES --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint $first:$port "
        f"--rdzv-id hand-$SLURM_JOB_ID {WORKER} {shlex.quote(str(out_dir))}"
    )
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --nodes={nnodes}",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --output={out_dir}/slurm-%j.out",
            f"cd {shlex.quote(str(REPO))}",
            f"source {shlex.quote(str(venv / 'bin' / 'activate'))}",
            'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            "port=$(python -c 'import socket; s=socket.socket(); s.bind((\"\", 0)); print(s.getsockname()[1])')",
            "export first port",
            f"srun bash -c {shlex.quote(torchrun)}",
            "",
        ]
    )


def wait_ready(out_dir: Path, ranks: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(out_dir.glob("ready-*"))
        if len(files) == ranks:
            return max(float(f.read_text()) for f in files)
        time.sleep(0.05)
    logs = "".join(f.read_text(errors="replace")[-2000:] for f in out_dir.glob("slurm-*.out"))
    raise RuntimeError(f"ranks not ready in {out_dir} after {timeout:g}s: {logs}")


def wait_queue_empty(env: dict[str, str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env).stdout.strip():
            return
        time.sleep(0.2)
    raise RuntimeError("jobs still queued")


def measure_corral(cluster, work: Path, nnodes: int) -> float:
    from launcher import api
    from launcher.config import JobConfig

    name = f"lat-{uuid.uuid4().hex[:6]}"
    out = work / name
    out.mkdir()
    job = JobConfig.model_validate(
        {"name": name, "script": WORKER, "args": [str(out)], "nnodes": nnodes, "nproc_per_node": 1}
    )
    t0 = time.time()
    api.launch(job, cluster, base_dir=str(REPO))
    return wait_ready(out, nnodes) - t0


def measure_hand(env: dict[str, str], work: Path, venv: Path, nnodes: int) -> float:
    out = work / f"hand-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    script = out / "job.sbatch"
    script.write_text(hand_script(out, venv, nnodes))
    t0 = time.time()
    subprocess.run(["sbatch", "--parsable", str(script)], check=True, capture_output=True, env=env)
    return wait_ready(out, nnodes) - t0


def measure_sweep_overhead(cluster, work: Path, trials: int) -> list[float]:
    """Per trial: LaunchBackend.launch + one poll, the controller's own work for a trial."""
    from launcher.config import JobConfig
    from launcher.sweep.backend import LaunchBackend

    backend = LaunchBackend(cluster)
    out = []
    for i in range(trials):
        name = f"ovh-{uuid.uuid4().hex[:6]}"
        job = JobConfig.model_validate(
            {"name": name, "script": "tests/sweep_trial.py", "args": ["--lr", "0.1", "--sleep", "0.1"]}
        )
        t0 = time.perf_counter()
        backend.launch(job, [f"slot-{i}"], plain=True, preflight=False)
        backend.poll(name)
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--nnodes", type=int, default=2)
    p.add_argument("--sweep-trials", type=int, default=8)
    p.add_argument("--out", type=Path, default=None, help="measurement file to append this run to")
    results_log.add_conditions_argument(p)
    args = p.parse_args(argv)
    from launcher.config import ClusterConfig
    from tests.infra.slurmcluster import SlurmCluster

    venv = Path(sys.prefix)
    with SlurmCluster(args.nnodes) as sc:
        os.environ["SLURM_CONF"] = str(sc.conf_path)
        env = sc.env()
        work = sc.sim.shared_dir / "latency"
        work.mkdir(parents=True)
        cluster = ClusterConfig.model_validate(sc.cluster_config(workdir=REPO, venv=venv))
        corral, hand = [], []
        for rep in range(args.reps):
            order = ("corral", "hand") if rep % 2 == 0 else ("hand", "corral")
            for which in order:
                wait_queue_empty(env)
                t = (
                    measure_corral(cluster, work, args.nnodes)
                    if which == "corral"
                    else measure_hand(env, work, venv, args.nnodes)
                )
                (corral if which == "corral" else hand).append(t)
                print(f"rep {rep} {which}: {t:.2f} s", flush=True)
        wait_queue_empty(env)
        overhead = measure_sweep_overhead(cluster, work, args.sweep_trials)
        wait_queue_empty(env)
    ratios = [c / h for c, h in zip(corral, hand)]
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m perf.slurm_latency " + " ".join(argv if argv is not None else sys.argv[1:]),
        "nnodes": args.nnodes,
        "reps": args.reps,
        "corral_s": corral,
        "hand_s": hand,
        "ratio_per_rep": ratios,
        "median_corral_s": statistics.median(corral),
        "median_hand_s": statistics.median(hand),
        "median_ratio": statistics.median(ratios),
        "sweep_overhead_per_trial_s": overhead,
        "median_sweep_overhead_s": statistics.median(overhead),
        "note": "2 shared cores, other test suites running at the same time",
    }
    print(json.dumps({k: v for k, v in result.items() if k.startswith("median")}, indent=2))
    if args.out:
        results_log.append_run(
            args.out,
            result,
            measurement="corral launch on a real Slurm cluster against a hand-written sbatch script, submit to all ranks initialised",
            script="perf/slurm_latency.py",
            command=results_log.current_command("perf.slurm_latency", argv),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

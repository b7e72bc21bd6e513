"""Launch-to-all-ranks-initialised of a 3-node container job: ``corral launch`` vs a plain loop of
``ssh NODE tmux new-session -d 'docker run ... torchrun ...'``, in the same run, interleaved.

Setup: a 3-node simulated cluster with a Docker engine per node (``tests/infra/simdocker.py``) and the
test image loaded in each. Both ways run the launch-latency worker (it records when its process
group is initialised) under torchrun, 2 processes per node, inside one container per node with
``--network host``:

* corral: ``python -m launcher.cli launch JOB -c CLUSTER`` as a subprocess, the job carrying a
  ``container`` section (preflight, container facts and checks on every node, plan, tmux start);
* baseline: for each node in turn, ``ssh NODE tmux new-session -d 'docker run --rm --network host
  --ipc host --mount ... IMAGE torchrun ...'``.

Latency = the latest rank's ready time minus the command's start. Each measurement waits until the
previous job has exited (its containers removed). Run as root from the repository root:

    python -m perf.container_launch --reps 3 --json docs/results/container-launch-latency.json   # appends a dated run
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
NPROC = 2


WORKER = "perf/launch_latency_worker.py"
"""The launch-latency benchmark's worker (writes its ready time), relative to the repository."""


def wait_files(out: Path, prefix: str, count: int, timeout: float = 300) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(out.glob(f"{prefix}-*"))
        if len(files) >= count:
            return files
        time.sleep(0.05)
    raise RuntimeError(
        f"only {len(list(out.glob(prefix + '-*')))} of {count} {prefix} files within {timeout}s in {out}"
    )


def ready_time(out: Path, world: int) -> float:
    return max(float(p.read_text()) for p in wait_files(out, "ready", world))


def container_section(image: str, memlock) -> dict:
    from tests.infra.docker_fixtures import python_mounts

    return {"image": image, "mounts": python_mounts(), "ulimits": {"memlock": memlock}}


def run_corral(sim, engines, work: Path, image: str, memlock) -> float:
    import yaml

    from launcher import api
    from launcher.config import ClusterConfig

    name = f"ctrlat-{uuid.uuid4().hex[:6]}"
    cfg = sim.cluster_config(workdir=REPO)
    out = Path(cfg["storage"]["runs"]) / name  # the job's run dir: bound into its containers
    cfile = work / f"{name}-cluster.yaml"
    cfile.write_text(yaml.safe_dump(cfg))
    jfile = work / f"{name}-job.yaml"
    jfile.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "script": WORKER,
                "args": [str(out)],
                "nproc_per_node": NPROC,
                "container": container_section(image, memlock),
            }
        )
    )
    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "launcher.cli", "-q", "launch", str(jfile), "-c", str(cfile)],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ready = ready_time(out, NPROC * len(sim.nodes))
    cluster = ClusterConfig.model_validate(cfg)
    api.wait(name, cluster, timeout=300)
    api.stop(name, cluster, timeout=5)  # removes the exited containers
    return ready - t0


def baseline_commands(sim, name: str, out: Path, image: str, port: int) -> list[list[str]]:
    from tests.infra.docker_fixtures import python_mounts

    venv = sys.prefix
    binds = [(str(REPO), False), (venv, True), (str(out), False)] + [(m["source"], True) for m in python_mounts()]
    mounts = [
        a
        for src, ro in binds
        for a in ("--mount", f"type=bind,source={src},target={src}" + (",readonly" if ro else ""))
    ]
    commands = []
    for i in range(len(sim.nodes)):
        torchrun = [
            "torchrun",
            "--nnodes",
            str(len(sim.nodes)),
            "--nproc-per-node",
            str(NPROC),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"{sim.nodes[0].addr}:{port}",
            "--rdzv-id",
            name,
            WORKER,
            str(out),
        ]
        docker = [
            "docker",
            "run",
            "--rm",
            "--name",
            f"{name}-{i}",
            "--network",
            "host",
            "--ipc",
            "host",
            *mounts,
            "--workdir",
            str(REPO),
            "--env",
            f"PATH={venv}/bin:/usr/bin:/bin",
            image,
            *torchrun,
        ]
        commands.append(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                name,
                f"{shlex.join(docker)}; touch {shlex.quote(str(out / f'exit-{i}'))}",
            ]
        )
    return commands


def run_baseline(sim, work: Path, image: str, port: int) -> float:
    name = f"ctrbase-{uuid.uuid4().hex[:6]}"
    out = work / name
    out.mkdir()
    commands = baseline_commands(sim, name, out, image, port)
    t0 = time.time()
    for node, command in zip(sim.nodes, commands):
        subprocess.run(sim.ssh_argv(node, command), check=True)
    ready = ready_time(out, NPROC * len(sim.nodes))
    wait_files(out, "exit", len(sim.nodes))
    return ready - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, help="measurement file to append this run to")
    results_log.add_conditions_argument(ap)
    args = ap.parse_args(argv)
    from launcher.agent.node_agent import rlimits
    from tests.infra.docker_fixtures import TEST_IMAGE, build_test_image
    from tests.infra.simcluster import SimCluster
    from tests.infra.simdocker import NodeEngines

    build_test_image()
    rl = rlimits()
    memlock = "unlimited" if rl["can_raise"] or rl["limits"]["memlock"][1] == -1 else rl["limits"]["memlock"][1]
    times: dict[str, list[float]] = {"corral": [], "baseline": []}
    with SimCluster(3) as sim, NodeEngines(sim, [TEST_IMAGE]) as engines:
        work = Path(sim.run_dir) / "perf"
        work.mkdir()
        for rep in range(args.reps):
            for way in ("corral", "baseline") if rep % 2 == 0 else ("baseline", "corral"):
                t = (
                    run_corral(sim, engines, work, TEST_IMAGE, memlock)
                    if way == "corral"
                    else run_baseline(sim, work, TEST_IMAGE, 29600 + rep)
                )
                times[way].append(t)
                print(f"rep {rep} {way}: {t:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nodes": 3,
        "nproc_per_node": NPROC,
        "reps": args.reps,
        "command": f"python -m perf.container_launch --reps {args.reps}",
        "load_avg_1m": os.getloadavg()[0],
        "median_s": med,
        "ratio_corral_over_baseline": med["corral"] / med["baseline"],
        "paired_ratios": [c / b for c, b in zip(times["corral"], times["baseline"])],
        "times_s": times,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        results_log.append_run(
            args.json,
            out,
            measurement="a container job launch (3 simulated nodes with an engine each) against a plain ssh + tmux + docker run loop",
            script="perf/container_launch.py",
            command=results_log.current_command("perf.container_launch", argv),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

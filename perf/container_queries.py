"""``ps`` of a container job on 3 simulated nodes: the docker CLI through corral's node command choke
point vs the Docker SDK (``docker.DockerClient(base_url="ssh://...", use_ssh_client=True)``).

Setup: a 3-node simulated cluster with a Docker engine per node (``tests/infra/simdocker.py``), one running
container of the job per node. Each repetition times both ways, in alternating order:

* cli: ``container.runtime.container_states`` on every node at once (one ``docker ps`` over the
  node's ssh ControlMaster connection, ``launcher.tools.ssh.run``);
* sdk: per node, a new ``DockerClient`` (what a short ``corral ps`` process would make), API version
  negotiated, ``containers.list(all=True, sparse=True, filters=label)``, closed; every node at once.
  The SDK's ssh transport runs ``ssh -l USER -- HOST docker system dial-stdio`` and takes no ssh
  options, so an ``ssh`` wrapper first on PATH adds the cluster's (config file, ControlMaster).

Run as root from the repository root:

    python -m perf.container_queries --reps 15 --json docs/results/container-ps-cli-vs-sdk.json   # appends a dated run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from perf import results_log

REPO = Path(__file__).resolve().parents[1]


def sdk_states(hosts: list[str], job: str) -> list[dict]:
    import docker

    def one(host: str) -> list[dict]:
        client = docker.DockerClient(base_url=f"ssh://root@{host}", use_ssh_client=True)
        try:
            rows = client.containers.list(all=True, sparse=True, filters={"label": f"corral.job={job}"})
            return [
                {
                    "name": c.attrs["Names"][0].lstrip("/"),
                    "state": c.attrs["State"],
                    "node": c.attrs["Labels"].get("corral.node"),
                }
                for c in rows
            ]
        finally:
            client.close()

    with ThreadPoolExecutor(len(hosts)) as pool:
        return [r for rows in pool.map(one, hosts) for r in rows]


def cli_states(cluster, job: str) -> list[dict]:
    from container.docker import Docker
    from container.runtime import container_states, on_every_node

    return [
        r for rows in on_every_node(lambda n: container_states(Docker.on(cluster, n), job), cluster.nodes) for r in rows
    ]


def ssh_wrapper(sim, where: Path) -> None:
    """``ssh`` first on PATH for the SDK: the cluster's config file and a ControlMaster per host."""
    where.mkdir(parents=True, exist_ok=True)
    script = where / "ssh"
    script.write_text(
        "#!/bin/sh\n"
        f"exec /usr/bin/ssh -F {sim.ssh_config_path} -o ControlMaster=auto -o 'ControlPath={where}/cm-%C' -o ControlPersist=60 \"$@\"\n"
    )
    script.chmod(0o755)
    os.environ["PATH"] = f"{where}:{os.environ['PATH']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", type=Path, help="measurement file to append this run to")
    results_log.add_conditions_argument(ap)
    args = ap.parse_args(argv)
    from launcher.config import ClusterConfig
    from launcher.tools import ssh
    from tests.infra.docker_fixtures import TEST_IMAGE, build_test_image, python_mounts
    from tests.infra.simcluster import SimCluster
    from tests.infra.simdocker import NodeEngines

    build_test_image()
    job = f"psbench-{uuid.uuid4().hex[:6]}"
    py = python_mounts()[0]["source"]
    with SimCluster(3) as sim, NodeEngines(sim, [TEST_IMAGE]) as engines:
        cluster = ClusterConfig.model_validate(sim.cluster_config(workdir=REPO))
        for n in sim.nodes:
            engines.docker(
                n,
                [
                    "run",
                    "-d",
                    "--name",
                    f"corral-{job}-{n.hostname}",
                    "--network",
                    "host",
                    "--label",
                    f"corral.job={job}",
                    "--label",
                    f"corral.node={n.hostname}",
                    "--mount",
                    f"type=bind,source={py},target={py},readonly",
                    TEST_IMAGE,
                    f"{py}/bin/python3",
                    "-c",
                    "import time; time.sleep(3600)",
                ],
            )
        ssh_wrapper(sim, Path(sim.run_dir) / "sdk-ssh")
        hosts = [n.hostname for n in sim.nodes]
        ways = {"cli": lambda: cli_states(cluster, job), "sdk": lambda: sdk_states(hosts, job)}
        for fn in ways.values():  # warm: ControlMaster connections, imports
            rows = fn()
            assert sorted(r["state"] for r in rows) == ["running"] * 3, rows
        times: dict[str, list[float]] = {k: [] for k in ways}
        for rep in range(args.reps):
            for k in ("cli", "sdk") if rep % 2 == 0 else ("sdk", "cli"):
                t0 = time.perf_counter()
                ways[k]()
                times[k].append(time.perf_counter() - t0)
        ssh.close_masters(cluster.ssh, cluster.nodes)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nodes": 3,
        "reps": args.reps,
        "command": f"python -m perf.container_queries --reps {args.reps}",
        "load_avg_1m": os.getloadavg()[0],
        "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "max_s": {k: max(v) for k, v in times.items()},
        "sdk_over_cli": med["sdk"] / med["cli"],
        "times_s": times,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "times_s"}, indent=2))
    if args.json:
        results_log.append_run(
            args.json,
            out,
            measurement="corral container ps through the docker CLI over ssh against the Docker SDK, 3 simulated nodes",
            script="perf/container_queries.py",
            command=results_log.current_command("perf.container_queries", argv),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

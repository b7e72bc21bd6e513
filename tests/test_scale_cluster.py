"""32 simulated nodes (marker ``long``: ``make test-long``, its own step of .ci/run).

One cluster of 32 nodes (netns + sshd each), one tiny rank per node (tests/workers/scale_rank.py):

* launch -> every rank in the process group -> ``ps`` folds 32 nodes into "32 running"; with one
  node's sshd stopped, ``ps`` still answers for the 31 others and names the one -> ``stop`` prints
  one line, and no process of the job is left on any node.
* one node's sshd stopped before a launch: preflight names that node, nothing is launched.

Memory: 32 torchrun agents plus ranks take ~13 GiB; the test refuses to start with less free.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import yaml

from launcher.cli import main as cli_main
from launcher.config import ClusterConfig
from launcher.tools import ssh
from tests.conftest import MISSING
from tests.infra.simcluster import SimCluster
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.long, pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
NODES = 32
NEEDED_GIB = 14
RANK = "tests/workers/scale_rank.py"


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


@pytest.fixture(scope="module")
def big():
    if available_gib() < NEEDED_GIB:
        pytest.skip(f"{MISSING}{NEEDED_GIB} GiB of free memory for 32 nodes (have {available_gib():.1f})")
    with SimCluster(NODES) as cluster:
        cfg = cluster.cluster_config(workdir=REPO)
        # The simulated nodes share this machine's home, and a login script there may take a lock
        # (pyenv init's rehash, on the development machines): logins to different nodes then wait
        # for each other, which real nodes never do. A window of 8 keeps each node's deadline, which
        # starts with its turn, clear of that queue on a loaded machine (docs/SCALE.md).
        cfg["ssh"]["fanout"] = 8
        cfile = cluster.layout.path("cluster.yaml")
        cfile.write_text(yaml.safe_dump(cfg))
        yield cluster, cfile, cfg
        c = ClusterConfig.model_validate(cfg)
        ssh.close_masters(c.ssh, c.nodes)


def job_file(cluster: SimCluster, name: str, out: Path) -> Path:
    path = cluster.layout.path(f"{name}.yaml")
    path.write_text(yaml.safe_dump({"name": name, "script": RANK, "args": [str(out), "600"], "nproc_per_node": 1}))
    return path


def marked_processes(run_id: str) -> list[int]:
    """Processes anywhere on the machine (the simulated nodes share one PID namespace) carrying this run's id."""
    marker = f"CORRAL_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def sessions_left(cluster: SimCluster, name: str) -> list[str]:
    return [
        n.hostname
        for n in cluster.nodes
        if cluster.exec_in_ns(n, ["tmux", "has-session", "-t", f"=corral-{name}"]).returncode == 0
    ]


def test_launch_ps_stop_at_32_nodes_with_one_node_unreachable_for_ps(big, capsys):
    cluster, cfile, cfg = big
    name = f"scale-{uuid.uuid4().hex[:6]}"
    out = cluster.shared_dir / name
    out.mkdir()
    job = job_file(cluster, name, out)
    run_id = None
    try:
        assert cli_main(["launch", str(job), "-c", str(cfile)]) == 0
        capsys.readouterr()
        wait_for(lambda: len(list(out.glob("ready-*"))) == NODES, 600, "every rank in the process group")
        run_id = json.loads((Path(cfg["storage"]["runs"]) / name / "run.json").read_text())["run_id"]

        assert cli_main(["ps", "-c", str(cfile)]) == 0
        table = capsys.readouterr().out
        line = next(ln for ln in table.splitlines() if ln.split()[:1] == [name])
        assert " 32 " in line and "32 running" in line, table
        assert len(table.strip().splitlines()) == 2  # header + one line for 32 nodes

        down = cluster.nodes[16]
        cluster.stop_sshd(down)
        try:
            # the launch's multiplexing master would carry this ps: sshd's end means nothing to a connection made
            c = ClusterConfig.model_validate(cfg)
            ssh.close_masters(c.ssh, [n for n in c.nodes if n.label == down.hostname])
            assert cli_main(["ps", "-c", str(cfile), "--json"]) == 0
            rows = json.loads(capsys.readouterr().out)
            states = {n["node"]: n["state"] for n in rows[0]["nodes"]}
            assert states.pop(down.hostname) == "unknown"
            assert set(states.values()) == {"running"} and len(states) == NODES - 1
            assert cli_main(["ps", "-c", str(cfile)]) == 0
            table = capsys.readouterr().out
            assert f"31 running, 1 unknown: {down.hostname}" in table, table
            assert f"{name} on {down.hostname}: ssh:" in table and "Connection refused" in table, table
        finally:
            cluster.start_sshd(down)

        (out / "release").write_text("")
        assert cli_main(["stop", name, "-c", str(cfile)]) == 0
        said = capsys.readouterr().out.strip().splitlines()
        assert len(said) == 1 and said[0].startswith(f"stopped {name} on 32 node(s)"), said
        assert sessions_left(cluster, name) == []
        # torchrun's agents leave through their exit barrier: wait for it, then nothing of the run remains
        wait_for(lambda: not marked_processes(run_id), 180, "every process of the run to exit")
    finally:
        (out / "release").write_text("")
        cli_main(["stop", name, "-c", str(cfile), "--timeout", "2"])
        if run_id:
            wait_for(lambda: not marked_processes(run_id), 180, "every process of the run to exit")


def test_preflight_names_the_one_unreachable_node_and_launches_nothing(big, capsys):
    cluster, cfile, cfg = big
    name = f"scale-pf-{uuid.uuid4().hex[:6]}"
    out = cluster.shared_dir / name
    out.mkdir()
    down = cluster.nodes[8]
    cluster.stop_sshd(down)
    try:
        t0 = time.monotonic()
        code = cli_main(["launch", str(job_file(cluster, name, out)), "-c", str(cfile)])
        elapsed = time.monotonic() - t0
        err = capsys.readouterr().err
        assert code == 2
        assert f"{down.hostname}: ssh:" in err and "Connection refused" in err, err
        assert len([ln for ln in err.splitlines() if ": ssh: " in ln]) == 1, err  # the one node, not the 31 others
        assert sessions_left(cluster, name) == []
        assert not list(out.glob("ready-*"))
        # a refused connection is not retried: the answer comes with the other nodes' probes,
        # well inside one connect timeout per node queued behind the window
        assert elapsed < 120, elapsed
    finally:
        cluster.start_sshd(down)

"""Container jobs across simulated nodes: a Docker engine per node, real torchrun, 3 nodes x 2 processes, gloo.

One 3-node cluster with an engine per node (``tests/infra/simdocker.py``) for the module; the test image
is loaded into every engine. Each node's pane runs ``docker run`` against that node's own engine,
so the containers (``--network host``) sit on the nodes' addresses and join one rendezvous.
Tests undo their faults (engines restarted, sockets remounted, mount sources put back).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from launcher import api
from launcher.agent.node_agent import rlimits
from launcher.cli import main as cli_main
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import UserError
from launcher.tools import ssh
from tests.infra.docker_fixtures import TEST_LABEL, python_mounts
from tests.infra.simdocker import NodeEngines
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
RUN_TOKEN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def engines(sim_cluster, test_image):
    with NodeEngines(sim_cluster, [test_image]) as eng:
        yield eng


@pytest.fixture(scope="module")
def cl(sim_cluster, engines) -> ClusterConfig:
    cfg = ClusterConfig.model_validate(sim_cluster.cluster_config(workdir=REPO))
    yield cfg
    ssh.close_masters(cfg.ssh, cfg.nodes)


@pytest.fixture(scope="module")
def cfile(sim_cluster, cl) -> Path:
    """The cluster file, for the CLI."""
    return sim_cluster.write_cluster_config(Path(sim_cluster.run_dir) / "cluster-ctr.yaml", workdir=REPO)


@pytest.fixture
def names(cl, engines):
    """Unique job names; every job named here is stopped (and its containers removed) after the test."""
    made: list[str] = []

    def new(prefix: str) -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:6]}")
        return made[-1]

    yield new
    for name in made:
        try:
            api.stop(name, cl, timeout=2)
        except Exception:  # noqa: BLE001 - never launched, or already gone
            pass
    for node in engines.cluster.nodes:  # what a failed stop may have left
        ids = engines.docker(
            node, ["ps", "-aq", "--filter", f"label={TEST_LABEL}={RUN_TOKEN}"], check=False
        ).stdout.split()
        if ids:
            engines.docker(node, ["rm", "-f", *ids], check=False)


def granted_memlock():
    rl = rlimits()
    hard = rl["limits"]["memlock"][1]
    return "unlimited" if rl["can_raise"] or hard == -1 else hard


def container_section(image: str, **extra) -> dict:
    return {
        "image": image,
        "mounts": python_mounts(),
        "ulimits": {"memlock": granted_memlock()},
        "labels": {TEST_LABEL: RUN_TOKEN},
        **extra,
    }


def ctr_job(
    name: str, image: str, steps: int = 100, step_time: float = 0.0, container: dict | None = None, **extra
) -> JobConfig:
    return JobConfig.model_validate(
        {
            "name": name,
            "script": "examples/train_demo.py",
            "nproc_per_node": 2,
            "args": ["--steps", str(steps), "--step-time", str(step_time), "--plain-sgd"],
            "env": {"PYTHONPATH": str(REPO)},
            "container": container or container_section(image),
            **extra,
        }
    )


def results(handle) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((handle.run_dir / "results").glob("rank*.json"))]


def job_containers(engines, name: str, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Node hostname -> ``name state`` of the job's containers on that node's own engine (``skip``: nodes whose engine is down)."""
    out = {}
    for node in engines.cluster.nodes:
        if node.hostname in skip:
            continue
        rows = engines.docker(
            node, ["ps", "-a", "--filter", f"label=corral.job={name}", "--format", "{{.Names}} {{.State}}"]
        ).stdout
        out[node.hostname] = rows.split("\n")[:-1] if rows else []
    return out


def job_pids(run_id: str, extra: bytes | None = None) -> list[int]:
    """PIDs whose environment carries this run's id (containers' processes included: one host PID space)."""
    marker = f"CORRAL_RUN_ID={run_id}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in env and (extra is None or extra in env):
            found.append(int(p.name))
    return found


def logs_of(handle) -> dict[str, str]:
    return {n.node: Path(n.log_path).read_text() if Path(n.log_path).exists() else "" for n in handle.plan.nodes}


def test_container_job_across_nodes_joins_one_rendezvous(cl, cfile, engines, test_image, names, capsys):
    name = names("ctr")
    handle = api.launch(ctr_job(name, test_image), cl)
    assert all(n.command[:2] == ["docker", "run"] for n in handle.plan.nodes)
    status = handle.wait(timeout=300)
    logs = logs_of(handle)
    assert status.ok, (status.to_json(), {k: v[-2000:] for k, v in logs.items()})
    res = results(handle)
    assert sorted(r["rank"] for r in res) == list(range(6)) and {r["world_size"] for r in res} == {6}, res
    assert {r["node"] for r in res} == {n.node for n in handle.plan.nodes}
    # each node's container ran on that node's own engine (and nowhere else)
    assert job_containers(engines, name) == {n.node: [f"corral-{name}-{n.node} exited"] for n in handle.plan.nodes}
    assert (
        subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=corral.job={name}"], capture_output=True, text=True
        ).stdout
        == ""
    )
    # ps: each node's container state
    os.chdir(REPO)
    assert cli_main(["ps", "-c", str(cfile), "--json"]) == 0
    job = {j["name"]: j for j in json.loads(capsys.readouterr().out)}[name]
    assert [n["detail"] for n in job["nodes"]] == ["container exited 0"] * 3, job
    # logs: every rank's lines
    assert cli_main(["logs", name, "-c", str(cfile), "-n", "400"]) == 0
    out = capsys.readouterr().out
    for rank, node in enumerate(n.node for n in handle.plan.nodes for _ in range(2)):
        assert f"[{node}] [rank{rank}]:" in out, out[-3000:]


def test_container_job_survives_killed_launcher_and_cut_ssh(cl, cfile, engines, test_image, names, sim_cluster):
    name = names("ctrcut")
    jfile = Path(sim_cluster.run_dir) / f"{name}.json"
    jfile.write_text(ctr_job(name, test_image, steps=150, step_time=0.03).model_dump_json(exclude_defaults=True))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "launch", str(jfile), "-c", str(cfile), "--follow"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: b"launched" in launcher.stdout.readline(), 180, "the launch to complete")
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    for node in cl.nodes:  # cut every connection: SIGKILL each ssh ControlMaster
        check = subprocess.run(ssh.control_argv(cl.ssh, node.host, "check"), capture_output=True, text=True)
        if "pid=" in check.stderr:
            os.kill(int(check.stderr.split("pid=")[1].split(")")[0]), signal.SIGKILL)
    status = api.wait(name, cl, timeout=300)
    handle = api.handle(name, cl)
    assert status.ok, (status.to_json(), {k: v[-2000:] for k, v in logs_of(handle).items()})
    assert sorted(r["rank"] for r in results(handle)) == list(range(6))


def test_worker_killed_in_one_container_restarts_from_host_checkpoint(cl, engines, test_image, names):
    name = names("ctrrestart")
    handle = api.launch(ctr_job(name, test_image, steps=300, step_time=0.03, max_restarts=1), cl)
    logs = [Path(n.log_path) for n in handle.plan.nodes]
    wait_for(
        lambda: all(p.exists() and "step 100 loss" in p.read_text() for p in logs), 300, "training to pass step 100"
    )
    victims = job_pids(handle.plan.run_id, b"RANK=3")
    assert len(victims) == 1, victims
    os.kill(victims[0], signal.SIGKILL)
    status = handle.wait(timeout=300)
    assert status.ok, (status.to_json(), {k: v[-2000:] for k, v in logs_of(handle).items()})
    res = results(handle)
    assert sorted(r["rank"] for r in res) == list(range(6)), res
    assert max(r["restart"] for r in res) == 1 and all(r["resumed_from"] >= 51 for r in res), res
    # the checkpoints are on the host path (bind mount), of every rank, and not in any container layer
    ckpt = Path(handle.plan.ckpt_dir)
    assert any(ckpt.rglob("*")), f"no checkpoint under {ckpt}"
    for node in engines.cluster.nodes:
        diff = engines.docker(node, ["diff", f"corral-{name}-{node.hostname}"]).stdout
        inside = [
            ln for ln in diff.splitlines() if f"{ckpt}/" in ln
        ]  # the mount point itself is listed, never what is under it
        assert inside == [], diff


def test_stop_removes_every_container_of_the_job_and_spares_the_neighbour(
    cl, cfile, engines, test_image, names, capsys
):
    a, b = names("ctrvictim"), names("ctrneighbour")
    one = container_section(test_image)
    ha = api.launch(ctr_job(a, test_image, steps=100000, step_time=0.1, container=one, nproc_per_node=1), cl)
    hb = api.launch(ctr_job(b, test_image, steps=100000, step_time=0.1, container=one, nproc_per_node=1), cl)
    wait_for(lambda: all("step 0 loss" in t for t in logs_of(ha).values()), 300, "job A to train")
    assert all(len(v) == 1 and v[0].endswith(" running") for v in job_containers(engines, a).values())
    assert job_pids(ha.plan.run_id)
    os.chdir(REPO)
    assert cli_main(["stop", a, "-c", str(cfile), "--timeout", "5"]) == 0
    capsys.readouterr()
    assert job_containers(engines, a) == {n.hostname: [] for n in engines.cluster.nodes}
    wait_for(lambda: job_pids(ha.plan.run_id) == [], 30, "job A's processes to be gone")
    assert all(len(v) == 1 and v[0].endswith(" running") for v in job_containers(engines, b).values())
    assert len(job_pids(hb.plan.run_id)) >= 6 and api.status(b, cl).running
    api.stop(b, cl, timeout=3)
    assert job_containers(engines, b) == {n.hostname: [] for n in engines.cluster.nodes}


def test_bench_allreduce_in_containers_across_nodes(cl, engines, test_image):
    from benchmarks.allreduce import run as ar
    from launcher.config.job import ContainerConfig

    req = ar.validate(
        cl,
        min_bytes="1K",
        max_bytes="64K",
        factor=8,
        iters=5,
        warmup=1,
        dtype="float32",
        op="sum",
        backend="gloo",
        nproc_per_node=2,
    )
    name = f"ctrbench-{uuid.uuid4().hex[:6]}"
    try:
        result = ar.run(
            req, cl, timeout=300, name=name, container=ContainerConfig.model_validate(container_section(test_image))
        )
        assert result["world_size"] == 6 and result["rows"] and all(int(r["wrong"]) == 0 for r in result["rows"]), (
            result
        )
        assert job_containers(engines, name) == {n.hostname: [] for n in engines.cluster.nodes}, (
            "finished containers removed"
        )
    finally:
        try:
            api.stop(name, cl, timeout=2)
        except Exception:  # noqa: BLE001
            pass


def _expect_refusal(cl, job, engines, sim_cluster, engine_down: tuple[str, ...] = ()) -> str:
    with pytest.raises(UserError) as err:
        api.launch(job, cl)
    assert job_containers(engines, job.name, engine_down) == {
        n.hostname: [] for n in engines.cluster.nodes if n.hostname not in engine_down
    }
    for node in sim_cluster.nodes:  # no tmux session started anywhere
        assert sim_cluster.run(node, ["tmux", "has-session", "-t", f"=corral-{job.name}"]).returncode != 0
    return err.value.message


def test_engine_stopped_on_one_node_is_named_before_anything_starts(cl, engines, test_image, names, sim_cluster):
    n2 = sim_cluster.nodes[1].hostname
    engines.stop_engine(n2)
    try:
        msg = _expect_refusal(cl, ctr_job(names("ctrnoengine"), test_image), engines, sim_cluster, (n2,))
    finally:
        engines.start_engine(n2)
    assert f"node {n2}: Docker is not reachable" in msg and msg.count("node ") == 1, msg


def test_image_missing_on_one_node_is_named_before_anything_starts(cl, engines, test_image, names, sim_cluster):
    n3 = sim_cluster.nodes[2].hostname
    tag = f"corral-test-tagged:{RUN_TOKEN}"
    for node in sim_cluster.nodes:
        engines.docker(node, ["tag", test_image, tag])
    engines.docker(n3, ["rmi", tag])
    try:
        msg = _expect_refusal(
            cl,
            ctr_job(names("ctrnoimage"), test_image, container=container_section(tag, pull="never")),
            engines,
            sim_cluster,
        )
    finally:
        for node in sim_cluster.nodes:
            engines.docker(node, ["rmi", tag], check=False)
    assert "1 container problem(s)" in msg and f"node {n3}: container.image {tag!r} is not present" in msg, msg


def test_mount_source_missing_on_one_node_is_named_before_anything_starts(cl, engines, test_image, names, sim_cluster):
    n3 = sim_cluster.nodes[2].hostname
    parent = Path(sim_cluster.run_dir) / f"data-{RUN_TOKEN}"
    src = parent / "set"
    src.mkdir(parents=True)
    # hidden on node 3 only: an empty tmpfs over its parent in that node's mount namespace
    sim_cluster.exec_in_ns(n3, ["mount", "-t", "tmpfs", "tmpfs", str(parent)], check=True)
    try:
        sec = container_section(test_image)
        sec["mounts"] = sec["mounts"] + [{"source": str(src), "read_only": True}]
        msg = _expect_refusal(cl, ctr_job(names("ctrnomount"), test_image, container=sec), engines, sim_cluster)
    finally:
        sim_cluster.exec_in_ns(n3, ["umount", str(parent)], check=True)
    assert (
        "1 container problem(s)" in msg and f"node {n3}: mount source {src} (extra) does not exist on the node" in msg
    ), msg


def test_infiniband_standins_on_one_node_are_detected_per_node(cl, engines, test_image, names, sim_cluster):
    """Node 1 has a mknod'ed uverbs device, /etc/nccl and /etc/nccl.conf (overlays in its namespaces only):
    its argv passes them in and the job runs; the other nodes' argvs have none. With infiniband: required the
    launch is refused naming the nodes without them (node 1 also gets a stand-in /sys/class/infiniband)."""
    n1, others = sim_cluster.nodes[0].hostname, [n.hostname for n in sim_cluster.nodes[1:]]
    with engines.ib_standins(n1):
        handle = api.launch(ctr_job(names("ctrib"), test_image, steps=20, nproc_per_node=1), cl)
        status = handle.wait(timeout=300)
    assert status.ok, (status.to_json(), {k: v[-2000:] for k, v in logs_of(handle).items()})
    argv = {n.node: n.command for n in handle.plan.nodes}
    assert "/dev/infiniband/uverbs0:/dev/infiniband/uverbs0:rwm" in argv[n1]
    assert "type=bind,source=/etc/nccl.conf,target=/etc/nccl.conf,readonly" in argv[n1]
    assert all("/dev/infiniband" not in " ".join(argv[n]) and "nccl" not in " ".join(argv[n]) for n in others), argv
    with engines.ib_standins(n1, sysfs=True):
        msg = _expect_refusal(
            cl,
            ctr_job(names("ctribreq"), test_image, container=container_section(test_image, infiniband="required")),
            engines,
            sim_cluster,
        )
    assert (
        all(f"node {n}: container.infiniband is 'required' but the node lacks" in msg for n in others) and n1 not in msg
    ), msg

"""The launch path on the simulated cluster: real sshd per node, real tmux, real torchrun/gloo.

One 3-node cluster for the module (tests undo their faults). Jobs are tiny (a few hundred
steps of a 16-parameter model) and most use 1-2 processes per node to keep the 2 shared
cores usable; the training test uses 3 nodes x 2 processes.
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
from launcher.backends.ssh.preflight import run_preflight_sync
from launcher.cli import main as cli_main
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import PreflightFailed
from launcher.tools import ssh
from tests.infra.hostile import HOSTILE
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cl(sim_cluster) -> ClusterConfig:
    cfg = ClusterConfig.model_validate(sim_cluster.cluster_config(workdir=REPO))
    yield cfg
    ssh.close_masters(cfg.ssh, cfg.nodes)


@pytest.fixture
def names(cl):
    """Unique job names; every job named here is stopped after the test, pass or fail."""
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


def train_job(name: str, steps: int = 200, step_time: float = 0.0, **extra) -> JobConfig:
    return JobConfig.model_validate(
        {
            "name": name,
            "script": "examples/train_demo.py",
            "args": ["--steps", str(steps), "--step-time", str(step_time), "--plain-sgd"],
            "env": {"PYTHONPATH": str(REPO)},
            **extra,
        }
    )


def results(handle) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((handle.run_dir / "results").glob("rank*.json"))]


def job_pids(run_id: str, extra: bytes | None = None) -> list[int]:
    """PIDs whose environment carries this run's unique id (the simulated nodes share one PID space)."""
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


def test_tiny_training_finishes_on_every_rank(cl, names):
    name = names("train")
    handle = api.launch(train_job(name), cl)
    assert api.status(name, cl).running or api.status(name, cl).done
    status = handle.wait(timeout=240)
    logs = {n.node: Path(n.log_path).read_text() for n in handle.plan.nodes}
    assert status.ok, (status.to_json(), {k: v[-1500:] for k, v in logs.items()})
    res = results(handle)
    assert sorted(r["rank"] for r in res) == list(range(6)) and all(r["world_size"] == 6 for r in res)
    assert {r["node"] for r in res} == {n.node for n in handle.plan.nodes}
    for node, text in logs.items():
        assert f"[{node}] [rank" in text and "corral: exited with status 0" in text
    assert all(n.state == "exited" and n.exit_code == 0 and n.elapsed_s > 0 for n in status.nodes)


def test_literal_args_and_env_over_ssh(cl, names):
    name = names("inject")
    job = JobConfig.model_validate(
        {"name": name, "script": "tests/workers/echo_env.py", "args": HOSTILE, "env": {"HOSTILE": "\n".join(HOSTILE)}}
    )
    handle = api.launch(job, cl, plain=True)
    assert handle.wait(timeout=60).ok
    for rank, node in enumerate(handle.plan.nodes):
        rec = json.loads((handle.run_dir / f"echo-{node.node}.json").read_text())
        assert rec["argv"] == HOSTILE and rec["env"]["HOSTILE"] == "\n".join(HOSTILE)
        assert rec["env"]["CORRAL_NODE_RANK"] == str(rank)
    assert not list(REPO.glob("PWNED")) and not list(Path(handle.run_dir).rglob("PWNED"))


def test_job_survives_killed_launcher_and_cut_ssh(cl, names, sim_cluster, tmp_path_factory):
    """Job A: its launcher (following the logs) is SIGKILLed with its process group right after
    the launch. Job B: every ssh connection is cut after the launch. Both finish. Two nodes each:
    what is cut is the launcher's side, the same for any number of nodes."""
    a, b = names("killed"), names("cut")
    work = Path(sim_cluster.run_dir) / f"cfg-{a}"
    work.mkdir()
    cfile = sim_cluster.write_cluster_config(work / "cluster.yaml", workdir=REPO)
    jfile = work / "job.yaml"
    jfile.write_text(
        json.dumps(
            {
                "name": a,
                "script": "examples/train_demo.py",
                "nproc_per_node": 1,
                "nnodes": 2,
                "env": {"PYTHONPATH": str(REPO)},
                "args": ["--steps", "150", "--step-time", "0.03", "--plain-sgd"],
            }
        )
    )
    launcher = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "launch", str(jfile), "-c", str(cfile), "--follow"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: b"launched" in launcher.stdout.readline(), 120, "the launch to complete")
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    hb = api.launch(train_job(b, steps=150, step_time=0.03, nproc_per_node=1, nnodes=2), cl)
    # cut every connection: SIGKILL each ssh ControlMaster (the TCP connection drops under sshd)
    for node in cl.nodes:
        check = subprocess.run(ssh.control_argv(cl.ssh, node.host, "check"), capture_output=True, text=True)
        if "pid=" in check.stderr:
            os.kill(int(check.stderr.split("pid=")[1].split(")")[0]), signal.SIGKILL)
    sa = api.wait(a, cl, timeout=240)
    sb = hb.wait(timeout=240)
    assert sa.ok, sa.to_json()
    assert sb.ok, sb.to_json()
    assert len(results(api.handle(a, cl))) == 2 and len(results(hb)) == 2


def test_worker_killed_restarts_with_max_restarts(cl, names):
    """2 nodes x 2 workers, max_restarts 1: one worker SIGKILLed mid-run, torchrun restarts the
    whole group on every node, the training resumes from its last checkpoint and finishes.

    This relies on the plan's TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: with torch's default (one
    store shared across restart attempts) restarted workers could read the dead worker's gloo
    address and fail in init_process_group."""
    name = names("restart")
    handle = api.launch(train_job(name, steps=300, step_time=0.03, max_restarts=1, nproc_per_node=2, nnodes=2), cl)
    logs = [Path(n.log_path) for n in handle.plan.nodes]
    wait_for(
        lambda: all(p.exists() and "step 100 loss" in p.read_text() for p in logs), 240, "training to pass step 100"
    )
    victims = job_pids(handle.plan.run_id, b"RANK=3")
    assert len(victims) == 1, victims
    os.kill(victims[0], signal.SIGKILL)
    try:
        status = handle.wait(timeout=240)
    finally:
        for p in logs:
            print("".join(p.read_text().splitlines(True)[-30:]))  # shown on failure
    assert status.ok, status.to_json()
    res = results(handle)
    assert sorted(r["rank"] for r in res) == list(range(4)), res
    # torchrun counts the restart on the node whose worker died; the other nodes' agents restart
    # their workers for the membership change without counting it
    assert {r["restart"] for r in res if r["node"] == handle.plan.nodes[1].node} == {1}, res
    assert max(r["restart"] for r in res) == 1, res
    # resumed from a checkpoint taken before the kill (every 50 steps), not from scratch
    assert all(r["resumed_from"] >= 51 for r in res), res
    assert sum(p.read_text().count(" ready on cpu") for p in logs) == 8  # 4 ranks, started twice


def test_stop_leaves_nothing_and_spares_the_neighbour(cl, names, capsys):
    a, b = names("victim"), names("neighbour")
    ha = api.launch(train_job(a, steps=100000, step_time=0.1, nproc_per_node=1), cl)
    hb = api.launch(train_job(b, steps=100000, step_time=0.1, nproc_per_node=1), cl)
    wait_for(
        lambda: (
            all("step 0 loss" in Path(n.log_path).read_text() for n in ha.plan.nodes if Path(n.log_path).exists())
            and all(Path(n.log_path).exists() for n in ha.plan.nodes)
        ),
        180,
        "job A to train",
    )
    cfile = Path(ha.run_dir).parent / f"{a}-cluster.json"
    cfile.write_text(json.dumps(cl.model_dump(mode="json")))
    os.chdir(REPO)
    assert cli_main(["ps", "-c", str(cfile), "--json"]) == 0
    jobs = {j["name"]: j for j in json.loads(capsys.readouterr().out)}
    assert [n["state"] for n in jobs[a]["nodes"]] == ["running"] * 3
    assert cli_main(["logs", a, "-c", str(cfile), "-n", "3"]) == 0
    assert f"[{ha.plan.nodes[0].node}]" in capsys.readouterr().out

    assert job_pids(ha.plan.run_id)
    # a timeout well above a slow machine's shutdown: only a torchrun that never exits reaches the SIGKILL
    assert cli_main(["stop", a, "-c", str(cfile), "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    # torchrun ended its workers on one SIGTERM: none needed the SIGKILL (a second signal during its shutdown
    # used to leave it hanging in its log threads until then)
    assert "no process of" in out and "SIGKILL" not in out, out
    assert job_pids(ha.plan.run_id) == []
    assert len(job_pids(hb.plan.run_id)) >= 6  # 3 torchruns + 3 workers, untouched
    assert api.status(b, cl).running
    st = api.status(a, cl)
    assert [(n.state, n.exit_code) for n in st.nodes] == [("exited", 143)] * 3
    # a node whose tmux session vanished reads "missing"
    node3 = hb.plan.nodes[2]
    subprocess.run(
        ["ssh", *ssh.ssh_options(cl.ssh, node3.host), node3.host, "tmux", "kill-session", "-t", f"={node3.session}"],
        check=True,
    )
    wait_for(lambda: api.status(b, cl).nodes[2].state == "missing", 20, "node 3 to read missing")
    results_b = api.stop(b, cl, timeout=3)
    assert all(r.remaining == [] for r in results_b) and job_pids(hb.plan.run_id) == []


def test_preflight_catches_broken_nodes(cl, names, sim_cluster):
    n1, n2, n3 = sim_cluster.nodes
    quick = cl.model_copy(
        update={
            "ssh": cl.ssh.model_copy(
                update={"connect_timeout": 3, "options": {**cl.ssh.options, "ConnectTimeout": "3"}}
            )
        }
    )
    name = names("pre")
    job = train_job(name)

    def checks(cluster):
        rep = run_preflight_sync(cluster, list(cluster.nodes), job, name=name, base_dir=str(REPO), local_venv=None)
        return rep, {(c.node, c.check): c for c in rep.checks}

    rep, by = checks(quick)
    assert rep.ok, rep.summary()
    sim_cluster.stop_sshd(n3)
    sim_cluster.disconnect(n2)
    try:
        rep, by = checks(quick)
        assert by[(n3.hostname, "ssh")].ok is False and "ssh" in by[(n3.hostname, "ssh")].detail
        assert by[(n2.hostname, "ssh")].ok is False
        assert by[(n1.hostname, "ssh")].ok is True
        with pytest.raises(PreflightFailed):
            api.launch(job, quick)
    finally:
        sim_cluster.reconnect(n2)
        sim_cluster.start_sshd(n3)
    # a node that reaches the others by ssh but not the rendezvous address
    first_port = cl.rendezvous.port
    rule = ["OUTPUT", "-d", n1.addr, "-p", "tcp", "--dport", f"{first_port}:{first_port + 64}", "-j", "DROP"]
    sim_cluster.exec_in_ns(n2, ["iptables", "-I", *rule], check=True)
    try:
        rep, by = checks(quick)
        assert by[(n2.hostname, "reach")].ok is False
        assert "must share a private network" in by[(n2.hostname, "reach")].detail
        assert by[(n3.hostname, "reach")].ok is True
    finally:
        sim_cluster.exec_in_ns(n2, ["iptables", "-D", *rule], check=True)
    # a venv that does not exist on the nodes
    novenv = quick.model_copy(update={"venv": "/nonexistent/venv"})
    rep, by = checks(novenv)
    assert all(by[(n.hostname, "venv")].ok is False for n in sim_cluster.nodes)
    with pytest.raises(PreflightFailed, match="venv"):
        api.launch(job, novenv)
    assert not (Path(cl.storage.runs) / name).exists()  # nothing launched


def test_dry_run_touches_nothing(cl, names, sim_cluster, capsys):
    name = names("dry")
    cfile = Path(cl.storage.runs).parent / f"{name}-cluster.json"
    cfile.write_text(json.dumps(cl.model_dump(mode="json")))
    jfile = cfile.with_name(f"{name}-job.json")
    jfile.write_text(json.dumps({"name": name, "script": "examples/train_demo.py"}))
    assert cli_main(["launch", str(jfile), "-c", str(cfile), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--rdzv-endpoint" in out and f"tmux session corral-{name}" in out
    assert not (Path(cl.storage.runs) / name).exists()
    for node in sim_cluster.nodes:
        ls = sim_cluster.run(node, ["tmux", "ls"])
        assert f"corral-{name}" not in ls.stdout

"""The launch path on localhost (no ssh): real tmux on a private socket, real processes.

Each test gets its own tmux server (``CORRAL_TMUX_SOCKET``), killed afterwards, and its own
run/checkpoint directories outside /tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from launcher import api
from launcher.cli import main as cli_main
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import PreflightFailed, UserError
from tests.infra.hostile import HOSTILE
from tests.infra.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")


def echo_job(name: str, **extra) -> JobConfig:
    return JobConfig.model_validate({"name": name, "script": "tests/workers/echo_env.py", **extra})


def echo_record(cluster: ClusterConfig, name: str, node: str = "local") -> dict:
    runs = Path(cluster.storage.runs)
    return json.loads((runs / name / f"echo-{node}.json").read_text())


def test_plain_job_runs_in_tmux_with_literal_args_and_no_leaked_venv(local_space, monkeypatch, tmp_path):
    cluster, root, token = local_space
    # Pretend corral runs from an activated venv: it must not reach the job.
    monkeypatch.setenv("VIRTUAL_ENV", "/fake/leaky-venv")
    monkeypatch.setenv("PATH", "/fake/leaky-venv/bin:" + os.environ["PATH"])
    job = echo_job("echo", args=HOSTILE, env={"HOSTILE": "\n".join(HOSTILE) + "; $(id)"})
    handle = api.launch(job, cluster, plain=True)
    status = handle.wait(timeout=60)
    assert status.ok, status.to_json()
    rec = echo_record(cluster, "echo")
    assert rec["argv"] == HOSTILE
    assert rec["env"]["HOSTILE"] == "\n".join(HOSTILE) + "; $(id)"
    assert rec["env"]["CORRAL_NODE"] == "local" and rec["env"]["CORRAL_NODE_RANK"] == "0"
    assert rec["env"]["CORRAL_CKPT_DIR"] == str(root / "ckpt" / "echo")
    assert "/fake/leaky-venv" not in rec["env"]["PATH"]
    assert rec["env"].get("VIRTUAL_ENV") != "/fake/leaky-venv"
    assert not list(REPO.glob("PWNED")) and not list(root.rglob("PWNED"))
    log = handle.log_path("local").read_text()
    assert "[local] echo worker done" in log and "corral: exited with status 0" in log

    # the exit status is recorded and the log kept, so the finished session is gone (nothing piles up)
    def gone() -> bool:
        argv = ["tmux", "-L", f"corral-test-{token}", "list-panes", "-t", "=corral-echo"]
        return subprocess.run(argv, capture_output=True, text=True).returncode != 0

    wait_for(gone, 10, "the finished session to be removed")
    assert api.status("echo", cluster).state == "exited"


def test_secrets_only_in_a_0600_file_removed_at_the_end(local_space):
    cluster, root, token = local_space
    secret = f"tok-{uuid.uuid4().hex}"
    env_file = root / "secrets.env"
    env_file.write_text(f"SECRET_TOKEN={secret}\n")
    job = echo_job("sec", env_file=str(env_file), env={"ECHO_SLEEP": "3"})
    handle = api.launch(job, cluster, plain=True)
    try:
        # While it runs: nowhere on a command line, not in the plan, not in tmux's view.
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert secret not in ps
        assert secret not in (handle.run_dir / "run.json").read_text()
        assert secret not in (Path(handle.plan.nodes[0].wrapper_path)).read_text()
        status = handle.wait(timeout=60)
    finally:
        api.stop("sec", cluster, timeout=2)
    assert status.ok
    assert echo_record(cluster, "sec")["env"]["SECRET_TOKEN"] == secret
    assert not Path(handle.plan.nodes[0].secrets_path).exists()
    assert secret not in handle.log_path("local").read_text()


def test_name_already_running_is_refused_and_stop_leaves_nothing(local_space):
    cluster, root, token = local_space
    job = echo_job("busy", env={"ECHO_SLEEP": "60"})
    handle = api.launch(job, cluster, plain=True)
    try:
        with pytest.raises(PreflightFailed, match="already running"):
            api.launch(job, cluster, plain=True)
        assert api.status("busy", cluster).running
    finally:
        results = api.stop("busy", cluster, timeout=3)
    assert results[0].remaining == [] and results[0].found >= 1
    st = api.status("busy", cluster)
    assert [(n.state, n.exit_code) for n in st.nodes] == [("exited", 143)]
    # no process of the job is left (scan by its unique run id)
    marker = f"CORRAL_RUN_ID={handle.plan.run_id}".encode()
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _has_env(p, marker)]
    assert left == []


def _has_env(proc: Path, marker: bytes) -> bool:
    try:
        return marker in (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def test_torchrun_job_on_localhost(local_space):
    cluster, root, token = local_space
    job = JobConfig.model_validate(
        {
            "name": "tiny",
            "script": "examples/train_demo.py",
            "args": ["--steps", "30", "--step-time", "0", "--plain-sgd"],
            "env": {"PYTHONPATH": str(REPO)},
            "checkpoint": {"keep_last": 2},
        }
    )
    handle = api.launch(job, cluster)
    status = handle.wait(timeout=120)
    assert status.ok, handle.log_path("local").read_text()[-2000:]
    results = sorted((handle.run_dir / "results").glob("rank*.json"))
    assert [json.loads(p.read_text())["world_size"] for p in results] == [2, 2]
    log = handle.log_path("local").read_text()
    assert "[local] [rank0]: rank 0/2 ready" in log and "[local] [rank1]: rank 1/2 ready" in log
    assert "OMP_NUM_THREADS" not in log  # corral set it per job: no torchrun warning at the top of the log
    # the checkpoint policy reached the script: only the 2 newest checkpoints are kept
    assert len([p for p in handle.ckpt_dir.iterdir() if p.name.startswith("step")]) == 2


def test_cli_dry_run_touches_nothing(local_space, capsys):
    cluster, root, token = local_space
    cfile = root / "cluster.yaml"
    cfile.write_text(json.dumps(cluster.model_dump(mode="json")))
    jfile = root / "job.yaml"
    jfile.write_text(json.dumps({"name": "dry", "script": "examples/train_demo.py"}))
    rc = cli_main(["launch", str(jfile), "-c", str(cfile), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and "torchrun --nnodes 1 --nproc-per-node 2" in out and "tmux session corral-dry" in out
    assert not (root / "runs").exists()
    probe = subprocess.run(["tmux", "-L", f"corral-test-{token}", "ls"], capture_output=True, text=True)
    assert probe.returncode != 0  # no server was even started
    rc = cli_main(["launch", str(jfile), "-c", str(cfile), "--dry-run", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["nodes"][0]["session"] == "corral-dry"


def test_bad_input_is_one_line_and_nothing_runs(local_space, capsys):
    cluster, root, token = local_space
    with pytest.raises(UserError, match="unknown node 'nope'"):
        api.launch(echo_job("bad"), cluster, nodes=["nope"], plain=True)
    with pytest.raises(PreflightFailed, match="workdir"):
        bad = cluster.model_copy(update={"workdir": str(root / "missing dir")})
        api.launch(echo_job("bad"), bad, plain=True)
    assert not (root / "runs" / "bad").exists()


def test_demo_command_trains_and_says_where_things_are(local_space, capsys):
    cluster, root, token = local_space
    name = f"demo-test-{token}"
    try:
        assert cli_main(["demo", "--steps", "20", "--name", name]) == 0
        out = capsys.readouterr().out
        assert "[local] [rank1]: step 19 loss" in out and "demo finished" in out
        assert f"runs/{name}/logs/local.log" in out and f"checkpoints/{name}" in out and "corral attach" in out
    finally:
        shutil.rmtree(REPO / "runs" / name, ignore_errors=True)
        shutil.rmtree(REPO / "checkpoints" / name, ignore_errors=True)


def test_a_node_failing_to_start_rolls_back_the_others(local_space):
    """Two "nodes" that are both this machine share one tmux server, so the second one cannot
    create the session: the launch fails naming it, and the first node's session is stopped."""
    from launcher.errors import RunFailed

    cluster, root, token = local_space
    two = cluster.model_copy(
        update={"nodes": [cluster.nodes[0], cluster.nodes[0].model_copy(update={"host": "127.0.0.1", "name": "again"})]}
    )
    with pytest.raises(RunFailed, match=r"\((local|again): duplicate session"):
        api.launch(echo_job("half", env={"ECHO_SLEEP": "60"}), two, plain=True)
    ls = subprocess.run(["tmux", "-L", f"corral-test-{token}", "ls"], capture_output=True, text=True)
    assert "corral-half" not in ls.stdout
    record = json.loads((root / "runs" / "half" / "run.json").read_text())
    assert record["state"] == "failed"
    assert not [
        p
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _has_env(p, f"CORRAL_RUN_ID={record['run_id']}".encode())
    ]

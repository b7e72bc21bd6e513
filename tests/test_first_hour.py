"""The first hour as a user, on the real local path (tmux on a private socket, real processes):
follow a job to its end, read one job state everywhere, stop with an end marker, attach errors,
finished work cleaned up, runs found from any directory, ``corral rm``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from launcher import api
from launcher.cli import main
from launcher.config import JobConfig
from launcher.runs.state import job_state
from tests.infra.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]


def write_files(cluster, root: Path) -> Path:
    cfile = root / "cluster.yaml"
    cfile.write_text(yaml.safe_dump(cluster.model_dump(mode="json")))
    return cfile


def sessions(token: str) -> list[str]:
    out = subprocess.run(
        ["tmux", "-L", f"corral-test-{token}", "ls", "-F", "#{session_name}"], capture_output=True, text=True
    )
    return out.stdout.split()


# ----------------------------------------------------------------------------- item 2: one job state


@pytest.mark.parametrize(
    "record, nodes, expected",
    [
        ("running", [("exited", 0), ("exited", 0)], "exited"),
        ("stopped", [("exited", 0), ("exited", 0)], "stopped"),  # stop only records 'stopped' when it found something
        ("running", [("running", None), ("running", None)], "running"),
        ("running", [("running", None), ("exited", 1)], "partial"),
        ("running", [("exited", 0), ("exited", 3)], "failed"),
        ("running", [("exited", 0), ("missing", None)], "failed"),
        ("running", [("unknown", None), ("exited", 0)], "unknown"),
        ("starting", [("missing", None)], "pending"),
        ("running", [("pending", None), ("pending", None)], "pending"),
        ("running", [("pending", None), ("running", None)], "running"),
        ("failed", [("missing", None)], "failed"),
        ("stopped", [("exited", 143)], "stopped"),
    ],
)
def test_job_state_table(record, nodes, expected):
    assert job_state(record, nodes) == expected


def test_ps_table_and_json_agree_and_a_finished_job_reads_exited(local_space, capsys):
    cluster, root, token = local_space
    cfile = write_files(cluster, root)
    api.launch(
        JobConfig.model_validate({"name": "fin", "script": "tests/workers/echo_env.py"}), cluster, plain=True
    ).wait(timeout=60)
    # a stop after the job ended does not turn it into 'stopped'
    api.stop("fin", cluster, timeout=2)
    assert main(["ps", "-c", str(cfile), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["state"]) for r in rows] == [("fin", "exited")]
    assert main(["ps", "-c", str(cfile)]) == 0
    table = capsys.readouterr().out
    assert "fin" in table and " exited " in table and "running" not in table


# ----------------------------------------------------------------------------- item 1: logs -f ends


def test_logs_follow_returns_with_the_job_status(local_space, capsys):
    cluster, root, token = local_space
    cfile = write_files(cluster, root)
    api.launch(
        JobConfig.model_validate({"name": "ok", "script": "tests/workers/echo_env.py", "env": {"ECHO_SLEEP": "2"}}),
        cluster,
        plain=True,
    )
    assert main(["logs", "ok", "-c", str(cfile), "-f"]) == 0
    out = capsys.readouterr()
    assert "echo worker done" in out.out and "corral: exited with status 0" in out.out
    api.launch(
        JobConfig.model_validate(
            {"name": "bad", "script": "tests/workers/fail_once.py", "env": {"FAIL_ONCE_SLEEP": "1"}}
        ),
        cluster,
        plain=True,
    )
    assert main(["logs", "bad", "-c", str(cfile), "-f", "--node", "local"]) == 3  # the job's own status
    assert "first attempt: failing on purpose" in capsys.readouterr().out


def test_logs_follow_keeps_following_through_a_torchrun_restart(local_space, capsys):
    cluster, root, token = local_space
    cfile = write_files(cluster, root)
    job = JobConfig.model_validate(
        {
            "name": "again",
            "script": "tests/workers/fail_once.py",
            "nproc_per_node": 1,
            "max_restarts": 1,
            "backend": "gloo",
            "env": {"FAIL_ONCE_SLEEP": "1"},
        }
    )
    api.launch(job, cluster)
    assert main(["logs", "again", "-c", str(cfile), "-f"]) == 0
    out = capsys.readouterr().out
    assert (
        out.index("first attempt: failing on purpose")
        < out.index("later attempt: succeeding")
        < out.index("exited with status 0")
    )
    # no torchrun OMP_NUM_THREADS warning: corral set it for the job
    assert "OMP_NUM_THREADS" not in (root / "runs" / "again" / "logs" / "local.log").read_text()


# ----------------------------------------------------------------------------- items 4, 5, 6: lifecycle


def test_finished_session_is_removed_but_log_and_status_stay(local_space):
    cluster, root, token = local_space
    handle = api.launch(
        JobConfig.model_validate({"name": "gone", "script": "tests/workers/echo_env.py"}), cluster, plain=True
    )
    st = handle.wait(timeout=60)
    assert st.ok and st.state == "exited"
    wait_for(lambda: "corral-gone" not in sessions(token), 10, "the finished session to be removed")
    assert "corral: exited with status 0" in handle.log_path("local").read_text()
    assert api.status("gone", cluster).state == "exited"
    # no empty checkpoint directory for a job without a checkpoint section
    assert not (root / "ckpt" / "gone").exists()


def test_stopped_job_log_ends_with_a_marker_and_attach_explains(local_space, capsys):
    cluster, root, token = local_space
    cfile = write_files(cluster, root)
    api.launch(
        JobConfig.model_validate({"name": "halt", "script": "tests/workers/echo_env.py", "env": {"ECHO_SLEEP": "60"}}),
        cluster,
        plain=True,
    )
    # not a terminal: one sentence, exit 2, no tmux error
    assert main(["attach", "halt", "-c", str(cfile)]) == 2
    err = capsys.readouterr().err
    assert "attach needs a terminal" in err and "open terminal failed" not in err
    assert main(["stop", "halt", "-c", str(cfile), "--timeout", "2"]) == 0
    log = (root / "runs" / "halt" / "logs" / "local.log").read_text().splitlines()
    assert log[-1].startswith("[local] corral: stopped by corral stop (SIGTERM, then SIGKILL after 2 s")
    capsys.readouterr()
    assert main(["attach", "halt", "-c", str(cfile)]) == 2
    err = capsys.readouterr().err
    assert "job halt is not running on local (stopped by corral stop" in err and "corral logs halt" in err
    assert "can't find session" not in err


def test_rm_refuses_running_jobs_and_forgets_finished_ones(local_space, capsys):
    cluster, root, token = local_space
    cfile = write_files(cluster, root)
    api.launch(
        JobConfig.model_validate({"name": "old", "script": "tests/workers/echo_env.py"}), cluster, plain=True
    ).wait(timeout=60)
    api.launch(
        JobConfig.model_validate({"name": "busy", "script": "tests/workers/echo_env.py", "env": {"ECHO_SLEEP": "60"}}),
        cluster,
        plain=True,
    )
    try:
        assert main(["rm", "busy", "old", "-c", str(cfile)]) == 2
        assert "busy is running" in capsys.readouterr().err
        assert (root / "runs" / "old" / "run.json").exists()  # nothing removed
        assert main(["rm", "-c", str(cfile), "--older-than", "0s"]) == 0
        out = capsys.readouterr().out
        assert "removed old" in out and "kept busy: running" in out
        assert not (root / "runs" / "old").exists() and (root / "runs" / "busy" / "run.json").exists()
        assert main(["rm", "nope", "-c", str(cfile)]) == 2
        assert f"no job named 'nope' in {root / 'runs'}" in capsys.readouterr().err
        assert main(["rm", "-c", str(cfile), "--older-than", "soon"]) == 2
    finally:
        api.stop("busy", cluster, timeout=2)


def test_ps_hides_benchmark_runs_unless_all(local_space, capsys):
    cluster, root, token = local_space
    cfile = write_files(cluster, root)
    for name in ("train", "bench-allreduce-20261127-101500-ab12"):
        api.launch(
            JobConfig.model_validate({"name": name, "script": "tests/workers/echo_env.py"}), cluster, plain=True
        ).wait(timeout=60)
    main(["ps", "-c", str(cfile), "--json"])
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["train"]
    main(["ps", "-c", str(cfile), "--json", "--all"])
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["bench-allreduce-20261127-101500-ab12", "train"]


# ----------------------------------------------------------------------------- item 3: paths


def test_runs_are_found_from_any_directory(local_space, tmp_path, monkeypatch, capsys):
    """Relative paths of a cluster file are relative to that file, whatever the current directory."""
    cluster, root, token = local_space
    proj = root / "proj"
    (proj / "sub" / "deeper").mkdir(parents=True)
    (proj / "train.py").write_text("print('trained', flush=True)\n")
    (proj / "cluster.yaml").write_text(
        yaml.safe_dump(
            {
                "nodes": [{"host": "localhost", "name": "local"}],
                "workdir": ".",
                "storage": {"runs": "./runs", "checkpoints": "./ckpt"},
            }
        )
    )
    (proj / "sub" / "job.yaml").write_text(yaml.safe_dump({"name": "rel", "script": "train.py"}))
    monkeypatch.chdir(proj / "sub")
    assert main(["launch", "job.yaml", "-c", "../cluster.yaml", "--follow"]) == 0
    assert (proj / "runs" / "rel" / "run.json").exists()
    monkeypatch.chdir(proj / "sub" / "deeper")
    capsys.readouterr()
    assert main(["ps", "-c", str(proj / "cluster.yaml"), "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["rel"]


def test_embedded_default_finds_the_project_runs_from_a_subdirectory(tmp_path, monkeypatch):
    from launcher.config import load_cluster
    from launcher.jobs import runs_dir

    (tmp_path / "runs").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert runs_dir(load_cluster(None)) == str(tmp_path / "runs")


def test_missing_script_is_named_with_its_directory(local_space, capsys, monkeypatch):
    cluster, root, token = local_space
    cfile = write_files(cluster, root)
    jfile = root / "job.yaml"
    jfile.write_text(yaml.safe_dump({"name": "nope", "script": "no_such_script.py"}))
    assert main(["config", "check", str(cfile), str(jfile)]) == 0
    assert f"script no_such_script.py not found in {REPO}" in capsys.readouterr().out
    assert main(["launch", str(jfile), "-c", str(cfile), "--dry-run"]) == 0
    assert f"script no_such_script.py not found in {REPO}" in capsys.readouterr().err
    assert main(["launch", str(jfile), "-c", str(cfile)]) == 2
    assert f"script no_such_script.py not found in {REPO} (the cluster's workdir" in capsys.readouterr().err


def test_env_file_is_relative_to_the_job_file(local_space, monkeypatch):
    cluster, root, token = local_space
    (root / "jobs").mkdir()
    (root / "jobs" / "secrets.env").write_text("SECRET_X=42\n")
    (root / "jobs" / "job.yaml").write_text(
        yaml.safe_dump({"name": "envrel", "script": "tests/workers/echo_env.py", "env_file": "secrets.env"})
    )
    from launcher.config import load_job

    monkeypatch.chdir(REPO)
    handle = api.launch(load_job(root / "jobs" / "job.yaml"), cluster, plain=True)
    assert handle.wait(timeout=60).ok
    rec = json.loads((root / "runs" / "envrel" / "echo-local.json").read_text())
    assert rec["env"]["SECRET_X"] == "42"


# ----------------------------------------------------------------------------- items 4 and 8: sweeps


def test_finished_sweep_leaves_no_sessions_and_says_it_is_finished(local_space, capsys):
    cluster, root, token = local_space
    cfile = write_files(cluster, root)
    sweep = root / "lr.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "lr",
                "job": {"script": "tests/sweep_trial.py", "args": ["--sleep", "0.2"], "nproc_per_node": 1},
                "method": "grid",
                "parameters": {"lr": {"values": [0.01, 0.1]}},
                "metric": {"name": "loss", "goal": "minimize"},
                "plain": True,
                "poll_interval": 0.3,
            }
        )
    )
    assert main(["sweep", "run", str(sweep), "-c", str(cfile), "--foreground"]) == 0
    wait_for(
        lambda: not [s for s in sessions(token) if s.startswith("corral-")], 10, "every trial's session to be removed"
    )
    capsys.readouterr()
    assert main(["sweep", "run", str(sweep), "-c", str(cfile)]) == 0
    out = capsys.readouterr().out
    assert "sweep lr is finished: 2 done, 0 failed; best: trial" in out and "lr=0.01" in out
    assert "controller running detached" not in out
    assert main(["sweep", "stop", "lr", "-c", str(cfile)]) == 0
    out = capsys.readouterr().out
    assert "sweep lr is finished: 2 done, 0 failed" in out and "resume" not in out


def test_not_found_names_the_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "nojob.yaml", "--dry-run"]) == 2
    assert f"file not found (looked in {tmp_path})" in capsys.readouterr().err
    assert main(["ckpt", "ls", "checkpoints/none"]) == 2
    assert f"{tmp_path}/checkpoints/none: no such checkpoint directory" in capsys.readouterr().err


def test_omp_threads_set_per_job_unless_the_user_set_it():
    from launcher.backends.ssh.wrapper import render_wrapper
    from launcher.config import ClusterConfig
    from launcher.plan import NodeFacts, PlanInputs, build_plan

    cluster = ClusterConfig.model_validate(
        {"nodes": [{"host": "gpu1", "gpus": 4}], "workdir": "/w", "storage": {"runs": "/r"}}
    )
    inputs = PlanInputs(name="j", run_id="j-1", base_dir="/", rdzv_port=29400, facts={"gpu1": NodeFacts(4)})

    def wrapper(**job) -> str:
        plan = build_plan(
            JobConfig.model_validate({"name": "j", "script": "t.py", **job}), cluster, cluster.nodes, inputs
        )
        return render_wrapper("j", plan.nodes[0])

    line = next(ln for ln in wrapper().splitlines() if "OMP_NUM_THREADS" in ln)
    assert "cpus=$(nproc); export OMP_NUM_THREADS=$(( cpus / 4 > 0 ? cpus / 4 : 1 ))" in line
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    counted = subprocess.run(["bash", "-c", f"{line}\necho $OMP_NUM_THREADS"], env=env, capture_output=True, text=True)
    assert counted.stdout.strip() == str(max(1, len(os.sched_getaffinity(0)) // 4))
    assert "$(nproc)" not in wrapper(env={"OMP_NUM_THREADS": "8"}) and "export OMP_NUM_THREADS=8" in wrapper(
        env={"OMP_NUM_THREADS": "8"}
    )


def test_plain_job_reserves_no_rendezvous_port(local_space, tmp_path, monkeypatch):
    """Port reservations last minutes; a job without a rendezvous must not use up the window."""
    cluster, root, token = local_space
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    api.launch(
        JobConfig.model_validate({"name": "noport", "script": "tests/workers/echo_env.py"}), cluster, plain=True
    ).wait(timeout=60)
    assert not list((tmp_path / "corral" / "ports").glob("*"))


def test_agent_forget_removes_only_a_run_directory_of_that_node(tmp_path):
    from launcher.agent.node_agent import op_forget

    run = tmp_path / "runs" / "job"
    (run / "nodes" / "gpu2").mkdir(parents=True)
    (run / "logs").mkdir()
    (run / "logs" / "gpu2.log").write_text("x\n")
    other = tmp_path / "important"
    other.mkdir()
    assert op_forget({"run_dir": str(other), "node": "gpu2"})["ok"] is False and other.exists()
    assert op_forget({"run_dir": str(run), "node": "gpu2"}) == {"ok": True, "removed": True} and not run.exists()
    assert op_forget({"run_dir": str(run), "node": "gpu2"}) == {"ok": True, "removed": False}

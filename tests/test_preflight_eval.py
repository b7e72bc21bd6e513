"""Preflight verdicts and job states are pure functions of the node agent's replies."""

from __future__ import annotations

from launcher.agent.remote import AgentReply
from launcher.backends.ssh.execute import node_status
from launcher.backends.ssh.preflight import evaluate_probe, evaluate_reach
from launcher.config import JobConfig, NodeConfig
from launcher.plan import NodePlan

NODE = NodeConfig(host="10.0.0.2", name="gpu2")
GOOD = {
    "hostname": "gpu2",
    "python": "3.11.2",
    "workdir_ok": True,
    "script_ok": True,
    "venv_ok": True,
    "gpus": 8,
    "tmux": "/usr/bin/tmux",
    "bash": True,
    "session_state": "none",
    "torch": {"ok": True, "version": "2.13.0", "torchrun": "/v/bin/torchrun"},
}


def job(**kw) -> JobConfig:
    return JobConfig.model_validate({"name": "j", "script": "train.py", **kw})


def verdicts(data, error=None, **kw):
    reply = AgentReply("gpu2", data, error)
    checks = evaluate_probe(
        NODE, reply, kw.pop("job", job()), first=kw.pop("first", False), name="j", venv="/v", plain=False
    )
    return {c.check: c for c in checks}


def test_all_good():
    v = verdicts(GOOD)
    assert all(c.ok is not False for c in v.values()), v
    assert "8 GPU(s) -> 8 processes" in v["gpus"].detail


def test_ssh_failure_marks_the_rest_not_checked():
    v = verdicts({}, "ssh: connect to host 10.0.0.2 port 22: Connection refused")
    assert v["ssh"].ok is False and "Connection refused" in v["ssh"].detail
    assert all(c.ok is None for k, c in v.items() if k != "ssh")


def test_each_failure_names_the_fix():
    assert "create the venv" in verdicts({**GOOD, "venv_ok": False})["venv"].detail
    assert "working directory /w missing" in verdicts({**GOOD, "workdir": "/w", "workdir_ok": False})["workdir"].detail
    assert (
        "script train.py not found in /w (the cluster's workdir"
        in verdicts({**GOOD, "workdir": "/w", "script_ok": False})["workdir"].detail
    )
    assert "no torchrun" in verdicts({**GOOD, "torch": {"ok": True, "version": "2", "torchrun": None}})["torch"].detail
    assert verdicts({**GOOD, "torch": {"ok": False, "error": "No module named 'torch'"}})["torch"].ok is False
    assert "nproc_per_node 9 > 8" in verdicts(GOOD, job=job(nproc_per_node=9))["gpus"].detail
    assert "nccl needs GPUs" in verdicts({**GOOD, "gpus": 0}, job=job(backend="nccl"))["gpus"].detail
    assert "already running" in verdicts({**GOOD, "session_state": "running"})["name"].detail
    assert verdicts({**GOOD, "session_state": "exited"})["name"].ok is True
    assert "install them" in verdicts({**GOOD, "tmux": None})["ssh"].detail
    assert verdicts({**GOOD, "port": None}, first=True)["port"].ok is False


def test_reach_failure_says_private_network():
    bad = evaluate_reach(NODE, AgentReply("gpu2", {"ok": False, "detail": "timed out"}), "10.0.0.1:29400")
    assert bad.ok is False and "must share a private network" in bad.detail
    assert evaluate_reach(NODE, AgentReply("gpu2", {"ok": True, "detail": "host answered (port closed)"}), "x:1").ok


def test_node_states_from_status_replies():
    plan = NodePlan(
        node="gpu2",
        host="h",
        is_local=False,
        rank=0,
        session="corral-j",
        workdir="/w",
        venv=None,
        state_dir="/s",
        log_path="/l",
        wrapper_path="/r",
        secrets_path="/x",
        nproc_per_node=1,
        env={},
        inner_argv=[],
        command=[],
        pane_command=[],
    )
    st = lambda d, err=None: node_status(plan, AgentReply("gpu2", d, err), 100.0, 160.0)  # noqa: E731
    assert (st({"exit_code": 0, "exit_mtime": 130.0}).state, st({"exit_code": 0, "exit_mtime": 130.0}).elapsed_s) == (
        "exited",
        30.0,
    )
    assert st({"session": True, "pane_dead": False}).state == "running"
    assert st({"session": True, "pane_dead": True, "pane_status": 1}).exit_code == 1
    assert st({"session": False}).state == "missing"
    assert st({}, "ssh: timeout").state == "unknown"

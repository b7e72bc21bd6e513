"""The launch plan is pure: golden files for the plan JSON and the wrapper, rules for env,
process counts, backend, node selection, and hostile values that must stay literal."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.backends.ssh.wrapper import render_wrapper
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import UserError
from launcher.plan import (
    CPU_FALLBACK_NPROC,
    NodeFacts,
    PlanInputs,
    build_plan,
    describe,
    pane_command,
    parse_env_file,
    render_secrets,
    select_nodes,
)
from launcher.tools import tmux
from tests.infra.golden import check_golden
from tests.infra.hostile import HOSTILE


def cluster(**extra) -> ClusterConfig:
    data = {
        "nodes": [
            {"host": "gpu1", "addr": "10.0.0.1", "env": {"NODE_ONLY": "n1", "SHARED": "node"}},
            {"host": "ubuntu@gpu2", "name": "gpu2", "addr": "10.0.0.2", "gpus": 4},
            {"host": "gpu3"},
        ],
        "workdir": "/srv/code",
        "venv": "/srv/venv",
        "env": {"SHARED": "cluster", "CLUSTER_ONLY": "c"},
        "storage": {"runs": "runs", "checkpoints": "/ckpt"},
    }
    data.update(extra)
    return ClusterConfig.model_validate(data)


def job(**extra) -> JobConfig:
    data = {"name": "train", "script": "train.py", "args": ["--lr", "0.1"], "env": {"SHARED": "job"}, "max_restarts": 2}
    data.update(extra)
    return JobConfig.model_validate(data)


def inputs(**extra) -> PlanInputs:
    base = dict(
        name="train",
        run_id="train-0123abcd",
        base_dir="/home/me/proj",
        rdzv_port=29411,
        facts={"gpu1": NodeFacts(gpus=8), "gpu3": NodeFacts(gpus=0)},
    )
    base.update(extra)
    return PlanInputs(**base)


def test_plan_golden():
    c = cluster()
    plan = build_plan(job(), c, c.nodes, inputs())
    check_golden("plan_3nodes.json", json.dumps(plan.to_dict(), indent=2) + "\n")
    check_golden("plan_3nodes.txt", describe(plan) + "\n")


def test_wrapper_and_tmux_steps_golden():
    c = cluster()
    plan = build_plan(job(args=HOSTILE), c, c.nodes, inputs())
    node = plan.nodes[0]
    check_golden("wrapper_gpu1.sh", render_wrapper(plan.name, node))
    steps = tmux.start_steps("sock", node.session, node.workdir, node.pane_command)
    check_golden("tmux_start_steps.txt", "\n".join(shlex.join(s) for s in steps) + "\n")


def test_torchrun_argv_rules():
    c = cluster()
    plan = build_plan(job(), c, c.nodes, inputs())
    n1, n2, n3 = plan.nodes
    argv = n1.inner_argv
    assert argv[0] == "torchrun"
    assert argv[argv.index("--nnodes") + 1] == "3"
    assert argv[argv.index("--rdzv-backend") + 1] == "c10d"
    assert argv[argv.index("--rdzv-endpoint") + 1] == "10.0.0.1:29411"  # first node's addr, probed port
    assert argv[argv.index("--rdzv-id") + 1] == "train-0123abcd"
    assert argv[argv.index("--max-restarts") + 1] == "2"
    assert argv[argv.index("--local-addr") + 1] == "10.0.0.1"
    assert "--local-addr" not in n3.inner_argv  # no addr configured
    assert argv[-3:] == ["train.py", "--lr", "0.1"]
    # nproc auto: detected 8, configured 4 (config wins over detection), none -> CPU fallback
    assert [n.nproc_per_node for n in plan.nodes] == [8, 4, CPU_FALLBACK_NPROC]
    assert plan.backend == "gloo"  # one node has no GPU
    assert all(n.session == "corral-train" for n in plan.nodes)
    assert n2.host == "ubuntu@gpu2" and n2.node == "gpu2"


def test_backend_auto_is_nccl_when_every_node_has_gpus():
    c = cluster()
    plan = build_plan(job(), c, c.nodes, inputs(facts={"gpu1": NodeFacts(8), "gpu3": NodeFacts(8)}))
    assert plan.backend == "nccl"
    assert all(n.env["CORRAL_BACKEND"] == "nccl" for n in plan.nodes)


def test_rendezvous_host_without_addr_is_the_ssh_host_without_user():
    c = ClusterConfig.model_validate({"nodes": [{"host": "me@gpu1"}, {"host": "gpu2"}]})
    plan = build_plan(job(), c, c.nodes, inputs())
    assert plan.rdzv_endpoint == "gpu1:29411"


def test_env_precedence_and_corral_vars():
    c = cluster()
    j = job(env={"SHARED": "job", "CORRAL_NODE": "spoofed"})
    plan = build_plan(j, c, c.nodes, inputs())
    n1, n2, _ = plan.nodes
    assert n1.env["SHARED"] == "job"  # cluster < node < job
    assert n1.env["NODE_ONLY"] == "n1" and "NODE_ONLY" not in n2.env
    assert n1.env["CLUSTER_ONLY"] == "c"
    assert n1.env["CORRAL_NODE"] == "gpu1"  # CORRAL_* always win
    assert n1.env["CORRAL_RUN_DIR"] == "/home/me/proj/runs/train"
    assert n1.env["CORRAL_CKPT_DIR"] == "/ckpt/train"
    assert [n.env["CORRAL_NODE_RANK"] for n in plan.nodes] == ["0", "1", "2"]
    c2 = ClusterConfig.model_validate(
        {"nodes": [{"host": "a", "env": {"SHARED": "node"}}], "env": {"SHARED": "cluster"}}
    )
    assert build_plan(job(env={}), c2, c2.nodes, inputs()).nodes[0].env["SHARED"] == "node"


def test_store_per_attempt_only_when_the_job_restarts():
    c = cluster()
    restarting = build_plan(job(max_restarts=1), c, c.nodes, inputs())
    assert all(n.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1" for n in restarting.nodes)
    once = build_plan(job(max_restarts=0), c, c.nodes, inputs())  # torchrun's shared store: no connect backoff
    assert not any("TORCH_DISABLE_SHARE_RDZV_TCP_STORE" in n.env for n in once.nodes)
    forced = build_plan(job(max_restarts=0, env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}), c, c.nodes, inputs())
    assert forced.nodes[0].env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"  # a job's env still decides


def test_plain_mode_runs_python_once_per_node():
    c = cluster()
    plan = build_plan(job(module="benchmarks.worker", script=None), c, c.nodes, inputs(plain=True))
    assert plan.nodes[0].inner_argv == ["python3", "-m", "benchmarks.worker", "--lr", "0.1"]
    assert plan.rdzv_endpoint is None
    assert "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE" not in plan.nodes[0].env


def test_node_selection_and_nnodes():
    c = cluster()
    assert [n.label for n in select_nodes(c, job(), ["gpu3", "gpu1"])] == ["gpu3", "gpu1"]
    assert [n.label for n in select_nodes(c, job(nnodes=2))] == ["gpu1", "gpu2"]
    with pytest.raises(UserError, match="unknown node 'gpu9'"):
        select_nodes(c, job(), ["gpu9"])
    with pytest.raises(UserError, match="at least 4 node"):
        select_nodes(c, job(nnodes=4))
    plan = build_plan(job(nnodes="2:3"), c, c.nodes, inputs())
    assert plan.nnodes == "2:3"


def test_relative_paths_resolve_against_base_dir():
    c = ClusterConfig.model_validate(
        {"nodes": [{"host": "localhost"}], "workdir": ".", "storage": {"runs": "./r", "checkpoints": "../ck"}}
    )
    plan = build_plan(job(), c, c.nodes, inputs(base_dir="/w/proj", local_venv="/w/venv"))
    n = plan.nodes[0]
    assert (n.workdir, plan.run_dir, plan.ckpt_dir) == ("/w/proj", "/w/proj/r/train", "/w/ck/train")
    assert n.venv == "/w/venv"  # localhost without a configured venv: corral's own, activated in the pane
    assert n.log_path == "/w/proj/r/train/logs/localhost.log"


def test_pane_command_is_an_argv_without_shell():
    assert pane_command("/runs/my job/it's/run.sh") == ["bash", "/runs/my job/it's/run.sh"]
    steps = tmux.start_steps(None, "corral-x", "/w", pane_command("/a b/$(x)/run.sh;"))
    assert steps[0][-3:] == ["=corral-x:", "bash", "/a b/$(x)/run.sh\\;"]  # ';' escaped for tmux only
    with pytest.raises(ValueError):
        tmux.respawn(None, "corral-x", ["one word"])  # tmux would hand a single word to a shell


def test_hostile_values_reach_the_command_literally(tmp_path):
    """Run the rendered wrapper's env and command lines in bash: values arrive literally, nothing runs."""
    c = ClusterConfig.model_validate({"nodes": [{"host": "localhost"}], "workdir": str(tmp_path)})
    j = job(args=HOSTILE, env={"HOSTILE": "\n".join(HOSTILE)})
    plan = build_plan(j, c, c.nodes, inputs(base_dir=str(tmp_path)))
    node = plan.nodes[0]
    probe = ["python3", "-c", "import json,os,sys; print(json.dumps([sys.argv[1:], os.environ['HOSTILE']]))"]
    node = type(node)(**{**node.__dict__, "command": probe + list(j.args)})
    script = render_wrapper(plan.name, node)
    body = script[script.index("job() {") : script.index("\n}\n") + 3]
    out = subprocess.run(["bash", "-c", body + "\njob"], cwd=tmp_path, capture_output=True, text=True, check=True)
    args, env = json.loads(out.stdout)
    assert args == HOSTILE and env == "\n".join(HOSTILE)
    assert not list(tmp_path.glob("PWNED*")) and not Path("PWNED").exists()


def test_secrets_file_round_trip(tmp_path):
    values = {"TOKEN": "s3cr$t 'q' `x` $(y)", "PLAIN": "abc"}
    f = tmp_path / "s.env"
    f.write_text(render_secrets(values))
    out = subprocess.run(
        ["bash", "-c", f'set -a; . {shlex.quote(str(f))}; set +a; printf "%s|%s" "$TOKEN" "$PLAIN"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "s3cr$t 'q' `x` $(y)|abc"
    assert parse_env_file("# c\nexport A=1\nB='two words'\n\nC=\"x\"\n", "f") == {"A": "1", "B": "two words", "C": "x"}
    with pytest.raises(UserError, match="f:1: expected KEY=VALUE"):
        parse_env_file("not a pair\n", "f")


def test_plan_round_trips_through_json():
    from launcher.plan import JobPlan

    c = cluster()
    plan = build_plan(job(), c, c.nodes, inputs())
    assert JobPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_secret_values_never_in_plan():
    c = cluster()
    plan = build_plan(job(), c, c.nodes, inputs(secret_names=("TOKEN",)))
    assert plan.secret_names == ["TOKEN"]
    assert "TOKEN" not in plan.nodes[0].env


def _wrapper_with_watchdog(tmp_path: Path, command: list[str], start_after: float) -> tuple[str, Path]:
    """The real wrapper of a localhost plan whose job is ``command`` and whose watchdog is a stand-in that
    records when it started and with which wrapper pid; it starts ``start_after`` s after the job."""
    c = ClusterConfig.model_validate({"nodes": [{"host": "localhost"}], "workdir": str(tmp_path)})
    wd = {"hang_after": f"{4 * start_after}s", "check_every": "1s"}  # WatchdogConfig.start_after_s
    plan = build_plan(job(watchdog=wd), c, c.nodes, inputs(base_dir=str(tmp_path)))
    assert plan.nodes[0].watchdog["start_after"] == start_after
    node = plan.nodes[0]
    seen = tmp_path / "watchdog-started"
    stand_in = ["sh", "-c", f'echo "$(date +%s.%N) $0" >{shlex.quote(str(seen))}']
    node = type(node)(**{**node.__dict__, "command": command, "watchdog_command": stand_in})
    (Path(node.state_dir) / "watchdog").mkdir(parents=True)  # the launch writes the watchdog's files there
    return render_wrapper(plan.name, node), seen


def _private_tmux(tmp_path: Path) -> dict[str, str]:
    # the wrapper ends with `tmux kill-session`: outside a pane it must reach an empty private server
    return {**os.environ, "TMUX_TMPDIR": str(tmp_path), "TMUX": "", "TMUX_PANE": "%999"}


def test_the_watchdog_starts_when_planned_after_the_job_with_the_wrappers_pid(tmp_path):
    script, seen = _wrapper_with_watchdog(tmp_path, ["sleep", "3"], start_after=1.5)
    (tmp_path / "run.sh").write_text(script)
    t0 = time.time()
    proc = subprocess.Popen(["bash", str(tmp_path / "run.sh")], env=_private_tmux(tmp_path), start_new_session=True)
    assert proc.wait(timeout=30) == 0
    started, pid = seen.read_text().split()
    assert float(started) - t0 >= 1.5 and int(pid) == proc.pid


def test_a_job_stopped_before_its_watchdog_started_leaves_no_watchdog(tmp_path):
    script, seen = _wrapper_with_watchdog(tmp_path, ["sleep", "30"], start_after=3)
    (tmp_path / "run.sh").write_text(script)
    proc = subprocess.Popen(["bash", str(tmp_path / "run.sh")], env=_private_tmux(tmp_path), start_new_session=True)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGTERM)  # what `corral stop` sends the wrapper's process group
    proc.wait(timeout=10)
    time.sleep(3)
    assert not seen.exists()
    left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert left == []

"""The watchdog's verdicts as pure functions of recorded samples and stacks (no process, no node)."""

from __future__ import annotations

import ast
import json
import os
import time
from pathlib import Path

import pytest

from launcher.backends.ssh.wrapper import render_wrapper
from launcher.config import ClusterConfig, JobConfig, validate
from launcher.config.loading import apply_overrides
from launcher.errors import UserError
from launcher.plan import PlanInputs, build_plan, describe
from launcher.runs.state import job_state
from launcher.units import format_duration, parse_duration
from launcher.watchdog import events, judge
from launcher.watchdog import node as wd_node
from launcher.watchdog.judge import NodeSample, Policy, RankSample
from launcher.watchdog.ship import SHIPPED

REPO = Path(__file__).resolve().parents[1]
POLICY = Policy(hang_after=60, first_step_grace=300, straggler_after=120)

# Recorded `py-spy dump --pid P` output of hang_train.py ranks (py-spy 0.4.3, torch 2.13 gloo):
# a rank waiting for its peers, and a rank asleep outside any collective.
WAITING = """Process 4242: /var/tmp/venv/bin/python3 -u tests/workers/hang_train.py --steps 100000
Python v3.11.2 (/usr/bin/python3.11)

Thread 4242 (idle): "MainThread"
    all_reduce (torch/distributed/distributed_c10d.py:3009)
    wrapper (torch/distributed/c10d_logger.py:83)
    main (hang_train.py:63)
    <module> (hang_train.py:79)
Thread 4300 (idle): "Thread-1 (_read_thread)"
    _read_thread (torch/distributed/elastic/x.py:10)
"""
SLEEPING = """Process 4243: /var/tmp/venv/bin/python3 -u tests/workers/hang_train.py
Python v3.11.2 (/usr/bin/python3.11)

Thread 4243 (idle): "MainThread"
    main (hang_train.py:60)
    <module> (hang_train.py:79)
"""
NATIVE_WAIT = """Thread 77 (idle): "MainThread"
    __futex_abstimed_wait_common (libc.so.6)
    gloo::transport::tcp::UnboundBuffer::waitRecv (libtorch_cpu.so)
    main (train.py:12)
"""


def rank(node: str, r: int, *, state: str = "S", step=10, age: float | None = 1.0, phase: str = "step") -> RankSample:
    phase_age = age if phase == "checkpoint" else None  # the save began right after the last step
    return RankSample(node, r, 1000 + r, state, step, age if step is not None else None, phase, phase_age)


def nodes(*ranks: RankSample, attempt: float = 1000.0, log_quiet: float = 0.0) -> list[NodeSample]:
    by: dict[str, list[RankSample]] = {}
    for r in ranks:
        by.setdefault(r.node, []).append(r)
    return [NodeSample(n, tuple(rs), attempt, log_quiet) for n, rs in by.items()]


# ---------------------------------------------------------------------------- hang verdict


def test_progress_of_any_rank_is_progress():
    v = judge.judge_hang(nodes(rank("a", 0, age=100), rank("b", 1, age=5)), POLICY)
    assert not v.hung and v.signal == "report" and v.quiet_s == 5


def test_no_rank_advanced_for_hang_after_is_a_hang():
    v = judge.judge_hang(nodes(rank("a", 0, age=61), rank("b", 1, age=70)), POLICY)
    assert v.hung and v.signal == "report" and v.quiet_s == 61 and v.limit_s == 60


def test_a_step_only_one_rank_reports_counts():
    v = judge.judge_hang(nodes(rank("a", 0, age=2), rank("b", 1, step=None)), POLICY)
    assert not v.hung


def test_a_checkpoint_save_in_progress_is_progress_however_long():
    v = judge.judge_hang(nodes(rank("a", 0, age=900, phase="checkpoint"), rank("b", 1, age=900)), POLICY)
    assert not v.hung and v.signal == "checkpoint"


def test_the_end_of_a_long_save_is_progress_until_the_next_step():
    # the step before the save is 90 s old, the save ended 2 s ago: not a hang
    just_saved = RankSample("a", 0, 1000, "S", 12, 90.0, "step", 2.0)
    assert not judge.judge_hang(nodes(just_saved), POLICY).hung
    assert judge.judge_hang(nodes(RankSample("a", 0, 1000, "S", 12, 90.0, "step", 70.0)), POLICY).hung


def test_a_stopped_rank_marked_as_saving_does_not_hold_the_exemption():
    v = judge.judge_hang(nodes(rank("a", 0, age=900, phase="checkpoint", state="T"), rank("b", 1, age=900)), POLICY)
    assert v.hung


def test_a_stopped_peer_ends_the_exemption_of_ranks_waiting_in_the_saves_collective():
    # rank b was SIGSTOPped during a save: a and c wait for it inside the save's publish for ever
    saving = [rank("a", 0, age=900, phase="checkpoint"), rank("c", 2, age=900, phase="checkpoint")]
    v = judge.judge_hang(nodes(*saving, rank("b", 1, age=900, state="T")), POLICY)
    assert v.hung and v.signal == "report"
    # a peer in D (writing to a slow volume) or already gone (finished first) leaves the save exempt
    for state in ("D", "gone"):
        assert not judge.judge_hang(nodes(*saving, rank("b", 1, age=900, state=state)), POLICY).hung, state


def test_a_node_that_stopped_answering_does_not_keep_its_last_fresh_step():
    late = NodeSample("b", (rank("b", 1, age=0.5),), 1000.0, 0.0, stale_s=70.0)
    v = judge.judge_hang([NodeSample("a", (rank("a", 0, age=80),), 1000.0, 0.0), late], POLICY)
    assert v.hung and v.quiet_s == 70.5
    saving_then_silent = NodeSample("b", (rank("b", 1, age=1, phase="checkpoint"),), 1000.0, 0.0, stale_s=90.0)
    assert judge.judge_hang([saving_then_silent], POLICY).hung


def test_first_step_gets_the_grace_then_log_silence_decides():
    quiet_start = nodes(rank("a", 0, step=None), rank("b", 1, step=None), attempt=200, log_quiet=200)
    assert judge.judge_hang(quiet_start, POLICY).signal == "first-step"
    assert not judge.judge_hang(quiet_start, POLICY).hung
    late = nodes(rank("a", 0, step=None), attempt=400, log_quiet=70)
    v = judge.judge_hang(late, POLICY)
    assert v.hung and v.signal == "log"
    talking = nodes(rank("a", 0, step=None), attempt=400, log_quiet=3)
    assert not judge.judge_hang(talking, POLICY).hung


def test_no_workers_no_verdict():
    assert not judge.judge_hang([NodeSample("a")], POLICY).hung


def test_steady_slow_steps_are_not_a_hang():
    # steps every 20 s against hang_after 60 s: each sample sees an age below 20 s
    for age in (0.5, 10, 19.9):
        assert not judge.judge_hang(nodes(rank("a", 0, age=age), rank("b", 1, age=age)), POLICY).hung


# ---------------------------------------------------------------------------- stacks and suspects


def test_read_stack_finds_the_collective_in_the_main_thread():
    v = judge.read_stack(WAITING)
    assert v.in_collective and v.call == "all_reduce" and v.top.startswith("all_reduce")
    s = judge.read_stack(SLEEPING)
    assert s.in_collective is False and s.top == "main (hang_train.py:60)"
    native = judge.read_stack(NATIVE_WAIT)
    assert native.in_collective and native.top == "main (train.py:12)"
    assert native.call == "gloo::transport::tcp::UnboundBuffer::waitRecv"
    assert judge.read_stack(None).in_collective is None


def test_a_stopped_rank_is_the_suspect_whatever_the_stacks():
    ranks = [rank("a", 0), rank("b", 1), rank("c", 2, state="T")]
    out = judge.choose_suspects(ranks, {("a", 0): WAITING, ("b", 1): WAITING, ("c", 2): SLEEPING})
    assert [(s.node, s.rank, s.reason) for s in out] == [("c", 2, "not-running")]
    assert "stopped" in out[0].evidence


@pytest.mark.parametrize("state", ["D", "Z", "gone"])
def test_other_not_running_states(state):
    out = judge.choose_suspects([rank("a", 0), rank("b", 1, state=state)], {})
    assert [(s.node, s.reason) for s in out] == [("b", "not-running")]


def test_the_rank_outside_the_collective_while_others_wait():
    ranks = [rank("a", 0), rank("b", 1), rank("c", 2)]
    out = judge.choose_suspects(ranks, {("a", 0): WAITING, ("b", 1): SLEEPING, ("c", 2): WAITING})
    assert [(s.node, s.rank, s.reason) for s in out] == [("b", 1, "outside-collective")]
    assert "2 rank(s) wait in all_reduce" in out[0].evidence and "hang_train.py:60" in out[0].evidence


def test_behind_in_step_when_the_stacks_say_nothing():
    ranks = [rank("a", 0, step=41), rank("b", 1, step=40), rank("c", 2, step=41)]
    out = judge.choose_suspects(ranks, {})
    assert [(s.node, s.reason) for s in out] == [("b", "behind")]


def test_no_suspect_when_every_rank_waits_at_the_same_step():
    ranks = [rank("a", 0), rank("b", 1)]
    assert judge.choose_suspects(ranks, {("a", 0): WAITING, ("b", 1): WAITING}) == []


def test_never_a_restart_loop():
    assert judge.choose_action("restart", 0, 2) == ("restart", "")
    assert judge.choose_action("restart", 1, 2) == ("restart", "")
    action, why = judge.choose_action("restart", 2, 2)
    assert action == "stop" and "max_restarts 2" in why
    assert judge.choose_action("dump", 5, 0) == ("dump", "")


def test_stragglers_persist_before_they_are_named():
    samples = nodes(rank("a", 0, step=50), rank("b", 1, step=48), rank("c", 2, step=50))
    assert judge.behind_nodes(samples) == {"b"}
    assert judge.stragglers({"b": 100.0}, 150.0, POLICY) == []
    assert judge.stragglers({"b": 100.0}, 221.0, POLICY) == ["b"]
    assert judge.stragglers({"b": 0.0}, 1e9, Policy(60, 60, None)) == []


# ---------------------------------------------------------------------------- config, state, record


def test_durations_as_people_write_them():
    assert parse_duration("10m") == 600 and parse_duration("1h30m") == 5400 and parse_duration("2.5s") == 2.5
    assert parse_duration(45) == 45 and parse_duration("90") == 90
    assert format_duration(5400) == "1h30m" and format_duration(2.5) == "2.5s"
    with pytest.raises(UserError, match="cannot read 'ten'"):
        parse_duration("ten")


def test_watchdog_section_strict_with_field_paths_and_overrides():
    base = {"name": "a", "script": "t.py", "max_restarts": 1}
    job = validate(JobConfig, {**base, "watchdog": {"hang_after": "10m", "first_step_grace": "15m"}}, "job.yaml")
    assert job.watchdog.hang_after == 600 and job.watchdog.grace_s() == 900 and job.watchdog.on_hang == "dump"
    data = apply_overrides(job.model_dump(mode="json", exclude_none=True), ["watchdog.on_hang=restart"])
    assert validate(JobConfig, data, "--set").watchdog.on_hang == "restart"
    with pytest.raises(UserError, match=r"watchdog\.hang_after: .*duration"):
        validate(JobConfig, {**base, "watchdog": {"hang_after": "ten minutes"}}, "job.yaml")
    with pytest.raises(UserError, match=r"watchdog\.hang: unknown key"):
        validate(JobConfig, {**base, "watchdog": {"hang": "1m"}}, "job.yaml")
    with pytest.raises(UserError, match=r"watchdog\.on_hang"):
        validate(JobConfig, {**base, "watchdog": {"on_hang": "kill"}}, "job.yaml")
    with pytest.raises(UserError, match="restart needs max_restarts >= 1"):
        validate(JobConfig, {"name": "a", "script": "t.py", "watchdog": {"on_hang": "restart"}}, "job.yaml")
    assert JobConfig(name="a", script="t.py").watchdog.interval_s() == 30
    assert JobConfig(name="a", script="t.py", watchdog={"hang_after": 6}).watchdog.interval_s() == 1


def test_the_watchdog_starts_a_quarter_of_the_soonest_report_after_the_job():
    def start(**wd) -> float:
        return JobConfig(name="a", script="t.py", watchdog=wd).watchdog.start_after_s()

    assert start() == 150  # stragglers after 10 min, hangs after 30 min: well past a launch's busy start
    assert start(straggler_after=None) == 450
    assert start(hang_after="8s") == 2
    assert start(hang_after="8s", check_every="5s") == 5  # never before its first interval
    job = JobConfig(name="a", script="t.py", watchdog={"hang_after": "1m", "straggler_after": "20s"})
    c = ClusterConfig.model_validate({"nodes": [{"host": "localhost"}], "workdir": "/w"})
    plan = build_plan(job, c, c.nodes, PlanInputs(name="a-1", run_id="a-1", base_dir="/w", rdzv_port=29500))
    assert plan.nodes[0].watchdog["start_after"] == 5
    assert "from 5 s after the start" in describe(plan) and "sleep 5;" in render_wrapper("a-1", plan.nodes[0])


def test_a_watchdog_started_late_counts_the_logs_silence_from_its_last_line(tmp_path):
    log = tmp_path / "n1.log"
    log.write_text("[n1] step 1\n")
    os.utime(log, (time.time() - 40, time.time() - 40))
    cfg = wd_node.Config(
        run_id="t-x", name="t", node="n1", node_rank=0, nnodes=1, run_dir=str(tmp_path), log_path=str(log),
        leader_host="127.0.0.1", port=0, hang_after=30, first_step_grace=30, on_hang="dump", interval=1,
        max_restarts=0,
    )  # fmt: skip
    sampler = wd_node.Sampler(cfg)
    assert 39 < sampler.sample()["log_quiet_s"] < 45
    with log.open("a") as f:
        f.write("[n1] step 2\n")
    assert sampler.sample()["log_quiet_s"] < 1


def test_hung_job_state_and_the_record_view():
    assert job_state("running", [("running", None)] * 2, hung=True) == "hung"
    assert job_state("running", [("exited", 143), ("exited", 143)], hung=True) == "hung"
    assert job_state("running", [("exited", 0)] * 2, hung=True) == "exited"  # it recovered and finished
    state = json.dumps({"state": "hung", "action": "stop", "evidence": ["n2 rank 2: process 9 is stopped"]})
    ev = {"kind": "hang", "at": 0, "evidence": ["n2 rank 2: stopped"], "action": "stop", "stacks": "/r/hangs/x"}
    view = events.parse(state, json.dumps(ev) + "\n{cut")
    assert view.hung and view.events == [ev]
    assert view.suspect_line() == "hung (stop): n2 rank 2: process 9 is stopped"
    assert "hang: n2 rank 2: stopped -> stop (stacks in /r/hangs/x)" in events.event_line(ev)
    assert not events.parse(None, None).hung


def test_the_shipped_watchdog_imports_only_the_standard_library_and_its_shipped_siblings():
    shipped = {"launcher." + rel[:-3].replace("/", ".") for rel in SHIPPED}
    for rel in SHIPPED:
        tree = ast.parse((REPO / "launcher" / rel).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.startswith("launcher"):
                    assert (
                        name in shipped
                        or name in ("launcher", "launcher.watchdog")
                        or any(name.startswith(s + ".") or name == s for s in shipped)
                    ), f"{rel} imports {name}, which is not shipped to the nodes"
                else:
                    top = name.split(".")[0]
                    assert top in __import__("sys").stdlib_module_names or top == "__future__", f"{rel}: {name}"


def test_slurm_nodes_fill_in_their_own_fields_from_the_allocation():
    from launcher.watchdog.node import runtime_settings

    planned = {"run_id": "r", "run_dir": "/shared/runs/j", "node": None, "node_rank": None, "nnodes": None}
    planned |= {"log_path": None, "leader_host": None, "port": None}
    env = {"CORRAL_NODE": "sn2", "CORRAL_NODE_RANK": "1", "CORRAL_NNODES": "2", "CORRAL_RDZV_ENDPOINT": "sn1:41234"}
    got = runtime_settings(planned, env)
    assert (got["node"], got["node_rank"], got["nnodes"]) == ("sn2", 1, 2)
    assert (got["leader_host"], got["port"]) == ("sn1", 41235)
    assert got["log_path"] == "/shared/runs/j/logs/sn2.log"
    # an ssh launch plans every field: nothing is taken from the environment
    fixed = {**got, "node": "a", "port": 29401}
    assert runtime_settings(fixed, {}) == fixed


def test_plan_ships_the_watchdog_beside_every_node_and_dry_run_shows_it():
    from launcher.backends.ssh.wrapper import render_wrapper
    from launcher.config import ClusterConfig
    from launcher.plan import PlanInputs, build_plan, describe
    from launcher.watchdog.ship import watchdog_files

    cluster = ClusterConfig.model_validate({"nodes": [{"host": "a"}, {"host": "b"}], "venv": "/v"})
    job = JobConfig(name="j", script="t.py", max_restarts=1, watchdog={"hang_after": "10m", "on_hang": "restart"})
    plan = build_plan(job, cluster, cluster.nodes, PlanInputs("j", "j-1", "/p", 29500))
    first, second = plan.nodes
    assert first.watchdog["node_rank"] == 0 and second.watchdog["leader_host"] == "a"
    assert second.watchdog["port"] == 29501 and second.watchdog["hang_after"] == 600
    assert "launcher.watchdog.node" in render_wrapper("j", second) and "setsid env CORRAL_RUN_ID=j-1" in describe(plan)
    assert first.env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1" and first.env["TORCH_FR_DUMP_TEMP_FILE"].startswith(
        "/p/runs/j/"
    )
    paths = [f["path"] for f in watchdog_files(second.state_dir, second.watchdog)]
    assert f"{second.state_dir}/watchdog/pkg/launcher/watchdog/node.py" in paths
    off = JobConfig(name="j", script="t.py", watchdog={"enabled": False, "flight_recorder": False})
    plan_off = build_plan(off, cluster, cluster.nodes, PlanInputs("j", "j-1", "/p", 29500))
    assert plan_off.nodes[0].watchdog is None and "launcher.watchdog" not in render_wrapper("j", plan_off.nodes[0])
    assert "TORCH_FR_BUFFER_SIZE" not in plan_off.nodes[0].env


def test_rm_keeps_a_hung_job_that_still_runs():
    from launcher.forget import may_run
    from launcher.runs.state import JobStatus, NodeStatus

    hung = events.parse(json.dumps({"state": "hung", "action": "dump"}), None)
    running = JobStatus("j", "running", [NodeStatus("a", "a", "running")], hung)
    stopped = JobStatus("j", "running", [NodeStatus("a", "a", "exited", 143)], hung)
    assert running.state == stopped.state == "hung"
    assert may_run(running) and not may_run(stopped)

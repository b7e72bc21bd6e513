"""Scheduling decisions (pure) and the controller's workflow against a stateful fake of the launch path."""

from __future__ import annotations

import pytest

from launcher.config import ClusterConfig
from launcher.sweep.config import sweep_from_mapping
from launcher.sweep.controller import Controller, load_spec, save_spec
from launcher.sweep.generate import generate_trials
from launcher.sweep.journal import Journal, replay
from launcher.sweep.lock import LockHeld
from launcher.sweep.paths import SweepPaths
from launcher.sweep.scheduler import NodeRun, judge_run, plan_starts
from tests.sweep_fake import Behaviour, FakeBackend

NODES = ["n1", "n2", "n3"]


def make_sweep(n_values=6, **over):
    data = {
        "name": "s",
        "job": {"script": "train.py", "nproc_per_node": 1},
        "method": "grid",
        "parameters": {"lr": {"values": [round(0.1 * (i + 1), 1) for i in range(n_values)]}},
        "metric": {"name": "loss"},
        "poll_interval": 0.1,
        "retries": 1,
    }
    data.update(over)
    return sweep_from_mapping(data, "sweep.yaml")


def cluster(n=3):
    return ClusterConfig.model_validate({"nodes": [{"host": f"h{i}", "name": f"n{i}"} for i in range(1, n + 1)]})


def journal_state(events):
    return replay(events)


def start(trial, attempt, nodes):
    return {
        "ev": "start",
        "trial": trial,
        "attempt": attempt,
        "run": f"s-{trial}-{attempt}",
        "nodes": nodes,
        "params": {},
    }


def end(trial, attempt, result, nodes, code=None):
    codes = {n: (0 if result == "done" else 1) if code is None else code for n in nodes}
    return {
        "ev": "end",
        "trial": trial,
        "attempt": attempt,
        "run": f"s-{trial}-{attempt}",
        "result": result,
        "exit_codes": codes,
    }


# ---- pure decisions ------------------------------------------------------------


def test_packs_one_trial_per_free_node_in_order():
    s = make_sweep()
    trials = generate_trials(s.config)
    d = plan_starts(trials, journal_state([]), NODES, s.config)
    assert [(x.trial.id, x.nodes) for x in d] == [(trials[i].id, (NODES[i],)) for i in range(3)]
    busy = journal_state([start(trials[0].id, 1, ["n2"])])
    d = plan_starts(trials, busy, NODES, s.config)
    assert [x.nodes for x in d] == [("n1",), ("n3",)] and trials[0].id not in [x.trial.id for x in d]


def test_gang_schedules_multi_node_trials_only_when_enough_nodes_are_free():
    s = make_sweep(nodes=2)
    trials = generate_trials(s.config)
    d = plan_starts(trials, journal_state([]), NODES, s.config)
    assert [x.nodes for x in d] == [("n1", "n2")]
    d = plan_starts(trials, journal_state([start(trials[0].id, 1, ["n2", "n3"])]), NODES, s.config)
    assert d == []


def test_run_cap_and_max_concurrent_are_never_exceeded():
    s = make_sweep(run_cap=4, allow_partial_grid=True, max_concurrent=2)
    trials = generate_trials(s.config)
    assert len(plan_starts(trials, journal_state([]), NODES, s.config)) == 2
    # 4 distinct trials already started (1 running): no new trial may start even with free nodes
    ev = [start(trials[0].id, 1, ["n1"])] + sum(
        ([start(t.id, 1, ["n2"]), end(t.id, 1, "done", ["n2"])] for t in trials[1:4]), []
    )
    assert plan_starts(trials + generate_trials(make_sweep().config), journal_state(ev), NODES, s.config) == []


def test_retry_goes_first_and_avoids_the_node_it_failed_on():
    s = make_sweep(retries=2)
    trials = generate_trials(s.config)
    ev = [start(trials[0].id, 1, ["n1"]), end(trials[0].id, 1, "failed", ["n1"])]
    d = plan_starts(trials, journal_state(ev), NODES, s.config)
    assert d[0].trial.id == trials[0].id and d[0].attempt == 2 and d[0].nodes == ("n2",)
    ev += [
        start(trials[0].id, 2, ["n2"]),
        end(trials[0].id, 2, "failed", ["n2"]),
        start(trials[0].id, 3, ["n3"]),
        end(trials[0].id, 3, "failed", ["n3"]),
    ]
    st = journal_state(ev)
    assert st.trials[trials[0].id].state(2) == "failed"
    assert trials[0].id not in [x.trial.id for x in plan_starts(trials, st, NODES, s.config)]


def test_set_aside_nodes_get_nothing():
    s = make_sweep()
    trials = generate_trials(s.config)
    st = journal_state([{"ev": "node_aside", "node": "n2", "reason": "x"}])
    assert [x.nodes for x in plan_starts(trials, st, NODES, s.config)] == [("n1",), ("n3",)]


@pytest.mark.parametrize(
    "seen, expected",
    [
        ({"a": NodeRun("running"), "b": NodeRun("running")}, (None, False)),
        ({"a": NodeRun("exited", 0), "b": NodeRun("running")}, (None, False)),
        ({"a": NodeRun("exited", 0), "b": NodeRun("exited", 0)}, ("done", False)),
        ({"a": NodeRun("exited", 1), "b": NodeRun("running")}, ("failed", True)),
        ({"a": NodeRun("exited", 0), "b": NodeRun("missing")}, ("lost", False)),
        ({}, ("lost", False)),
    ],
)
def test_judge_run(seen, expected):
    o = judge_run(["a", "b"], seen)
    assert (o.result, o.stop_rest) == expected


# ---- the controller's workflow with a fake launch path ---------------------------


def make_controller(tmp_path, sweep, behave=None, n_nodes=3):
    paths = SweepPaths(tmp_path / "_sweeps" / sweep.name)
    save_spec(paths, sweep)
    backend = FakeBackend(tmp_path / "runs", **({"behave": behave} if behave else {}))
    return Controller(load_spec(paths), cluster(n_nodes), backend, paths, sleep=lambda s: None), backend


def done_counts(paths):
    recs = Journal(paths.journal).read()
    out = {}
    for r in recs:
        if r["ev"] == "end" and r["result"] == "done":
            out[r["trial"]] = out.get(r["trial"], 0) + 1
    return out


def test_grid_runs_to_completion_over_all_nodes(tmp_path):
    c, backend = make_controller(
        tmp_path, make_sweep(), behave=lambda job, nodes: Behaviour(metric=float(job.args[-1].split("=")[1]))
    )
    assert c.run() == 0
    assert c.counts() == {"pending": 0, "running": 0, "done": 6, "pruned": 0, "failed": 0}
    assert {n for _, nodes in backend.launches for n in nodes} == set(NODES)
    assert backend.max_running_seen == 3 and backend.overlaps == []
    st = replay(Journal(c.paths.journal).read())
    assert st.finished and st.problems == []
    assert sorted(t.done.metric for t in st.trials.values()) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert not c.paths.lock.exists()


def test_always_failing_trial_is_retried_then_failed_and_nodes_are_not_blamed(tmp_path):
    bad = lambda job, nodes: Behaviour(exit_code=3 if job.args[-1] == "--lr=0.2" else 0)  # noqa: E731
    c, backend = make_controller(tmp_path, make_sweep(retries=2), behave=bad)
    assert c.run() == 0
    assert c.counts() == {"pending": 0, "running": 0, "done": 5, "pruned": 0, "failed": 1}
    failing = [name for name, _ in backend.launches if backend.runs[name].exit_code == 3]
    assert len(failing) == 3  # first attempt + 2 retries
    assert c.state.nodes_aside == {}


def test_a_node_failing_two_different_trials_is_set_aside(tmp_path):
    c, backend = make_controller(
        tmp_path, make_sweep(), behave=lambda job, nodes: Behaviour(exit_code=1 if nodes == ["n2"] else 0)
    )
    assert c.run() == 0
    assert list(c.state.nodes_aside) == ["n2"]
    assert c.counts()["done"] == 6
    n2_runs = [name for name, nodes in backend.launches if nodes == ("n2",)]
    assert len(n2_runs) == 2


def test_all_nodes_set_aside_stops_the_sweep_as_stuck(tmp_path):
    c, _ = make_controller(tmp_path, make_sweep(retries=5), behave=lambda job, nodes: Behaviour(exit_code=1), n_nodes=1)
    assert c.run() == 1
    recs = Journal(c.paths.journal).read()
    assert recs[-1]["ev"] == "controller" and "stuck" in recs[-1]["reason"]


def test_metric_never_reported_is_flagged(tmp_path):
    c, _ = make_controller(tmp_path, make_sweep(2), behave=lambda job, nodes: Behaviour(metric=None))
    assert c.run() == 0
    ends = [r for r in Journal(c.paths.journal).read() if r["ev"] == "end"]
    assert all(r["metric"] is None and "never reported" in r["error"] for r in ends)


def test_controller_crash_then_resume_finishes_every_trial_once(tmp_path):
    sweep = make_sweep()
    c, backend = make_controller(tmp_path, sweep, behave=lambda job, nodes: Behaviour(polls=3))
    c.lock.acquire()
    c.reconcile()
    c.step()
    c.step()  # 3 trials running, none ended: the controller "dies" here (its lock is left behind)
    assert len(backend.running()) == 3
    c.lock.path.unlink()  # a dead holder's lock; recovery of a real stale lock is tested in test_sweep_journal
    c2 = Controller(load_spec(c.paths), cluster(), backend, c.paths, sleep=lambda s: None)
    assert c2.run() == 0
    assert done_counts(c.paths) == {t.id: 1 for t in generate_trials(sweep.config)}
    assert backend.overlaps == [] and len(backend.launches) == 6
    assert replay(Journal(c.paths.journal).read()).problems == []


def test_lost_run_is_requeued_under_a_new_run_name(tmp_path):
    sweep = make_sweep(1)
    c, backend = make_controller(tmp_path, sweep)
    t = generate_trials(sweep.config)[0]
    c.journal.append(
        "start", trial=t.id, attempt=1, run=f"s-{t.id}", nodes=["n1"], params=t.params
    )  # launch never happened
    assert c.run() == 0
    results = [(r["attempt"], r["result"]) for r in Journal(c.paths.journal).read() if r["ev"] == "end"]
    assert results == [(1, "lost"), (2, "done")]
    assert [name for name, _ in backend.launches] == [f"s-{t.id}-2"]


def test_second_controller_is_refused_while_the_first_holds_the_lock(tmp_path):
    c, backend = make_controller(tmp_path, make_sweep())
    c.lock.acquire()
    c2 = Controller(load_spec(c.paths), cluster(), backend, c.paths, sleep=lambda s: None)
    with pytest.raises(LockHeld, match="already running"):
        c2.run()
    assert backend.launches == []


def test_stop_request_stops_running_trials_and_resume_reruns_them(tmp_path):
    sweep = make_sweep(3)
    c, backend = make_controller(tmp_path, sweep, behave=lambda job, nodes: Behaviour(polls=100))
    slept = []

    def sleep(s):
        slept.append(s)
        if len(slept) == 2:
            c.paths.stop_request.write_text("stop")

    c.sleep = sleep
    assert c.run() == 0
    assert all(r.stopped for r in backend.runs.values()) and len(backend.runs) == 3
    assert c.counts()["pending"] == 3 and not c.paths.stop_request.exists()
    backend.behave = lambda job, nodes: Behaviour(polls=1)
    c2 = Controller(load_spec(c.paths), cluster(), backend, c.paths, sleep=lambda s: None)
    assert c2.run() == 0 and c2.counts()["done"] == 3


def test_an_unreachable_node_keeps_its_trial_running():
    o = judge_run(["a", "b"], {"a": NodeRun("exited", 0), "b": NodeRun("unknown")})
    assert o.result is None

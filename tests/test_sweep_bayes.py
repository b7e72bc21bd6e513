"""method: bayes and early_terminate: config, the W&B -> Optuna mapping, and the controller with Optuna's
in-memory storage on the in-process synthetic objective (perf/sweep_objective.py); no machines.

Crashes here are exceptions raised at the two kill points inside one process; the real process
kills are in tests/test_sweep_optuna_cluster.py.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import optuna
import pytest

from launcher.config import ClusterConfig
from launcher.errors import ConfigError
from launcher.sweep.config import sweep_from_mapping
from launcher.sweep.controller import Controller, load_spec, save_spec
from launcher.sweep.generate import generate_trials, sample
from launcher.sweep.journal import Journal, replay
from launcher.sweep.paths import SweepPaths
from launcher.sweep.space import to_distributions
from launcher.sweep.status import build_status, plot_status
from launcher.sweep.study import Settle, SweepStudy, disagreements, orphans, settlements
from perf.sweep_objective import PARAMETERS, SyntheticBackend, final_loss

EVERY_FORM = {
    "opt": {"values": ["adam", "sgd"]},
    "layers": {"min": 2, "max": 8},
    "drop": {"min": 0.0, "max": 0.5},
    "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
    "wd": {"distribution": "log_uniform", "min": -9.0, "max": -2.0},
    "bs": {"distribution": "q_uniform", "min": 16, "max": 128, "q": 16},
    "warm": {"distribution": "int_uniform", "min": 0, "max": 3},
    "epochs": {"value": 3},
    "tag": {"distribution": "constant", "value": "x"},
}


def sweep(**over):
    data = {
        "name": "b",
        "job": {"script": "train.py", "nproc_per_node": 1},
        "method": "bayes",
        "parameters": EVERY_FORM,
        "metric": {"name": "loss"},
        "run_cap": 10,
    }
    data.update(over)
    return sweep_from_mapping(data, "sweep.yaml")


def problems(**over) -> list[str]:
    with pytest.raises(ConfigError) as err:
        sweep(**over)
    return err.value.problems


# ---- config and mapping -------------------------------------------------------------


def test_bayes_accepts_every_mappable_form_and_maps_each_onto_its_optuna_distribution():
    d = to_distributions(sweep().config.parameters)
    D = optuna.distributions
    assert d["opt"] == D.CategoricalDistribution(["adam", "sgd"])
    assert d["layers"] == D.IntDistribution(2, 8) and d["warm"] == D.IntDistribution(0, 3)
    assert d["drop"] == D.FloatDistribution(0.0, 0.5)
    assert d["lr"] == D.FloatDistribution(1e-5, 1e-1, log=True)
    assert d["wd"] == D.FloatDistribution(math.exp(-9), math.exp(-2), log=True)
    assert d["bs"] == D.FloatDistribution(16, 128, step=16)
    assert "epochs" not in d and "tag" not in d  # constants are not searched: every trial gets them


@pytest.mark.parametrize(
    "param, expected",
    [
        (
            {"distribution": "q_log_uniform_values", "min": 1e-4, "max": 1.0, "q": 1e-4},
            "parameters.p: method bayes cannot map distribution q_log_uniform_values",
        ),
        (
            {"distribution": "normal", "mu": 0, "sigma": 1},
            "parameters.p: method bayes cannot map distribution normal onto Optuna: Optuna has no unbounded",
        ),
        (
            {"distribution": "q_normal", "mu": 0, "sigma": 1, "q": 2},
            "parameters.p: method bayes cannot map distribution q_normal",
        ),
        (
            {"distribution": "log_normal", "mu": 0, "sigma": 1},
            "parameters.p: method bayes cannot map distribution log_normal",
        ),
        (
            {"distribution": "q_log_normal", "mu": 0, "sigma": 1},
            "parameters.p: method bayes cannot map distribution q_log_normal",
        ),
        (
            {"distribution": "q_uniform", "min": 1, "max": 10, "q": 4},
            "parameters.p: method bayes needs q_uniform's min and max to be multiples of q",
        ),
        ({"values": [1, 2, 1]}, "parameters.p.values: method bayes needs distinct values"),
        ({"distribution": "beta", "min": 0, "max": 1}, "parameters.p.distribution: expected"),
        (
            {"distribution": "normal", "min": 0, "max": 1},
            "parameters.p: distribution normal takes mu and sigma, not min, max",
        ),
        ({"distribution": "uniform", "min": 0, "max": 1, "q": 0.1}, "parameters.p: q goes with a q_ distribution"),
    ],
)
def test_unmappable_forms_are_field_path_errors(param, expected):
    lines = problems(parameters={"p": param, "x": {"min": 0.0, "max": 1.0}})
    assert any(line.startswith(expected) for line in lines), lines


def test_bayes_needs_run_cap_and_something_to_search():
    assert any(x.startswith("run_cap: method bayes needs run_cap") for x in problems(run_cap=None))
    assert any(
        x.startswith("parameters: method bayes needs at least one parameter")
        for x in problems(parameters={"e": {"value": 1}})
    )


@pytest.mark.parametrize(
    "et, expected",
    [
        ({"type": "hyperband"}, "early_terminate: give min_iter"),
        ({"type": "asha", "min_iter": 3}, "early_terminate.type: expected 'hyperband'"),
        ({"type": "hyperband", "min_iter": 0}, "early_terminate.min_iter: Input should be greater than or equal to 1"),
        (
            {"type": "hyperband", "min_iter": 3, "eta": 1},
            "early_terminate.eta: Input should be greater than or equal to 2",
        ),
        ({"type": "hyperband", "max_iter": 27}, "early_terminate: max_iter needs s"),
        ({"type": "hyperband", "min_iter": 3, "s": 2}, "early_terminate: s needs max_iter"),
        ({"type": "hyperband", "max_iter": 8, "s": 2, "eta": 3}, "early_terminate: max_iter / eta**s must be >= 1"),
        ({"type": "hyperband", "min_iter": 9, "max_iter": 9}, "early_terminate: min_iter must be < max_iter"),
        ({"type": "hyperband", "min_iter": 3, "brackets": 2}, "early_terminate.brackets: unknown key"),
        ({"type": "hyperband", "min_iter": "three"}, "early_terminate.min_iter: expected a whole number"),
    ],
)
def test_bad_early_terminate_values_are_field_path_errors(et, expected):
    lines = problems(method="random", parameters={"x": {"min": 0.0, "max": 1.0}}, early_terminate=et)
    assert any(line.startswith(expected) for line in lines), lines


def test_early_terminate_milestones_follow_wandb():
    et = sweep(early_terminate={"type": "hyperband", "min_iter": 3, "eta": 3}).config.early_terminate
    assert et.milestones(100) == [3, 9, 27, 81]
    et = sweep(early_terminate={"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}).config.early_terminate
    assert et.first_milestone == 3 and et.milestones(100) == [3, 9]


def test_random_draws_the_new_forms_in_range_and_quantised():
    params = {
        **EVERY_FORM,
        "n": {"distribution": "normal", "mu": 5, "sigma": 0.1},
        "qn": {"distribution": "q_normal", "mu": 10, "sigma": 3, "q": 2},
        "qlu": {"distribution": "q_log_uniform_values", "min": 1, "max": 1000, "q": 10},
    }
    s = sweep(method="random", parameters=params, run_cap=30)
    trials = generate_trials(s.config)
    assert len(trials) == 30
    for t in trials:
        p = t.params
        assert p["bs"] % 16 == 0 and 16 <= p["bs"] <= 128
        assert math.exp(-9) <= p["wd"] <= math.exp(-2) and 4 < p["n"] < 6
        assert p["qn"] % 2 == 0 and p["qlu"] % 10 == 0
    assert sample(s.config.parameters["tag"], random.Random(0)) == "x"


# ---- pure agreement rules -------------------------------------------------------------


def _events(*evs):
    return replay([dict(ev=e[0], **e[1]) for e in evs])


def test_settlements_tell_only_final_results_of_running_study_trials():
    st = _events(
        ("start", dict(trial="a", attempt=1, run="s-a", nodes=["n1"], params={}, optuna=0)),
        ("end", dict(trial="a", attempt=1, run="s-a", result="done", metric=1.5)),
        ("start", dict(trial="b", attempt=1, run="s-b", nodes=["n1"], params={}, optuna=1)),
        ("end", dict(trial="b", attempt=1, run="s-b", result="pruned", metric=3.0)),
        ("start", dict(trial="c", attempt=1, run="s-c", nodes=["n1"], params={}, optuna=2)),
        ("end", dict(trial="c", attempt=1, run="s-c", result="failed")),
        ("start", dict(trial="d", attempt=1, run="s-d", nodes=["n1"], params={}, optuna=3)),
    )
    running = {0: "RUNNING", 1: "RUNNING", 2: "RUNNING", 3: "RUNNING", 4: "RUNNING"}
    assert settlements(st, running, retries=1) == [
        Settle("a", 0, "complete", 1.5),
        Settle("b", 1, "pruned", 3.0, "s-b"),
    ]
    assert settlements(st, running, retries=0)[-1] == Settle("c", 2, "fail")  # no retry left: final
    assert settlements(st, {**running, 0: "COMPLETE", 1: "PRUNED"}, retries=1) == []  # told already: never twice
    assert orphans(st, running) == [4]


# ---- the controller on the synthetic objective, in-memory study ------------------------


def cluster(n=3):
    return ClusterConfig.model_validate({"nodes": [{"host": f"h{i}", "name": f"n{i}"} for i in range(1, n + 1)]})


def synthetic_sweep(**over):
    data = {
        "name": "syn",
        "job": {"script": "train.py", "nproc_per_node": 1},
        "method": "bayes",
        "parameters": PARAMETERS,
        "metric": {"name": "loss"},
        "run_cap": 12,
        "poll_interval": 0.1,
        "retries": 1,
    }
    data.update(over)
    return sweep_from_mapping(data, "sweep.yaml")


def make(tmp_path, sweep_, storage, backend=None, n_nodes=3):
    paths = SweepPaths(tmp_path / "_sweeps" / sweep_.name)
    save_spec(paths, sweep_)
    backend = backend or SyntheticBackend(tmp_path / "runs", max_steps=3, steps_per_poll=3)
    spec = load_spec(paths)
    return Controller(
        spec, cluster(n_nodes), backend, paths, sleep=lambda s: None, study=SweepStudy(spec.config, storage)
    ), backend


def agree(c: Controller) -> list[str]:
    st = replay(Journal(c.paths.journal).read())
    return st.problems + disagreements(st, c.study.trials(), c.cfg.retries)


def test_bayes_runs_run_cap_trials_and_study_and_journal_agree(tmp_path):
    c, backend = make(tmp_path, synthetic_sweep(), optuna.storages.InMemoryStorage())
    assert c.run() == 0
    assert c.counts() == {"pending": 0, "running": 0, "done": 12, "pruned": 0, "failed": 0}
    assert agree(c) == []
    states = Counter(t.state.name for t in c.study.trials())
    assert states == {"COMPLETE": 12}
    st = build_status(load_spec(c.paths), c.paths)
    assert st["counts"]["done"] == 12 and st["best"]["metric"] == min(t.value for t in c.study.trials())


def _param_sequence(tmp_path, seed):
    c, _ = make(tmp_path, synthetic_sweep(seed=seed, max_concurrent=1, run_cap=14), optuna.storages.InMemoryStorage())
    assert c.run() == 0
    return [r["params"] for r in Journal(c.paths.journal).read() if r["ev"] == "start"]


def test_bayes_seed_makes_the_sequence_reproducible(tmp_path):
    a, b, c = (_param_sequence(tmp_path / x, seed) for x, seed in (("a", 5), ("b", 5), ("c", 6)))
    assert a == b and a != c and len(a) == 14  # past TPE's 10 random startup trials


def test_bayes_with_concurrency_uses_the_constant_liar_and_never_repeats_a_running_point(tmp_path):
    c, _ = make(tmp_path, synthetic_sweep(max_concurrent=3, run_cap=15), optuna.storages.InMemoryStorage())
    assert c.study.study.sampler._constant_liar is True
    assert c.run() == 0 and agree(c) == []
    ids = [r["trial"] for r in Journal(c.paths.journal).read() if r["ev"] == "start"]
    assert len(ids) == len(set(ids)) == 15


def test_hyperband_prunes_losers_stops_their_runs_and_never_retries_them(tmp_path):
    s = synthetic_sweep(
        method="random",
        run_cap=12,
        max_concurrent=3,
        early_terminate={"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3},
    )
    backend = SyntheticBackend(tmp_path / "runs", max_steps=27, steps_per_poll=1)
    c, _ = make(tmp_path, s, optuna.storages.InMemoryStorage(), backend)
    assert c.run() == 0
    counts = c.counts()
    assert counts["pruned"] > 0 and counts["done"] + counts["pruned"] == 12 and counts["failed"] == 0
    recs = Journal(c.paths.journal).read()
    pruned = [r for r in recs if r["ev"] == "end" and r["result"] == "pruned"]
    assert all("pruned at step" in r["error"] for r in pruned)
    assert all(backend.runs[r["run"]].stopped and backend.runs[r["run"]].step < 27 for r in pruned)
    starts = Counter(r["trial"] for r in recs if r["ev"] == "start")
    assert set(starts.values()) == {1}  # a pruned trial is not a failure: no retry
    assert agree(c) == []
    st = build_status(load_spec(c.paths), c.paths)
    assert st["counts"]["pruned"] == counts["pruned"] and {r["state"] for r in st["trials"]} == {"done", "pruned"}
    png = tmp_path / "curves.png"
    plot_status(st, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the node of a pruned trial is free at once: the next start on it is in the same controller round
    assert backend.steps_spent() < 12 * 27


class Crash(Exception):
    pass


def test_crash_between_an_end_and_its_tell_then_resume_tells_once(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    s = synthetic_sweep(run_cap=6)
    c, backend = make(tmp_path, s, storage)
    real_tell = c.study.tell

    def tell_then_die(settle):
        raise Crash()  # the end is journalled; the study never hears of it

    c.study.tell = tell_then_die
    with pytest.raises(Crash):
        c.run()
    c.lock.path.unlink(
        missing_ok=True
    )  # released by run()'s finally here; a real kill leaves it (tested on the cluster)
    ended = [r for r in Journal(c.paths.journal).read() if r["ev"] == "end"]
    assert len(ended) == 1 and c.study.states()[0] == "RUNNING"
    spec = load_spec(c.paths)
    c2 = Controller(spec, cluster(), backend, c.paths, sleep=lambda x: None, study=SweepStudy(spec.config, storage))
    assert c2.run() == 0 and agree(c2) == []
    assert Counter(t.state.name for t in c2.study.trials()) == {"COMPLETE": 6}
    assert Counter(r["trial"] for r in Journal(c.paths.journal).read() if r["ev"] == "start") == {
        t: 1 for t in c2.state.trials
    }
    assert real_tell  # the first controller's study object was never used again


def test_crash_between_an_ask_and_its_start_adopts_the_asked_trial(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    c, backend = make(tmp_path, synthetic_sweep(run_cap=5), storage)
    real = c._record

    def record(ev, **fields):
        if ev == "start" and len([r for r in Journal(c.paths.journal).read() if r["ev"] == "start"]) == 2:
            raise Crash()  # the third trial was asked of the study, its start never journalled
        real(ev, **fields)

    c._record = record
    with pytest.raises(Crash):
        c.run()
    c.lock.path.unlink(missing_ok=True)
    orphan = orphans(replay(Journal(c.paths.journal).read()), c.study.states())
    assert len(orphan) == 1
    spec = load_spec(c.paths)
    c2 = Controller(spec, cluster(), backend, c.paths, sleep=lambda x: None, study=SweepStudy(spec.config, storage))
    assert c2.run() == 0 and agree(c2) == []
    recs = Journal(c.paths.journal).read()
    numbers = {r["trial"]: r["optuna"] for r in recs if r["ev"] == "start"}
    assert orphan[0] in numbers.values() and len(set(numbers.values())) == len(numbers) == 5
    # the two started before the crash were journalled but never launched: lost, then run again (same study trial)
    assert Counter(r["trial"] for r in recs if r["ev"] == "end" and r["result"] == "done") == {t: 1 for t in numbers}
    assert len(c2.study.trials()) == 5  # the asked trial ran as one of the five, nothing extra was asked


def test_synthetic_objective_optimum():
    assert final_loss({"lr": 10**-2.5, "momentum": 0.8, "opt": "adam"}) == 1.0


def test_study_file_beside_the_journal_never_uses_a_symlink(tmp_path, monkeypatch):
    import os

    def no_symlinks(*a, **k):
        raise OSError(95, "Operation not supported: the shared drive has no symlinks")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    s = synthetic_sweep(run_cap=5, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    paths = SweepPaths(tmp_path / "_sweeps" / s.name)
    save_spec(paths, s)
    backend = SyntheticBackend(tmp_path / "runs", max_steps=4, steps_per_poll=1)
    c = Controller(load_spec(paths), cluster(), backend, paths, sleep=lambda x: None)  # the real file storage
    assert c.run() == 0
    assert (paths.root / "optuna.journal").stat().st_size > 0 and not (paths.root / "optuna.journal.lock").exists()
    assert agree(c) == []
    assert {t.number: t.params for t in c.study.trials()} == {
        r.optuna: {k: r.params[k] for k in ("lr", "momentum", "wd", "layers", "opt")} for r in c.state.trials.values()
    }


def test_grid_without_early_terminate_keeps_no_study(tmp_path):
    s = synthetic_sweep(method="grid", run_cap=None, parameters={"lr": {"values": [0.01, 0.001]}})
    paths = SweepPaths(tmp_path / "_sweeps" / s.name)
    save_spec(paths, s)
    c = Controller(
        load_spec(paths), cluster(), SyntheticBackend(tmp_path / "runs", max_steps=1), paths, sleep=lambda x: None
    )
    assert c.run() == 0 and c.study is None and not (paths.root / "optuna.journal").exists()


def test_grid_with_early_terminate_labels_its_study_trials_with_corral_ids(tmp_path):
    s = synthetic_sweep(
        method="grid",
        run_cap=None,
        parameters={"lr": {"values": [0.003, 0.5, 0.9]}},
        early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2},
    )
    c, _ = make(
        tmp_path, s, optuna.storages.InMemoryStorage(), SyntheticBackend(tmp_path / "runs", max_steps=8), n_nodes=1
    )
    assert c.run() == 0 and agree(c) == []
    assert {t.user_attrs["corral_trial"]: t.number for t in c.study.trials()} == {
        r.id: r.optuna for r in c.state.trials.values()
    }
    assert c.counts()["pruned"] == 2  # one node, best first: the others lose at step 2


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_bayes_with_early_terminate_prunes_and_agrees(tmp_path, pruner):
    s = synthetic_sweep(
        run_cap=15,
        max_concurrent=3,
        early_terminate={"type": "hyperband", "min_iter": 1, "max_iter": 27, "eta": 3, "pruner": pruner},
    )
    backend = SyntheticBackend(tmp_path / "runs", max_steps=27, steps_per_poll=1)
    c, _ = make(tmp_path, s, optuna.storages.InMemoryStorage(), backend)
    kind = type(c.study.study.pruner).__name__
    assert kind == {"successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner"}[pruner]
    assert c.run() == 0 and agree(c) == []
    counts = c.counts()
    assert counts["pruned"] > 0 and counts["done"] + counts["pruned"] == 15
    assert backend.steps_spent() < 15 * 27


def test_benchmark_script_runs_both_arms_and_reports_its_bars(tmp_path):
    from perf import results_log, sweep_bench

    out = tmp_path / "bench.json"
    sweep_bench.main(["--seeds", "1", "--budget", "12", "--hb-trials", "6", "--json", str(out)])
    (run,) = results_log.read(out)["runs"]  # one dated run in the measurement file
    assert run["command"].startswith("python -m perf.sweep_bench --seeds 1")
    data = run["result"]
    assert set(data["summary"]) == {"bayes_vs_random", "hyperband", "overhead_ms_per_trial"}
    hb = {r["early"]: r for r in data["runs"] if r.get("hb")}
    assert hb[True]["trial_steps"] < hb[False]["trial_steps"] == 6 * 27 and hb[True]["pruned"] > 0
    assert all(r["fsyncs_per_trial"] > 0 for r in data["runs"])


def test_a_finished_trial_reports_its_whole_curve_to_the_study(tmp_path):
    s = synthetic_sweep(
        method="random", run_cap=4, max_concurrent=1, early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2}
    )
    backend = SyntheticBackend(tmp_path / "runs", max_steps=9, steps_per_poll=9)  # each trial ends within one poll
    c, _ = make(tmp_path, s, optuna.storages.InMemoryStorage(), backend, n_nodes=1)
    assert c.run() == 0 and agree(c) == []
    assert all(sorted(t.intermediate_values) == list(range(1, 10)) for t in c.study.trials())
    assert c.counts()["done"] == 4  # no poll saw them running: nothing to prune


def test_dry_run_of_a_bayes_sweep_shows_the_search_space(tmp_path, capsys):
    import yaml

    from launcher.cli import main

    f = tmp_path / "b.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "name": "b",
                "job": {"script": "train.py", "nproc_per_node": 1},
                "method": "bayes",
                "parameters": EVERY_FORM,
                "metric": {"name": "loss"},
                "run_cap": 10,
            }
        )
    )
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        yaml.safe_dump({"nodes": [{"host": "h1", "name": "n1"}], "storage": {"runs": str(tmp_path / "runs")}})
    )
    assert main(["sweep", str(f), "-c", str(cluster), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "bayes, 10 trial(s) of 1 node(s) each" in out and "lr: FloatDistribution(1e-05, 0.1, log=True)" in out
    assert (
        "bs: FloatDistribution(16, 128, step=16)" in out
        and "epochs: constant 3" in out
        and "layers: IntDistribution(2, 8)" in out
    )


def test_replay_keeps_a_trials_optuna_number_across_attempts_and_flags_a_change():
    st = _events(
        ("start", dict(trial="a", attempt=1, run="s-a", nodes=["n1"], params={}, optuna=4)),
        ("end", dict(trial="a", attempt=1, run="s-a", result="lost")),
        ("start", dict(trial="a", attempt=2, run="s-a-2", nodes=["n1"], params={}, optuna=4)),
    )
    assert st.trials["a"].optuna == 4 and st.problems == []
    st.apply({"ev": "end", "trial": "a", "attempt": 2, "run": "s-a-2", "result": "failed"})
    st.apply({"ev": "start", "trial": "a", "attempt": 3, "run": "s-a-3", "nodes": ["n2"], "params": {}, "optuna": 5})
    assert st.problems == ["trial a: attempt 3 names Optuna trial 5, an earlier attempt 4"]

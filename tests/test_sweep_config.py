"""Sweep file validation, parameter generation and trial ids: pure, no machines."""

from __future__ import annotations

import pytest

from launcher.errors import ConfigError
from launcher.sweep.config import SweepConfig, load_sweep, sweep_from_mapping
from launcher.sweep.generate import generate_trials, trial_id
from launcher.sweep.trial_job import build_trial_job, run_name, trial_args


def sweep(**over):
    data = {
        "name": "lr",
        "job": {"script": "train.py", "args": ["--epochs=1"]},
        "method": "grid",
        "parameters": {"lr": {"values": [0.1, 0.01]}, "bs": {"values": [16, 32, 64]}},
        "metric": {"name": "loss"},
    }
    data.update(over)
    return sweep_from_mapping(data, "sweep.yaml")


def problems(**over) -> list[str]:
    with pytest.raises(ConfigError) as err:
        sweep(**over)
    return err.value.problems


@pytest.mark.parametrize(
    "over, expected",
    [
        ({"bogus": 1}, "bogus: unknown key"),
        ({"parameters": {"lr": {"values": []}}}, "parameters.lr.values: values must not be empty"),
        ({"parameters": {"lr": {"vals": [1]}}}, "parameters.lr.vals: unknown key"),
        (
            {"method": "random", "run_cap": 2, "parameters": {"lr": {"min": 1.0, "max": 0.1}}},
            "parameters.lr: min must be <= max",
        ),
        (
            {
                "method": "random",
                "run_cap": 2,
                "parameters": {"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}},
            },
            "parameters.lr: log_uniform_values needs min > 0",
        ),
        ({"run_cap": 4}, "run_cap: the grid has 6 combinations but run_cap is 4"),
        ({"method": "random", "parameters": {"lr": {"min": 0.1, "max": 1}}}, "run_cap: method random needs run_cap"),
        ({"parameters": {"lr": {"min": 0.1, "max": 1}}}, "parameters.lr: grid cannot enumerate a uniform range"),
        (
            {"parameters": {"lr": {"value": 1, "values": [2]}}},
            "parameters.lr: give exactly one of value, values, or min and max",
        ),
        (
            {"metric": {"name": "loss", "goal": "lowest"}},
            "metric.goal: expected 'minimize' or 'maximize' (got 'lowest')",
        ),
        ({"args_template": ["--lr={lr}", "--x={nope}"]}, "args_template.1: '{nope}' is not a parameter"),
        ({"job": {"script": "t.py", "nproc_per_node": "eight"}}, "job.nproc_per_node:"),
        ({"parameters": {"--lr": {"value": 1}}}, "parameters: parameter names become --NAME=VALUE"),
        ({"name": "has space"}, "name: expected a name of letters, digits, '_' and '-'"),
        ({"retries": -1}, "retries: Input should be greater than or equal to 0"),
    ],
)
def test_bad_sweep_files_name_the_field(over, expected):
    lines = problems(**over)
    assert any(line.startswith(expected) for line in lines), lines


def test_sweep_and_job_problems_reported_together():
    lines = problems(bogus=1, job={"script": "t.py", "typo": 2})
    assert any(line.startswith("bogus:") for line in lines) and any(line.startswith("job.typo:") for line in lines), (
        lines
    )


def test_partial_grid_when_said_so():
    s = sweep(run_cap=4, allow_partial_grid=True)
    assert len(generate_trials(s.config)) == 4


def test_job_from_a_file_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "job.yaml").write_text("name: base\nscript: train.py\nnproc_per_node: 1\n")
    (tmp_path / "sweep.yaml").write_text(
        "name: s1\njob: job.yaml\nmethod: grid\nparameters: {lr: {values: [1, 2]}}\nmetric: {name: loss}\n"
    )
    s = load_sweep(tmp_path / "sweep.yaml")
    assert s.job.script == "train.py" and s.job.name == "base"


def test_missing_job_file_is_a_config_error(tmp_path):
    (tmp_path / "sweep.yaml").write_text(
        "name: s1\njob: nope.yaml\nmethod: grid\nparameters: {lr: {value: 1}}\nmetric: {name: loss}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(tmp_path / "sweep.yaml")
    assert "file not found" in str(err.value)


def test_grid_order_and_ids_are_deterministic():
    trials = generate_trials(sweep().config)
    assert [t.params for t in trials] == [
        {"lr": 0.1, "bs": 16},
        {"lr": 0.1, "bs": 32},
        {"lr": 0.1, "bs": 64},
        {"lr": 0.01, "bs": 16},
        {"lr": 0.01, "bs": 32},
        {"lr": 0.01, "bs": 64},
    ]
    assert [t.id for t in trials] == [t.id for t in generate_trials(sweep().config)]
    assert len({t.id for t in trials}) == 6


def test_trial_id_ignores_key_order_but_not_types():
    assert trial_id({"a": 1, "b": "x"}) == trial_id({"b": "x", "a": 1})
    assert trial_id({"a": 1}) != trial_id({"a": 1.0}) != trial_id({"a": True})
    assert len(trial_id({"a": 1})) == 10


def test_random_is_seeded_in_range_and_unique():
    params = {
        "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
        "layers": {"min": 1, "max": 8},
        "drop": {"min": 0.0, "max": 0.5},
        "opt": {"values": ["adam", "sgd"]},
        "epochs": {"value": 3},
    }
    a = generate_trials(sweep(method="random", run_cap=20, seed=7, parameters=params).config)
    b = generate_trials(sweep(method="random", run_cap=20, seed=7, parameters=params).config)
    c = generate_trials(sweep(method="random", run_cap=20, seed=8, parameters=params).config)
    assert a == b and a != c and len(a) == 20 and len({t.id for t in a}) == 20
    for t in a:
        p = t.params
        assert 1e-5 <= p["lr"] <= 1e-1 and isinstance(p["layers"], int) and 1 <= p["layers"] <= 8
        assert 0 <= p["drop"] <= 0.5 and p["opt"] in ("adam", "sgd") and p["epochs"] == 3


def test_random_over_a_small_discrete_space_stops_at_its_size():
    s = sweep(method="random", run_cap=50, parameters={"opt": {"values": ["a", "b", "c"]}})
    assert sorted(t.params["opt"] for t in generate_trials(s.config)) == ["a", "b", "c"]


def test_trial_job_args_env_and_name():
    s = sweep(nodes=2, nproc_per_node=1)
    t = generate_trials(s.config)[0]
    job = build_trial_job(s, t, 1)
    assert job.name == run_name("lr", t.id, 1) == f"lr-{t.id}"
    assert job.args == ["--epochs=1", "--lr=0.1", "--bs=16"]
    assert job.nnodes == 2 and job.nproc_per_node == 1
    assert job.env["CORRAL_TRIAL_PARAMS"] == '{"bs":16,"lr":0.1}' and job.env["CORRAL_TRIAL_ID"] == t.id
    assert build_trial_job(s, t, 3).name == f"lr-{t.id}-3"


def test_args_template_with_hostile_values_stays_one_argument_each():
    hostile = "a b'c\"$(rm -rf /);`x`\nz"
    s = sweep(
        parameters={"tag": {"value": hostile}, "flag": {"value": True}},
        args_template=["--tag", "{tag}", "--flag={flag}"],
    )
    t = generate_trials(s.config)[0]
    assert trial_args(s, t.params) == ["--tag", hostile, "--flag=true"]


def test_sweep_fields_are_frozen():
    assert list(SweepConfig.model_fields) == [
        "name",
        "job",
        "method",
        "parameters",
        "metric",
        "run_cap",
        "allow_partial_grid",
        "seed",
        "nodes",
        "nproc_per_node",
        "max_concurrent",
        "retries",
        "args_template",
        "plain",
        "poll_interval",
        "early_terminate",
    ]
    for name, field in SweepConfig.model_fields.items():
        assert field.description, name

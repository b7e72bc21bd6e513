"""Strict configs: good files load, bad ones give every problem with its field path and exit 2."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.cli import main
from launcher.config import ClusterConfig, JobConfig, apply_overrides, load_cluster, parse_yaml, validate
from launcher.config.loading import DEFAULT_CLUSTER_FILE
from launcher.errors import ConfigError, UserError

GOOD_CLUSTER = {
    "nodes": [
        {"host": "gpu1", "name": "g1", "gpus": 8, "addr": "10.0.0.1", "env": {"NCCL_DEBUG": "INFO"}},
        {"host": "ubuntu@gpu2", "gpus": 8, "addr": "10.0.0.2"},
    ],
    "ssh": {
        "user": "paperspace",
        "port": 2222,
        "identity_file": "~/.ssh/id_ed25519",
        "options": {"ServerAliveInterval": 15},
        "connect_timeout": 5,
    },
    "workdir": "/home/paperspace/code",
    "venv": "/home/paperspace/venv",
    "rendezvous": {"port": 29500},
    "storage": {"runs": "/mnt/shared/runs", "checkpoints": "/mnt/shared/ckpt"},
    "env": {"OMP_NUM_THREADS": 4, "DEBUG": True},
}

GOOD_JOB = {
    "name": "train-1",
    "script": "train.py",
    "args": ["--lr", 0.1],
    "nproc_per_node": "auto",
    "nnodes": "1:2",
    "backend": "nccl",
    "max_restarts": 2,
}


def problems(model, data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(model, data, "f.yaml")
    return info.value.problems


def test_good_cluster_loads_and_coerces_env_scalars():
    c = validate(ClusterConfig, GOOD_CLUSTER, "c.yaml")
    assert c.env == {"OMP_NUM_THREADS": "4", "DEBUG": "1"}
    assert c.ssh.options == {"ServerAliveInterval": "15"}
    assert [n.label for n in c.nodes] == ["g1", "ubuntu@gpu2"]
    assert c.node("g1").addr == "10.0.0.1"


def test_good_job_loads_and_computes_node_bounds():
    j = validate(JobConfig, GOOD_JOB, "j.yaml")
    assert j.args == ["--lr", "0.1"]
    assert j.nnodes_bounds(4) == (1, 2)
    assert validate(JobConfig, {"name": "a", "module": "pkg.train"}, "j").nnodes_bounds(3) == (3, 3)


@pytest.mark.parametrize(
    "patch, expected",
    [
        (
            {"nodes": [{"host": "a", "gpus": "eight"}]},
            "nodes.0.gpus: expected a whole number (got 'eight')",
        ),
        ({"nodes": []}, "nodes: List should have at least 1 item"),
        ({"nodes": [{"host": "a", "gpus": -1}]}, "nodes.0.gpus: Input should be greater than or equal to 0 (got -1)"),
        ({"nodes": [{"host": "a"}, {"host": "a"}]}, "duplicate host 'a'"),
        ({"nodes": [{"host": "a", "name": "x"}, {"host": "b", "name": "x"}]}, "duplicate name 'x'"),
        ({"nodes": [{"host": "a", "gpu": 1}]}, "nodes.0.gpu: unknown key"),
        (
            {"nodes": [{"host": "a"}], "rendezvous": {"port": 70000}},
            "rendezvous.port: Input should be less than or equal to 65535 (got 70000)",
        ),
        (
            {"nodes": [{"host": "a"}], "ssh": {"port": 0}},
            "ssh.port: Input should be greater than or equal to 1 (got 0)",
        ),
        ({"nodes": [{"host": "a", "addr": "fe80::1"}]}, "nodes.0.addr: addr must be an IPv4 address"),
        ({"nodes": [{"host": "a b"}]}, "nodes.0.host: host must be one word"),
        ({"nodes": [{"host": "a"}], "env": {"1BAD": "x"}}, "env: invalid environment variable name"),
    ],
)
def test_bad_cluster_names_the_field(patch, expected):
    found = problems(ClusterConfig, patch)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_not_just_the_first():
    found = problems(ClusterConfig, {"nodes": [{"host": "a", "gpus": "x"}], "ssh": {"port": "y"}, "typo": 1})
    assert len(found) == 3, found


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"name": "j"}, "give exactly one of 'script' or 'module'"),
        ({"name": "j", "script": "a.py", "module": "b"}, "give exactly one of 'script' or 'module'"),
        ({"name": "a.b", "script": "t.py"}, "name: job name must be"),
        (
            {"name": "j", "script": "t.py", "nproc_per_node": "many"},
            "nproc_per_node: expected a whole number or 'auto' (got 'many')",
        ),
        ({"name": "j", "script": "t.py", "nnodes": "3:1"}, "nnodes: nnodes range must be MIN:MAX"),
        (
            {"name": "j", "script": "t.py", "backend": "mpi"},
            "backend: expected 'auto', 'nccl' or 'gloo' (got 'mpi')",
        ),
        (
            {"name": "j", "script": "t.py", "max_restarts": -1},
            "max_restarts: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_job_names_the_field(data, expected):
    found = problems(JobConfig, data)
    assert any(expected in p for p in found), found


def test_yaml_syntax_error_has_line_and_column():
    with pytest.raises(ConfigError) as info:
        parse_yaml("nodes:\n  - host: a\n    gpus: [1,\n", "c.yaml")
    assert "line 4, column 1" in info.value.problems[0]


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string"])
def test_yaml_that_is_not_a_mapping_is_rejected(text):
    with pytest.raises(ConfigError):
        parse_yaml(text)


def test_embedded_default_is_one_local_node():
    cluster = load_cluster(None)
    assert DEFAULT_CLUSTER_FILE.exists()
    assert [n.host for n in cluster.nodes] == ["localhost"] and cluster.nodes[0].is_local
    assert cluster.storage.runs == "./runs" and cluster.storage.checkpoints == "./checkpoints"


def test_overrides_set_nested_and_list_values():
    data = apply_overrides(GOOD_JOB, ["max_restarts=3", "args.1=0.5", "env.TOKEN=abc", "nnodes=2"])
    j = validate(JobConfig, data, "j")
    assert (j.max_restarts, j.args, j.env, j.nnodes) == (3, ["--lr", "0.5"], {"TOKEN": "abc"}, 2)
    assert GOOD_JOB["max_restarts"] == 2  # the input is not modified
    with pytest.raises(UserError):
        apply_overrides(GOOD_JOB, ["novalue"])


# --- through the CLI: exit 2 with field paths, never a traceback ---------------------------------


def run_check(tmp_path: Path, text: str, capsys) -> tuple[int, str]:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    rc = main(["config", "check", str(f)])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_check_ok_prints_summary(tmp_path, capsys):
    rc, out = run_check(tmp_path, yaml.safe_dump(GOOD_CLUSTER), capsys)
    assert rc == 0 and "ok (cluster)" in out and "2 node(s)" in out


def test_check_bad_file_exits_2_with_paths(tmp_path, capsys):
    rc, out = run_check(tmp_path, "nodes:\n  - host: a\n    gpus: eight\n", capsys)
    assert rc == 2
    assert "nodes.0.gpus: expected a whole number" in out and "(got 'eight')" in out
    assert "Traceback" not in out


def test_check_missing_file_exits_2(tmp_path, capsys):
    assert main(["config", "check", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_schema_prints_json_for_both_kinds(capsys):
    import json

    for kind in ("cluster", "job"):
        assert main(["config", "schema", kind]) == 0
        schema = json.loads(capsys.readouterr().out)
        assert schema["additionalProperties"] is False


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=12)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(string.ascii_letters + "_", max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
cluster_keys = st.sampled_from(
    ["nodes", "ssh", "workdir", "venv", "rendezvous", "storage", "env", "extra", "gpus", "port"]
)
node_dicts = st.dictionaries(st.sampled_from(["host", "name", "gpus", "env", "addr", "bogus"]), yaml_values, max_size=5)
cluster_docs = st.one_of(
    st.dictionaries(cluster_keys, yaml_values, max_size=6),
    st.fixed_dictionaries(
        {"nodes": st.lists(node_dicts, max_size=4)},
        optional={
            "rendezvous": st.fixed_dictionaries({"port": st.integers(-5, 70000)}),
            "ssh": st.dictionaries(st.sampled_from(["user", "port", "options", "connect_timeout"]), yaml_values),
        },
    ),
    yaml_values,
)
job_docs = st.dictionaries(
    st.sampled_from(
        [
            "name",
            "script",
            "module",
            "args",
            "nproc_per_node",
            "nnodes",
            "backend",
            "max_restarts",
            "env",
            "env_file",
            "container",
            "checkpoint",
            "oops",
        ]
    ),
    yaml_values,
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(cluster_docs, job_docs), kind=st.sampled_from(["cluster", "job"]))
def test_generated_documents_never_give_a_traceback(tmp_path, capsys, doc, kind):
    f = tmp_path / "gen.yaml"
    f.write_text(yaml.safe_dump(doc))
    rc = main(["config", "check", "--kind", kind, str(f)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text and "internal error" not in text
    assert rc in (0, 2)
    if rc == 2:
        assert "problem(s)" in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8"), max_size=80))
def test_arbitrary_text_never_gives_a_traceback(tmp_path, capsys, text):
    f = tmp_path / "raw.yaml"
    f.write_text(text, encoding="utf-8")
    rc = main(["config", "check", str(f)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "internal error" not in out.err
    assert rc in (0, 2)

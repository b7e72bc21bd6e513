"""Launch options are one typed object, resolved once by ``prepare`` (no node is asked: dry runs)."""

from __future__ import annotations

import pytest

from launcher.backends.ssh.execute import prepare
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import UserError
from launcher.runs.options import LaunchOptions


def cluster() -> ClusterConfig:
    return ClusterConfig.model_validate(
        {"nodes": [{"host": "10.0.0.1", "name": "a", "gpus": 2}, {"host": "10.0.0.2", "name": "b"}]}
    )


def job() -> JobConfig:
    return JobConfig.model_validate({"name": "train", "script": "train.py", "args": ["--lr", "0.1"]})


def test_keywords_and_the_object_give_the_same_plan(tmp_path, monkeypatch):
    monkeypatch.delenv("CORRAL_TMUX_SOCKET", raising=False)
    kw = dict(name="r1", nodes=["b"], set_=["args.1=0.2"], dry_run=True, base_dir=str(tmp_path), run_id="r1-x")
    by_kw = prepare(job(), cluster(), **kw)
    by_obj = prepare(job(), cluster(), LaunchOptions.of(**kw))
    assert by_kw.plan.to_dict() == by_obj.plan.to_dict()
    assert [n.node for n in by_obj.plan.nodes] == ["b"] and by_obj.plan.nodes[0].command[-2:] == ["--lr", "0.2"]


def test_prepare_resolves_every_default_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", "sockX")
    monkeypatch.chdir(tmp_path)
    opts = prepare(job(), cluster(), LaunchOptions(dry_run=True)).options
    assert opts.name == "train" and opts.base_dir == str(tmp_path) and opts.tmux_socket == "sockX"
    assert opts.run_id.startswith("train-") and len(opts.run_id) == len("train-") + 8


def test_bad_name_and_mixed_arguments_are_refused():
    with pytest.raises(UserError, match="--name"):
        prepare(job(), cluster(), LaunchOptions(name="no spaces", dry_run=True))
    with pytest.raises(TypeError):
        LaunchOptions.of(LaunchOptions(), name="x")

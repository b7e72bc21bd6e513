"""The run record names its backend and keeps that backend's state opaque; old records still read.

Pure: records are written to a temporary directory and read back; the backend registry is asked by
name only (no node, no scheduler).
"""

from __future__ import annotations

import json

import pytest

from launcher import backends
from launcher.config import ClusterConfig
from launcher.errors import UserError
from launcher.plan import JobPlan
from launcher.runs.record import RunRecord, load


def stub_plan(run_dir: str, name: str) -> JobPlan:
    return JobPlan(
        name=name,
        run_id=f"{name}-0001",
        run_dir=run_dir,
        ckpt_dir=run_dir + "-ckpt",
        backend="gloo",
        plain=True,
        nnodes="1",
        rdzv_endpoint=None,
        max_restarts=0,
        secret_names=[],
        tmux_socket=None,
        nodes=[],
    )


def write_raw(tmp_path, name: str, **fields) -> None:
    record = RunRecord(name, f"{name}-0001", stub_plan(str(tmp_path / name), name), 1.0)
    data = record.to_dict()
    data.pop("backend")
    data.pop("backend_state")
    data.update(fields)
    (tmp_path / name).mkdir()
    (tmp_path / name / "run.json").write_text(json.dumps(data))


def test_a_record_names_its_backend_and_round_trips(tmp_path):
    rec = RunRecord("a", "a-1", stub_plan(str(tmp_path / "a"), "a"), 1.0, backend="slurm")
    rec.backend_state = {"job_id": "42", "plan": {"x": 1}}
    rec.save()
    raw = json.loads((tmp_path / "a" / "run.json").read_text())
    assert raw["backend"] == "slurm" and raw["backend_state"] == {"job_id": "42", "plan": {"x": 1}}
    assert "slurm" not in raw and "processes" not in raw
    back = load(tmp_path, "a")
    assert (back.backend, back.backend_state) == ("slurm", rec.backend_state)


def test_records_written_before_backends_were_named_still_read(tmp_path):
    write_raw(tmp_path, "old-slurm", slurm={"job_id": "7", "plan": {}}, processes={})
    write_raw(tmp_path, "old-ssh", slurm=None, processes={"n1": [10, 10, 10]})
    write_raw(tmp_path, "old-empty", slurm=None, processes={})
    s, h, e = (load(tmp_path, n) for n in ("old-slurm", "old-ssh", "old-empty"))
    assert (s.backend, s.backend_state["job_id"]) == ("slurm", "7")
    assert (h.backend, h.backend_state) == ("ssh", {"processes": {"n1": [10, 10, 10]}})
    assert (e.backend, e.backend_state) == ("ssh", {})


def test_the_cluster_file_picks_the_backend_by_name():
    ssh = ClusterConfig.model_validate({"nodes": [{"host": "localhost"}]})
    slurm = ClusterConfig.model_validate({"slurm": {"partition": "debug"}})
    assert backends.backend_name(ssh) == "ssh" and backends.backend_name(slurm) == "slurm"
    assert backends.backend_for(ssh).capabilities.places_nodes is False
    assert backends.backend_for(slurm).capabilities.places_nodes is True
    named = ClusterConfig.model_validate({"backend": "nosuch", "nodes": [{"host": "localhost"}]})
    with pytest.raises(UserError, match=r"backend: no backend named 'nosuch' \(known: slurm, ssh\)"):
        backends.backend_for(named)


def test_register_adds_a_backend_with_one_line_and_unregister_removes_it():
    class Fake:
        name = "fake"
        capabilities = backends.Capabilities(places_nodes=True)

    backends.register("fake", Fake)
    try:
        cluster = ClusterConfig.model_validate({"backend": "fake", "nodes": [{"host": "localhost"}]})
        assert isinstance(backends.backend_for(cluster), Fake)
        assert "fake" in backends.registered()
    finally:
        backends.unregister("fake")
    assert "fake" not in backends.registered()


def test_a_record_of_an_unknown_backend_is_one_sentence(tmp_path):
    rec = RunRecord("z", "z-1", stub_plan(str(tmp_path / "z"), "z"), 1.0, backend="gone")
    with pytest.raises(UserError, match=r"run z: no backend named 'gone'"):
        backends.backend_of(rec)

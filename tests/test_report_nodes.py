"""``report()`` inside a job: global rank 0 writes the run's metrics, each node's local rank 0 its node's."""

from __future__ import annotations

import json

import pytest

from launcher.report import report


@pytest.mark.parametrize(
    ("rank", "local_rank", "run_file", "node_file"),
    [
        ("0", "0", True, True),
        ("2", "0", False, True),
        ("3", "1", False, False),
    ],
)
def test_who_writes_which_file(tmp_path, monkeypatch, rank, local_rank, run_file, node_file):
    monkeypatch.setenv("CORRAL_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("CORRAL_NODE", "gpu-2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    record = report(step=7, loss=0.5)
    node_path = tmp_path / "nodes" / "gpu-2" / "metrics.jsonl"
    assert (tmp_path / "metrics.jsonl").exists() is run_file
    assert node_path.exists() is node_file
    if node_file:
        assert json.loads(node_path.read_text()) == record and record["step"] == 7

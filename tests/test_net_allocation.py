"""``benchmarks.net.allocation``: bench net from inside one job, as on Slurm, here as processes on loopback.

The protocol and the result's shape; the same worker on the test Slurm cluster's nodes is in
``tests/test_slurm_cluster.py::test_bench_cluster_quick_on_the_allocation``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from benchmarks.net import run as bn
from benchmarks.net.allocation import RESULT_FILE

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run_dir: Path, nnodes: int, ranks: list[int], *args: str) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in ranks:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CORRAL_NODE": f"node{rank}",
            "CORRAL_NODE_RANK": str(rank),
            "CORRAL_NNODES": str(nnodes),
            "CORRAL_RDZV_ENDPOINT": f"127.0.0.1:{port}",
            "CORRAL_RUN_DIR": str(run_dir),
        }
        argv = [sys.executable, "-m", "benchmarks.net.allocation", "--duration", "0.3", "--interval", "0.1", *args]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=60), *p.communicate()) for p in procs]


def test_every_ordered_pair_is_measured_by_rank_with_the_coordinators_order(tmp_path):
    outs = _finish(_start(tmp_path, 3, [2, 0, 1], "--pairs", "all"))  # the order they start in does not matter
    assert all(code == 0 for code, _, _ in outs), outs
    doc = json.loads((tmp_path / RESULT_FILE).read_text())
    assert doc["mode"] == "all" and [n["name"] for n in doc["nodes"]] == ["node0", "node1", "node2"]
    names = ["node0", "node1", "node2"]
    assert [(p["src"], p["dst"]) for p in doc["pairs"]] == [(a, b) for a in names for b in names if a != b]
    assert all(p["recv"]["bytes"] > 0 and p["recv"]["series_bytes"] for p in doc["pairs"])


def test_the_ring_and_the_result_bench_net_reports(tmp_path, monkeypatch):
    outs = _finish(_start(tmp_path, 3, [0, 1, 2], "--pairs", "ring"))
    assert all(code == 0 for code, _, _ in outs), outs
    doc = json.loads((tmp_path / RESULT_FILE).read_text())
    assert [(p["src"], p["dst"]) for p in doc["pairs"]] == [("node0", "node1"), ("node1", "node2"), ("node2", "node0")]

    class Done:  # what run_to_completion hands back: the coordinator's file from whichever node has it
        timed_out = False

        def first(self, relpath):
            return (tmp_path / relpath).read_text()

    monkeypatch.setattr("launcher.api.run_to_completion", lambda *a, **k: Done())
    result = bn.run_in_allocation(None, pairs="ring", duration=0.3)
    assert result["pairs_mode"] == "ring" and not result["failed"]
    assert result["matrix_gbps"]["node0"]["node1"] > 0 and result["matrix_gbps"]["node0"]["node2"] is None


def test_a_node_that_never_joins_is_named_and_nothing_is_written(tmp_path):
    [(code, _, err)] = _finish(_start(tmp_path, 2, [0], "--join-timeout", "1"))
    assert code == 1 and "node rank(s) [1] did not join" in err
    assert not (tmp_path / RESULT_FILE).exists()

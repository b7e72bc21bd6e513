"""``corral bench volume -c``: the worker on every simulated node at once, through the launch API.

The nodes share the host's filesystem (except /tmp), so the benchmarked PATH is a shared drive
that every node writes to at the same time, as on a cloud's shared volume.
"""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.volume.cluster import run_on_cluster
from benchmarks.volume.plan import build_plan
from launcher.cli import main
from launcher.config import ClusterConfig

pytestmark = pytest.mark.cluster


def test_every_node_at_once_gives_per_node_and_aggregate_figures(sim_cluster):
    cluster = ClusterConfig.model_validate(sim_cluster.cluster_config())
    shared = sim_cluster.shared_dir / "vol"
    shared.mkdir(parents=True, exist_ok=True)
    plan = build_plan(str(shared), size="8M", modes="seqwrite,randread", duration_s=1, limit_mibps=128)
    doc = run_on_cluster(plan, cluster, timeout_s=120)
    names = [n.hostname for n in sim_cluster.nodes]
    assert doc["nodes"] == names and not doc["failed_nodes"]
    assert sorted({r["node"] for r in doc["results"]}) == sorted(names)
    assert {(r["node"], r["mode"]) for r in doc["results"]} == {(n, m) for n in names for m in ("seqwrite", "randread")}
    by_mode = {a["mode"]: a for a in doc["aggregate"]}
    assert by_mode["seqwrite"]["nodes"] == 3
    assert by_mode["seqwrite"]["mib_per_s"] == pytest.approx(
        sum(r["mib_per_s"] for r in doc["results"] if r["mode"] == "seqwrite")
    )
    assert os.listdir(shared) == []


def test_cli_runs_on_the_named_node_only(sim_cluster, tmp_path, capsys):
    cfg = sim_cluster.write_cluster_config()
    shared = sim_cluster.shared_dir / "vol2"
    shared.mkdir(parents=True, exist_ok=True)
    node = sim_cluster.nodes[1].hostname
    out = tmp_path / "v.json"
    rc = main(
        [
            "bench",
            "volume",
            str(shared),
            "-c",
            str(cfg),
            "--node",
            node,
            "--size",
            "8M",
            "--mode",
            "seqwrite",
            "--json-out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert [r["node"] for r in doc["results"]] == [node]
    assert "all nodes at once" in capsys.readouterr().out
    assert os.listdir(shared) == []


def test_unknown_node_is_refused(sim_cluster, capsys):
    cfg = sim_cluster.write_cluster_config()
    assert main(["bench", "volume", str(sim_cluster.shared_dir), "-c", str(cfg), "--node", "nope", "--size", "8M"]) == 2
    assert "--node nope: no such node" in capsys.readouterr().err

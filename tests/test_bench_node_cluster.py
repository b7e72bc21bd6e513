"""`corral bench node -c` across 3 simulated nodes, for real: the probe runs on every node through the
launch path (tmux over ssh), each node writes its JSON into the run directory, and the peers are judged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from launcher.cli import main

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.cluster


def test_cpu_probe_runs_on_three_simulated_nodes_and_is_judged_across_peers(sim_cluster, tmp_path):
    # The controller (this process) reads the cluster file and the report on the host, so tmp_path is fine;
    # the nodes write their probes under storage.runs, which the sim puts outside /tmp.
    cluster_file = sim_cluster.write_cluster_config(tmp_path / "cluster.yaml", workdir=str(REPO), venv=sys.prefix)
    report_file = tmp_path / "report.json"
    code = main(["bench", "node", "-c", str(cluster_file), "--json-out", str(report_file), "--timeout", "240"])
    report = json.loads(report_file.read_text())
    assert code == 0, report["summary"]
    hosts = [n["host"] for n in report["nodes"]]
    assert hosts == [n.hostname for n in sim_cluster.nodes]
    for node, sim in zip(report["nodes"], sim_cluster.nodes):
        checks = {c["name"]: c for c in node["checks"]}
        assert "probe" not in checks, checks.get("probe")
        # Each probe really ran on its node: the hostname is the node's, not this machine's.
        assert node["host_info"]["hostname"] == sim.hostname
        assert checks["nvidia_driver"]["status"] == "skip"
        assert node["speed"]["cpu"]["gemm_fp32_gflops"] > 0
        # CPU figures were compared across the three nodes (warn at most: the cores are shared).
        assert checks["peer_cpu_gemm"]["status"] in ("pass", "warn")
        assert checks["peer_cpu_gemm"]["expected"] > 0

"""bench allreduce and bench net for real: 3 simulated nodes, torchrun/gloo through the launch path, TCP with tc limits."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path

import pytest

from launcher.cli import main
from tests.infra.tmux_server import end_server

pytestmark = pytest.mark.cluster

LIMIT_MBIT = 100


@pytest.fixture
def cluster_file(sim_cluster, tmp_path, monkeypatch) -> Path:
    sock = f"corral-test-{secrets.token_hex(3)}"
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", sock)
    yield sim_cluster.write_cluster_config(tmp_path / "cluster.yaml")
    end_server(sock)


@pytest.mark.slow
def test_allreduce_three_nodes_two_ranks_each(cluster_file, tmp_path, capsys):
    out, png = tmp_path / "ar.json", tmp_path / "ar.png"
    rc = main(
        [
            "bench",
            "allreduce",
            "-c",
            str(cluster_file),
            "--nproc-per-node",
            "2",
            "-b",
            "1K",
            "-e",
            "1M",
            "-f",
            "8",
            "-n",
            "3",
            "-w",
            "1",
            "--json-out",
            str(out),
            "--plot",
            str(png),
            "--timeout",
            "240",
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:]
    result = json.loads(out.read_text())
    n = result["world_size"]
    assert n == 6 and result["env"]["nnodes"] == 3 and result["env"]["ranks_per_node"] == 2
    sizes = [1024, 8192, 65536, 524288]
    assert sorted({r["size_bytes"] for r in result["rows"]}) == sizes
    assert sorted((r["size_bytes"], r["inplace"]) for r in result["rows"]) == [
        (s, p) for s in sizes for p in (False, True)
    ]
    for r in result["rows"]:
        assert r["wrong"] == 0
        assert r["busbw_gbps"] == r["algbw_gbps"] * (2 * (n - 1) / n)
        assert r["algbw_gbps"] == pytest.approx(r["size_bytes"] / (r["time_us"] / 1e6) / 1e9, rel=1e-12)
        assert r["p50_us"] <= r["p99_us"] and r["cv"] >= 0 and r["slowest_node"] in result["env"]["devices_by_node"]
    assert set(result["units"]) >= {"size_bytes", "time_us", "algbw_gbps", "busbw_gbps", "p50_us", "p99_us", "cv"}
    assert "1e9" in result["units"]["busbw_gbps"]
    assert result["env"]["backend"] == "gloo" and "falling back to gloo" in result["env"]["backend_note"]
    assert result["avg_busbw_gbps"] == pytest.approx(sum(r["busbw_gbps"] for r in result["rows"]) / len(result["rows"]))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "# Avg bus bandwidth" in printed.out and "out-of-place" in printed.out


def _limit(sim_cluster, node, mbit: int) -> None:
    sim_cluster.exec_in_ns(
        node,
        [
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            f"{mbit}mbit",
            "burst",
            "64kb",
            "latency",
            "100ms",
        ],
        check=True,
    )


def _unlimit(sim_cluster, node) -> None:
    sim_cluster.exec_in_ns(node, ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)


@pytest.mark.slow
def test_net_names_the_rate_limited_pair(sim_cluster, cluster_file, tmp_path, capsys):
    slow = sim_cluster.nodes[2]
    _limit(sim_cluster, slow, LIMIT_MBIT)
    try:
        out, png = tmp_path / "net.json", tmp_path / "net.png"
        rc = main(
            [
                "bench",
                "net",
                "-c",
                str(cluster_file),
                "--pairs",
                "ring",
                "--duration",
                "3",
                "--json-out",
                str(out),
                "--plot",
                str(png),
            ]
        )
        printed = capsys.readouterr()
    finally:
        _unlimit(sim_cluster, slow)
    assert rc == 0, printed.err[-3000:]
    result = json.loads(out.read_text())
    first = sim_cluster.nodes[0].hostname
    assert result["slowest"]["src"] == slow.hostname and result["slowest"]["dst"] == first
    assert result["slowest"]["gbps"] == pytest.approx(LIMIT_MBIT / 1000, rel=0.10)
    others = [p for p in result["pairs"] if p["src"] != slow.hostname]
    assert all(p["gbps"] > 2 * LIMIT_MBIT / 1000 for p in others)
    assert f"slowest pair: {slow.hostname} -> {first}" in printed.out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_net_detects_a_limit_applied_mid_run(sim_cluster, cluster_file):
    from benchmarks.net import plan as net
    from benchmarks.net.run import prepare, run_plan
    from launcher.config import load_cluster

    cfg = load_cluster(cluster_file)
    sender, receiver = sim_cluster.nodes[1], sim_cluster.nodes[2]
    eps, plans = prepare(cfg, duration=7, pairs="all")
    plan = next(p for p in plans if (p.src, p.dst) == (sender.hostname, receiver.hostname))
    results: list[dict] = []
    worker = threading.Thread(target=lambda: results.extend(run_plan(cfg, [plan], 7)))
    sent = Path(f"/sys/class/net/{sender.host_veth}/statistics/rx_bytes")  # what the sender node puts on the wire
    before = int(sent.read_text())
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while int(sent.read_text()) - before < 50_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)  # wait for the transfer itself, not for ssh and python to start
        time.sleep(3)
        _limit(sim_cluster, sender, LIMIT_MBIT)
        worker.join(90)
    finally:
        _unlimit(sim_cluster, sender)
    assert not worker.is_alive() and results and results[0]["error"] is None, results
    result = net.build_result(eps, "all", 7, results)
    assert result["throttled"], result["pairs"][0]["series_gbps"]
    t = result["throttled"][0]
    assert (t["src"], t["dst"]) == (sender.hostname, receiver.hostname)
    series = result["pairs"][0]["series_gbps"]
    assert t["cap_gbps"] == pytest.approx(LIMIT_MBIT / 1000, rel=0.10), series
    assert t["rate_before"] > 3 * t["rate_after"] and 2 <= t["change_at_s"] <= 5, series
    assert "THROTTLED" in net.render(result)

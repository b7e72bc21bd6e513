"""``corral top`` on the simulated cluster: real sshd per node, the node agent's kept sessions,
recorded NVML answers replayed on the nodes, a job reporting steps, faults, and the screen
as a person sees it in a real tmux pane."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from launcher import api
from launcher.cli import main as cli_main
from launcher.config import ClusterConfig, JobConfig
from launcher.tools import ssh
from launcher.top.collect import REPLAY_ENV, Collector
from launcher.top.targets import targets
from tests.infra.tmux_server import end_server
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "nvml"
RECORDINGS = ("top_h100_healthy.json", "top_h100_failing.json", "no_driver.json")
CORRAL = str(REPO / ".venv" / "bin" / "corral")


def write_cluster(sim, path: Path, node_env: dict[int, dict[str, str]] | None = None) -> Path:
    data = sim.cluster_config(workdir=REPO)
    for i, env in (node_env or {}).items():
        data["nodes"][i]["env"] = env
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def setup(sim_cluster):
    """The cluster file and a directory of recordings named after the nodes (seen by every node)."""
    root = sim_cluster.shared_dir / f"top-{uuid.uuid4().hex[:6]}"
    replay = root / "nvml"
    replay.mkdir(parents=True)
    for node, recording in zip(sim_cluster.nodes, RECORDINGS):
        shutil.copy(FIXTURES / recording, replay / f"{node.hostname}.json")
    cfg = write_cluster(sim_cluster, root / "cluster.yaml", {2: {"TOP_STEP_S": "0.5"}})
    cluster = ClusterConfig.model_validate(yaml.safe_load(cfg.read_text()))
    yield cfg, replay, cluster
    ssh.close_masters(cluster.ssh, cluster.nodes)


def test_replayed_nvml_on_three_nodes_every_field_and_words(setup, sim_cluster, capsys, monkeypatch):
    cfg, replay, _ = setup
    monkeypatch.setenv(REPLAY_ENV, str(replay))
    monkeypatch.setenv("COLUMNS", "200")
    assert cli_main(["top", "-c", str(cfg), "--once"]) == 0
    text = capsys.readouterr().out
    n1, n2, n3 = (n.hostname for n in sim_cluster.nodes)
    assert "3/3 nodes up" in text and "4 GPUs" in text, text
    for word in (
        "cpu",
        "load",
        "memory",
        "free runs/ckpt",
        "net rx/tx",
        "util",
        "power",
        "temp",
        "sm",
        "throttle",
        "events",
        n1,
        n2,
        n3,
        "NVIDIA H100 80GB HBM3",
        "96%",
        "41%",
        "57.0/80G",
        "690/700W",
        "88C",
        "1755",
        "1410",
        "B/s",
        "hardware slowdown",
        "XID 48: double-bit ECC error",
        "ECC +2 uncorrected",
        "no NVIDIA driver",
    ):
        assert word in text, (word, text)

    assert cli_main(["top", "-c", str(cfg), "--json"]) == 0
    frame = json.loads(capsys.readouterr().out)
    by_node = {n["node"]: n for n in frame["nodes"]}
    assert [len(by_node[n]["gpus"]) for n in (n1, n2, n3)] == [2, 2, 0]
    assert all(
        by_node[n]["reachable"] and by_node[n]["cpu_pct"] is not None and by_node[n]["rx_bps"] is not None
        for n in by_node
    )
    assert all(d["free"] > 0 for n in by_node.values() for d in n["disks"])
    failing = by_node[n2]["gpus"][1]
    assert failing["throttle"] == ["hardware slowdown"] and failing["events"] == ["XID 48: double-bit ECC error"]
    assert by_node[n3]["gpu_source"] == "nvml-replay" and "no NVIDIA driver" in by_node[n3]["gpu_note"]


def test_steps_per_node_and_the_slowed_node_is_the_straggler(setup, sim_cluster, capsys):
    cfg, _, cluster = setup
    name = f"topjob-{uuid.uuid4().hex[:6]}"
    job = JobConfig.model_validate(
        {"name": name, "script": "tests/workers/top_steps.py", "env": {"PYTHONPATH": str(REPO)}}
    )
    handle = api.launch(job, cluster, plain=True, base_dir=str(REPO))
    try:
        files = [Path(n.state_dir) / "metrics.jsonl" for n in handle.plan.nodes]

        def enough():
            return all(f.exists() and len(f.read_text().splitlines()) >= 12 for f in files)

        wait_for(enough, 240, "every node to report 12 steps")
        assert cli_main(["top", name, "-c", str(cfg), "--json"]) == 0
        frame = json.loads(capsys.readouterr().out)
    finally:
        api.stop(name, cluster, timeout=5, base_dir=str(REPO))
    jobs = {j["node"]: j for n in frame["nodes"] for j in n["jobs"]}
    fast, fast2, slow = (jobs[n.hostname] for n in sim_cluster.nodes)
    for j, truth in ((fast, 5.0), (fast2, 5.0), (slow, 2.0)):
        assert j["state"] == "running" and j["steps_per_s"] == pytest.approx(truth, rel=0.10), (j, truth)
        assert j["last_metric"].startswith("loss=") and j["since_log_s"] is not None
    assert frame["stragglers"] == {name: sim_cluster.nodes[2].hostname}
    assert slow["straggler"] and not fast["straggler"] and not fast2["straggler"]


def test_a_node_that_stops_answering_shows_unreachable_while_the_others_refresh(make_sim_cluster, tmp_path):
    sim = make_sim_cluster(3)
    cluster = ClusterConfig.model_validate(sim.cluster_config(workdir=REPO))
    timeout, interval = 3.0, 1.0
    collector = Collector(cluster, targets(cluster, []), timeout=timeout)
    crashed, cut = sim.nodes[1].hostname, sim.nodes[2].hostname
    healthy = sim.nodes[0].hostname
    seen: list[dict] = []

    async def scenario():
        try:
            frame = await collector.refresh(timeout + cluster.ssh.connect_timeout)
            assert all(n.reachable for n in frame.nodes), frame
            sim.stop_sshd(1)
            sim.kill_node_processes(1)  # sshd and the open session gone: a crashed node
            sim.disconnect(2)  # packets vanish: the open session hangs
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:
                frame = await collector.refresh(interval)
                rows = {n.node: n for n in frame.nodes}
                seen.append({"at": time.monotonic() - t0, **{k: (r.reachable, r.sampled_at) for k, r in rows.items()}})
                if not rows[crashed].reachable and not rows[cut].reachable and len(seen) >= 4:
                    return
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0) % interval))
        finally:
            await collector.close()

    try:
        asyncio.run(scenario())
    finally:
        sim.reconnect(2)
        ssh.close_masters(cluster.ssh, cluster.nodes)
    last = seen[-1]
    assert last[crashed][0] is False and last[cut][0] is False, seen
    cut_at = next(s["at"] for s in seen if s[cut][0] is False)
    assert cut_at <= timeout + 2 * interval + 3, seen  # the hung request ended by its timeout, not by ssh's keepalive
    stamps = [s[healthy][1] for s in seen]
    assert all(s[healthy][0] for s in seen) and len(set(stamps)) >= len(stamps) - 1, seen  # fresh samples every refresh


def test_one_frame_names_the_node_cut_off(setup, sim_cluster, capsys):
    cfg, _, cluster = setup
    cut = sim_cluster.nodes[1].hostname
    sim_cluster.disconnect(1)
    try:
        assert cli_main(["top", "-c", str(cfg), "--json", "--timeout", "2"]) == 0
    finally:
        sim_cluster.reconnect(1)
        ssh.close_masters(cluster.ssh, cluster.nodes)  # a master that lived through the cut may be stale
    rows = {n["node"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert rows[cut]["reachable"] is False and rows[cut]["error"], rows[cut]
    assert all(r["reachable"] for name, r in rows.items() if name != cut), rows


def _tmux(sock: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("width", [80, 200])
def test_the_screen_in_a_real_tmux_pane(setup, sim_cluster, width):
    cfg, replay, _ = setup
    sock = f"corral-top-test-{uuid.uuid4().hex[:8]}"
    # -u: pytest exports COLUMNS=80 LINES=24, which rich would take over the pane's real size.
    command = [
        "env",
        "-u",
        "COLUMNS",
        "-u",
        "LINES",
        f"{REPLAY_ENV}={replay}",
        CORRAL,
        "top",
        "-c",
        str(cfg),
        "--interval",
        "1",
    ]
    try:
        r = _tmux(sock, "new-session", "-d", "-s", "top", "-x", str(width), "-y", "45", "--", *command)
        assert r.returncode == 0, r.stderr

        throttle = "hardware slowdown" if width >= 120 else "hw slowdown"

        def screen():  # nodes answer at their own pace: wait until every node's second sample is drawn
            text = _tmux(sock, "capture-pane", "-p", "-t", "top").stdout
            return text if text.count("690/700W") == 4 and "XID 48" in text and throttle in text else None

        text = wait_for(screen, 90, "the screen to show the replayed GPUs")
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= width, text
        for node in sim_cluster.nodes:
            assert node.hostname in text, text
        assert "3/3 nodes up" in text and "q quits" in text
        header = next(ln for ln in lines if ln.startswith("node") and "util" in ln)
        assert ("name" in header) is (width >= 120), header
        assert sum("690/700W" in ln for ln in lines) == 4, text  # one line per GPU, grouped by node
        key = "q" if width == 80 else "C-c"  # both ways out, one per width
        _tmux(sock, "send-keys", "-t", "top", key)
        wait_for(lambda: _tmux(sock, "has-session", "-t", "top").returncode != 0, 30, f"{key} to close the screen")
    finally:
        end_server(sock)

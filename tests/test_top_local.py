"""``corral top`` on the embedded localhost cluster (the agent runs without ssh): one kept
session answers every refresh, a job's files are read, and bad input exits 2 with a sentence."""

from __future__ import annotations

import asyncio
import json
import os
import time

from launcher.cli import main as cli_main
from launcher.top.collect import Collector
from launcher.top.model import JobSpec
from launcher.top.targets import Target


def test_one_session_answers_every_refresh(local_space):
    cluster, root, _ = local_space
    state_dir = root / "runs" / "j" / "nodes" / "local"
    state_dir.mkdir(parents=True)
    (state_dir / "pid").write_text(f"{os.getpid()} {os.getpgid(0)} {os.getsid(0)}\n")
    now = time.time()
    (state_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"t": now - 4 + i * 0.5, "step": i, "loss": 1 / (i + 1)}) + "\n" for i in range(9))
    )
    (root / "j.log").write_text("hello\n")
    spec = JobSpec("j", "local", str(state_dir), str(root / "j.log"), str(state_dir / "metrics.jsonl"))
    collector = Collector(cluster, [Target(cluster.nodes[0], [spec])], timeout=10)

    async def go():
        frames = []
        try:
            for _ in range(3):
                frames.append(await collector.refresh(20))
                await asyncio.sleep(0.3)  # a short interval: /proc/stat counts in 10 ms ticks
            return frames
        finally:
            await collector.close()

    frames = asyncio.run(go())
    (poller,) = collector.pollers
    assert poller.logins == 1 and poller.session.proc.returncode == 0  # one agent for every refresh, closed cleanly
    node = frames[-1].nodes[0]
    assert node.reachable and node.cpu_pct is not None and node.mem_total and node.gpu_source == "none"
    (job,) = node.jobs
    assert (
        job.state == "running"
        and abs(job.steps_per_s - 2.0) < 1e-6
        and job.step == 8
        and job.last_metric == "loss=0.1111"
    )
    assert [d["label"] for d in node.disks] == ["runs", "ckpt"] and all(d["free"] > 0 for d in node.disks)


def test_bad_input_exits_2_with_a_sentence(local_space, capsys):
    assert cli_main(["top", "--interval", "0.01", "--once"]) == 2
    assert "--interval 0.01: too short" in capsys.readouterr().err
    assert cli_main(["top", "--timeout", "0", "--once"]) == 2
    assert cli_main(["top", "no-such-job", "--once"]) == 2
    assert "no job named 'no-such-job'" in capsys.readouterr().err


def test_json_out_writes_the_frame_beside_the_table(local_space, capsys, tmp_path):
    out = tmp_path / "frame.json"
    assert cli_main(["top", "--once", "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    frame = json.loads(out.read_text())
    assert "corral top" in printed and "local" in printed
    assert [n["node"] for n in frame["nodes"]] == ["local"] and frame["nodes"][0]["reachable"]

"""The hang watchdog on the real test Slurm cluster (2 nodes, tests.infra.slurmcluster): the node
wrapper starts it beside torchrun in the job step; a rank frozen with SIGSTOP is named, its stacks
kept, and ``stop`` ends the job, which ``ps`` shows as hung."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from launcher import api
from launcher.config import ClusterConfig, JobConfig
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
HANG_AFTER = 8


@pytest.fixture(scope="module")
def cl(slurm_cluster) -> ClusterConfig:
    return ClusterConfig.model_validate(slurm_cluster.cluster_config(workdir=REPO, venv=VENV))


def test_sigstopped_rank_on_slurm_is_named_and_stop_leaves_the_job_hung(cl):
    name = f"wd-slurm-{uuid.uuid4().hex[:6]}"
    job = JobConfig.model_validate(
        {
            "name": name,
            "script": "tests/workers/hang_train.py",
            "args": ["--steps", "100000", "--step-time", "0.05"],
            "nnodes": 2,
            "nproc_per_node": 1,
            "backend": "gloo",
            "env": {"PYTHONPATH": str(REPO)},
            "watchdog": {"hang_after": f"{HANG_AFTER}s", "first_step_grace": "60s", "on_hang": "stop"},
        }
    )
    handle = api.launch(job, cl)
    out = handle.run_dir / "hang-test"
    victim = None
    try:
        wait_for(lambda: (out / "pid-rank1-restart0").exists(), 180, "rank 1 started")
        victim = int((out / "pid-rank1-restart0").read_text())
        wait_for(
            lambda: (out / "step-rank1").exists() and int((out / "step-rank1").read_text() or 0) >= 20, 120, "20 steps"
        )
        os.kill(victim, signal.SIGSTOP)
        ev_path = handle.run_dir / "watchdog" / "events.jsonl"
        wait_for(ev_path.exists, HANG_AFTER + 90, "a hang event")
        ev = json.loads(ev_path.read_text().splitlines()[0])
        assert ev["kind"] == "hang" and ev["ranks"] == [1] and ev["action"] == "stop", ev
        assert ev["suspects"][0]["reason"] == "not-running"
        stacks = sorted(p.name for p in Path(ev["stacks"]).iterdir())
        assert len(stacks) == 2 and all(s.endswith(("-rank0.txt", "-rank1.txt")) for s in stacks), stacks
        waiting = next(p for p in Path(ev["stacks"]).iterdir() if p.name.endswith("-rank0.txt")).read_text()
        assert "all_reduce" in waiting, waiting
        status = handle.wait(timeout=120)
        assert status.state == "hung", status.to_json()
        assert ev["nodes"][0] in status.to_json()["suspect"]
        assert not os.path.exists(f"/proc/{victim}")
    finally:
        if victim is not None:
            try:
                os.kill(victim, signal.SIGCONT)
            except OSError:
                pass
        api.stop(name, cl, timeout=3)

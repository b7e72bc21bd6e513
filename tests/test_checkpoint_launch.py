"""A job under `corral launch` (localhost, real tmux and torchrun) with max_restarts=1 loses a worker
to SIGKILL: torchrun restarts the group, which resumes from the last checkpoint, and the training
ends with exactly the parameters of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from launcher import api
from launcher.checkpoint.inspect import scan
from launcher.config import JobConfig
from tests.infra.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")]


def _job(name: str, steps: int, restarts: int) -> JobConfig:
    return JobConfig.model_validate(
        {
            "name": name,
            "script": "tests/workers/ckpt_train.py",
            "args": ["--steps", str(steps), "--every", "10"],
            "nproc_per_node": 2,
            "backend": "gloo",
            "max_restarts": restarts,
            "env": {"PYTHONPATH": str(REPO), "CORRAL_CKPT_POLICY": json.dumps({"keep_last": 3})},
        }
    )


def _acks(out: Path) -> list[int]:
    try:
        return [int(x) for x in (out / "acks").read_text().split()]
    except FileNotFoundError:
        return []


def test_sigkilled_worker_restarts_and_resumes_from_last_checkpoint(local_space):
    cluster, root, token = local_space
    steps = 150
    handle = api.launch(_job(f"ck-{token}", steps, restarts=1), cluster)
    out = handle.run_dir / "ckpt-test"
    try:
        wait_for(lambda: len(_acks(out)) >= 4, 120, "four checkpoints", interval=0.1)
        victim = int((out / "pid-rank1-restart0").read_text())
        acked_before_kill = _acks(out)[-1]
        os.kill(victim, signal.SIGKILL)
        status = handle.wait(timeout=180)
        log = handle.log_path("local").read_text()
        assert status.ok, log[-12000:]
    finally:
        handle.stop()
    for rank in (0, 1):
        first = json.loads((out / f"start-rank{rank}-restart0").read_text())
        assert first["resumed_from"] is None
        again = json.loads((out / f"start-rank{rank}-restart1").read_text())
        # resumed from the newest checkpoint on disk, which is at least the last acknowledged one
        assert again["resumed_from"] == max(again["visible"]) >= acked_before_kill, again
        assert json.loads((out / f"done-rank{rank}").read_text())["restart"] == 1
    assert scan(str(handle.ckpt_dir), full=True).problems == []
    assert len(scan(str(handle.ckpt_dir)).checkpoints) == 3, "keep_last from CORRAL_CKPT_POLICY"

    # the same training, never interrupted, ends with bit-identical parameters
    ref = api.launch(_job(f"ref-{token}", steps, restarts=0), cluster)
    try:
        assert ref.wait(timeout=180).ok, ref.log_path("local").read_text()[-3000:]
    finally:
        ref.stop()
    for rank in (0, 1):
        resumed = json.loads((out / f"done-rank{rank}").read_text())["params"]
        straight = json.loads((ref.run_dir / "ckpt-test" / f"done-rank{rank}").read_text())["params"]
        assert resumed == straight

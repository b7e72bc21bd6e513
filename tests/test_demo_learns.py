"""The demo must show learning: a loss that falls visibly over the run, not 0.0000 from step 100 on."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_loss_falls_over_the_whole_run(tmp_path):
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "CORRAL_CKPT_DIR": str(tmp_path / "ckpt"),
        "CORRAL_RUN_DIR": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "CORRAL_CKPT_ALLOW_VOLATILE": "1",
    }
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "train_demo.py"),
            "--steps",
            "600",
            "--step-time",
            "0",
            "--ckpt-every",
            "1000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    losses = [float(v) for v in re.findall(r"step \d+ loss (\d+\.\d+)", out.stdout)]
    assert len(losses) == 13, out.stdout
    assert min(losses[-3:]) > 0.0, "the demo should not be a toy solved to 0.0000"
    assert losses[-1] < losses[1] / 4, f"the loss should fall visibly over the run: {losses}"
    later_half = losses[6:]
    assert sum(later_half[:3]) > sum(later_half[3:]), f"still learning in the second half: {losses}"

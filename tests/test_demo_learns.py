"""The demo must show learning: a loss that falls visibly over the run, not 0.0000 from step 100 on."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(tmp_path: Path, rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun and corral would give one rank of the demo, on this machine."""
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "CORRAL_CKPT_DIR": str(tmp_path / "ckpt"),
        "CORRAL_RUN_DIR": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "CORRAL_CKPT_ALLOW_VOLATILE": "1",
    }


def test_demo_loss_falls_over_the_whole_run(tmp_path):
    env = _rank_env(tmp_path, 0, 1, _free_port())
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


def _two_ranks(tmp_path: Path, *extra: str) -> list[str]:
    """Both ranks' outputs of a 2-rank run (no torchrun: the ranks find each other by MASTER_ADDR/PORT)."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = _rank_env(tmp_path, rank, 2, port)
        argv = [sys.executable, str(REPO / "examples" / "train_demo.py"), "--steps", "101", "--step-time", "0", *extra]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [out for out, _ in outs]


def test_plain_sgd_trains_as_ddp_and_torch_optim_do(tmp_path):
    """The tests' quicker mode (one all-reduce of the gradients, SGD written out) is the same arithmetic."""
    ddp = _two_ranks(tmp_path / "ddp")
    plain = _two_ranks(tmp_path / "plain", "--plain-sgd")
    for a, b in zip(ddp, plain):
        la = [float(v) for v in re.findall(r"step \d+ loss (\d+\.\d+)", a)]
        lb = [float(v) for v in re.findall(r"step \d+ loss (\d+\.\d+)", b)]
        assert len(la) == 3 and la == pytest.approx(lb, abs=2e-4), (a, b)
    final = [json.loads((tmp_path / m / "results" / "rank1.json").read_text())["loss"] for m in ("ddp", "plain")]
    assert final[0] == pytest.approx(final[1], rel=1e-4)

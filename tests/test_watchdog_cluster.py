"""The hang watchdog on 3 simulated nodes (real sshd, tmux, torchrun/gloo, py-spy).

Each test launches a small loop that all-reduces, reports and checkpoints on 3 nodes x 1 process,
injects a fault (a rank frozen with SIGSTOP, a rank asleep outside any collective, a silent job)
or a slow but healthy part, and checks what the watchdog on the nodes did: stacks kept, the
event naming the right node and rank, the job's state, the action. ``hang_after`` is a few
seconds so the module stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from launcher import api
from launcher.config import ClusterConfig, JobConfig
from launcher.tools import ssh
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
HANG_AFTER = 6


@pytest.fixture(scope="module")
def cl(sim_cluster) -> ClusterConfig:
    cfg = ClusterConfig.model_validate(sim_cluster.cluster_config(workdir=REPO))
    yield cfg
    ssh.close_masters(cfg.ssh, cfg.nodes)


@pytest.fixture
def names(cl):
    """Unique job names; every job named here is stopped after the test (frozen ranks thawed first)."""
    made: list[str] = []

    def new(prefix: str) -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:6]}")
        return made[-1]

    yield new
    for name in made:
        try:
            h = api.handle(name, cl)
            for p in (h.run_dir / "hang-test").glob("pid-rank*"):
                try:
                    os.kill(int(p.read_text()), signal.SIGCONT)
                except (OSError, ValueError):
                    pass
            api.stop(name, cl, timeout=3)
        except Exception:  # noqa: BLE001 - never launched, or already gone
            pass


def hang_job(name: str, *, watchdog: dict, args: list[str], restarts: int = 0, checkpoint: bool = False) -> JobConfig:
    return JobConfig.model_validate(
        {
            "name": name,
            "script": "tests/workers/hang_train.py",
            "args": args,
            "nproc_per_node": 1,
            "backend": "gloo",
            "max_restarts": restarts,
            "env": {"PYTHONPATH": str(REPO)},
            "watchdog": {"first_step_grace": "60s", **watchdog},
            **({"checkpoint": {"keep_last": 2}} if checkpoint else {}),
        }
    )


def rank_pid(handle, rank: int, restart: int = 0) -> int:
    path = handle.run_dir / "hang-test" / f"pid-rank{rank}-restart{restart}"
    wait_for(path.exists, 120, f"rank {rank} started")
    return int(path.read_text())


def rank_step(handle, rank: int) -> int:
    try:
        return int((handle.run_dir / "hang-test" / f"step-rank{rank}").read_text())
    except (OSError, ValueError):
        return -1


def events(handle) -> list[dict]:
    path = handle.run_dir / "watchdog" / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def hang_events(handle) -> list[dict]:
    return [e for e in events(handle) if e["kind"] == "hang"]


def node_of_rank(handle, rank: int) -> str:
    return handle.plan.nodes[rank].node  # one process per node: global rank = node rank


def test_sigstopped_rank_is_named_with_stacks_and_the_job_shows_hung(cl, names):
    name = names("wd-stop")
    job = hang_job(name, watchdog={"hang_after": f"{HANG_AFTER}s"}, args=["--steps", "100000", "--step-time", "0.05"])
    handle = api.launch(job, cl)
    victim = rank_pid(handle, 2)
    wait_for(lambda: rank_step(handle, 2) >= 20, 120, "20 steps")
    os.kill(victim, signal.SIGSTOP)
    frozen_at = time.monotonic()
    wait_for(lambda: hang_events(handle), HANG_AFTER + 60, "a hang event")
    latency = time.monotonic() - frozen_at
    ev = hang_events(handle)[0]
    victim_node = node_of_rank(handle, 2)
    assert ev["nodes"] == [victim_node] and ev["ranks"] == [2], ev
    assert ev["suspects"][0]["reason"] == "not-running" and "stopped" in ev["evidence"][0], ev
    assert ev["action"] == "dump" and ev["signal"] == "report"
    assert HANG_AFTER - 1 <= latency <= HANG_AFTER + 30, latency
    stacks = Path(ev["stacks"])
    for rank in range(3):
        text = (stacks / f"{node_of_rank(handle, rank)}-rank{rank}.txt").read_text()
        assert "hang_train.py" in text, text
        if rank != 2:
            assert "all_reduce" in text, text  # the waiting ranks show the collective
    # the run record: ps --json shows the events, the state hung with the suspect; the log has a line
    st = api.status(name, cl)
    assert st.state == "hung", st.to_json()
    assert st.to_json()["events"][0]["hang"] == ev["hang"]
    assert victim_node in st.to_json()["suspect"]
    first = handle.plan.nodes[0]
    assert "corral watchdog: hang" in Path(first.log_path).read_text()
    # dump only: nothing was killed
    assert os.path.exists(f"/proc/{victim}")

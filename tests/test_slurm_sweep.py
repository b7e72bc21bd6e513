"""Sweeps on a real Slurm cluster: each trial is one Slurm job; max_concurrent caps the submissions.

The trial (tests/sweep_trial.py) imports no torch. The controller runs detached in tmux on this
machine, on a tmux server of its own, killed at the end.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from launcher.cli import main
from launcher.config import load_cluster
from launcher.sweep.journal import replay
from launcher.sweep.lock import pid_alive, read_lock
from launcher.sweep.paths import sweep_paths
from tests.infra.tmux_server import end_server
from tests.infra.waiting import wait_for
from tests.test_sweep_cluster import executions, journal_of, status_of, wait_finished, write_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster_file(slurm_cluster) -> Path:
    path = slurm_cluster.sim.shared_dir / "sweep-cluster.yaml"
    path.write_text(yaml.safe_dump(slurm_cluster.cluster_config(workdir=REPO, venv=REPO / ".venv")))
    return path


@pytest.fixture
def sweep_env(cluster_file, monkeypatch):
    sock = f"corral-sweep-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", sock)
    started: list[str] = []
    yield started
    for name in started:
        main(["sweep", "stop", name, "-c", str(cluster_file), "--timeout", "20"])
    end_server(sock)


def most_at_once(recs: list[dict]) -> int:
    """The largest number of trials the journal shows started and not yet ended at one moment."""
    now = peak = 0
    for r in recs:
        now += (r["ev"] == "start") - (r["ev"] == "end")
        peak = max(peak, now)
    return peak


def test_four_trials_each_once_capped_and_a_killed_controller_resumes(slurm_cluster, cluster_file, sweep_env, tmp_path):
    name = f"slurm-{uuid.uuid4().hex[:6]}"
    sweep_env.append(name)
    f = write_sweep(
        tmp_path, cluster_file, name, lrs=[0.1, 0.2], wds=[0.0, 0.1], extra_args=["--sleep", "3"], max_concurrent=2
    )
    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0
    paths = sweep_paths(load_cluster(cluster_file), name)
    wait_for(lambda: status_of(cluster_file, name)["counts"]["running"] >= 1, 90, "a trial to run")
    holder = read_lock(paths.lock)
    os.killpg(holder.pgid, signal.SIGKILL)  # the controller's process group, as recorded in its lock
    wait_for(lambda: not pid_alive(holder.pid), 10, "the controller to die")
    assert status_of(cluster_file, name)["counts"]["done"] < 4

    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0  # resume: adopts the Slurm jobs still running
    st = wait_finished(cluster_file, name, timeout=240)
    assert {k: st["counts"][k] for k in ("pending", "running", "done", "failed")} == {
        "pending": 0,
        "running": 0,
        "done": 4,
        "failed": 0,
    }
    recs = journal_of(cluster_file, name)
    assert replay(recs).problems == []
    assert Counter(r["trial"] for r in recs if r["ev"] == "end" and r["result"] == "done") == {
        t["id"]: 1 for t in st["trials"]
    }
    assert Counter(e["trial"] for e in executions(cluster_file, name)) == {t["id"]: 1 for t in st["trials"]}
    assert most_at_once(recs) <= 2
    assert sum(r["ev"] == "controller" and r["action"] == "start" for r in recs) == 2
    assert st["best"]["params"] == {"lr": 0.1, "wd": 0.0}
    # every trial ran as a Slurm job of its own (an attempt the killed controller had journalled but not
    # yet submitted is judged lost and runs again under a new name)
    runs = {r["run"] for r in recs if r["ev"] == "end" and r["result"] == "done"}
    job_names = slurm_cluster.client(["scontrol", "show", "job", "-o"]).stdout
    assert all(f"JobName=corral-{run} " in job_names for run in runs), (runs, job_names[-2000:])

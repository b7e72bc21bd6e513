"""Bayes and early termination on the simulated 3-node cluster, through the real launch path.

The trial (tests/sweep_objective_trial.py) reports a loss that is a known function of its
parameters and its step (perf/sweep_objective.py), so results can be checked against the optimum.
The controller is really killed (SIGKILL, by tests/sweep_kill_controller.py) at the two points a
crash must survive, then the sweep is re-run detached, as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from launcher.cli import main
from launcher.config import load_cluster
from launcher.sweep.config import load_sweep
from launcher.sweep.controller import load_spec, save_spec
from launcher.sweep.journal import Journal, replay
from launcher.sweep.lock import pid_alive, read_lock
from launcher.sweep.paths import sweep_paths
from launcher.sweep.status import build_status
from launcher.sweep.study import SweepStudy, disagreements, file_storage, study_path
from perf.sweep_objective import OPTIMUM, final_loss
from tests.infra.tmux_server import end_server
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
TRIAL = "tests/sweep_objective_trial.py"
LR = {"distribution": "log_uniform_values", "min": 1e-4, "max": 1.0}


@pytest.fixture(scope="module")
def cluster_file(sim_cluster) -> Path:
    return sim_cluster.write_cluster_config()


@pytest.fixture
def sweep_env(cluster_file, monkeypatch):
    """A tmux server of our own for detached controllers; every sweep stopped and the server killed at the end."""
    sock = f"corral-optuna-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", sock)
    started: list[str] = []
    yield started
    for name in started:
        main(["sweep", "stop", name, "-c", str(cluster_file), "--timeout", "20"])
    end_server(sock)


def runs_dir(cluster_file: Path) -> Path:
    return Path(load_cluster(cluster_file).storage.runs)


def write_sweep(dir_: Path, cluster_file: Path, name: str, *, steps=3, step_sleep=0.2, **over) -> Path:
    runs = runs_dir(cluster_file)
    (runs / f"{name}.pids").mkdir(parents=True, exist_ok=True)
    data = {
        "name": name,
        "job": {
            "script": TRIAL,
            "nproc_per_node": 1,
            "args": [
                "--executions",
                str(runs / f"{name}.executions"),
                "--pid-dir",
                str(runs / f"{name}.pids"),
                "--steps",
                str(steps),
                "--step-sleep",
                str(step_sleep),
            ],
        },
        "method": "bayes",
        "parameters": {"lr": LR, "momentum": {"value": 0.8}, "opt": {"value": "adam"}},
        "metric": {"name": "loss", "goal": "minimize"},
        "plain": True,
        "poll_interval": 0.5,
        "retries": 1,
        **over,
    }
    path = dir_ / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def executions(cluster_file: Path, name: str) -> Counter:
    path = runs_dir(cluster_file) / f"{name}.executions"
    return Counter(json.loads(x)["trial"] for x in path.read_text().splitlines()) if path.exists() else Counter()


def status_of(cluster_file: Path, name: str) -> dict:
    paths = sweep_paths(load_cluster(cluster_file), name)
    return build_status(load_spec(paths), paths)


def wait_finished(cluster_file: Path, name: str, timeout: float = 300) -> dict:
    def over():
        st = status_of(cluster_file, name)
        return st if st["finished"] and not st["controller"]["alive"] else None

    try:
        return wait_for(over, timeout, f"sweep {name} to finish", interval=1.0)
    except AssertionError:
        log = sweep_paths(load_cluster(cluster_file), name).log
        raise AssertionError(
            f"sweep {name} did not finish; controller log:\n{log.read_text() if log.exists() else '(none)'}"
        ) from None


def run_until_killed(cluster_file: Path, sweep_file: Path, at: str) -> None:
    """The controller in the foreground, killed by SIGKILL at ``at``; its lock is left behind, as after a crash."""
    spec = load_sweep(sweep_file)
    paths = sweep_paths(load_cluster(cluster_file), spec.name)
    save_spec(paths, spec)
    argv = [
        sys.executable,
        "tests/sweep_kill_controller.py",
        "--at",
        at,
        "--",
        "--sweep-dir",
        str(paths.root),
        "--cluster",
        str(cluster_file),
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-3000:])
    holder = read_lock(paths.lock)
    assert holder is not None and not pid_alive(holder.pid)


def assert_exactly_once_and_agreeing(cluster_file: Path, name: str, run_cap: int) -> tuple[dict, list[dict]]:
    paths = sweep_paths(load_cluster(cluster_file), name)
    recs = Journal(paths.journal).read()
    state = replay(recs)
    assert state.problems == []
    done = Counter(r["trial"] for r in recs if r["ev"] == "end" and r["result"] == "done")
    assert done == {t: 1 for t in state.trials} and len(done) == run_cap
    assert executions(cluster_file, name) == {t: 1 for t in state.trials}  # none lost, none run twice
    study = SweepStudy(load_spec(paths).config, file_storage(study_path(paths.root)))
    assert disagreements(state, study.trials(), 1) == []
    assert Counter(t.state.name for t in study.trials()) == {"COMPLETE": run_cap}
    return status_of(cluster_file, name), recs


def test_bayes_killed_between_an_end_and_its_tell_resumes_exactly_once_and_finds_the_optimum(
    cluster_file, sweep_env, tmp_path
):
    name = f"bayes-{uuid.uuid4().hex[:6]}"
    sweep_env.append(name)
    f = write_sweep(tmp_path, cluster_file, name, run_cap=15, max_concurrent=3, seed=1)
    run_until_killed(cluster_file, f, "before-tell")
    paths = sweep_paths(load_cluster(cluster_file), name)
    ended = [r for r in Journal(paths.journal).read() if r["ev"] == "end"]
    study = SweepStudy(load_spec(paths).config, file_storage(study_path(paths.root)))
    assert len(ended) >= 1 and all(t.state.name == "RUNNING" for t in study.trials())  # ended, never told

    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0
    wait_finished(cluster_file, name)
    st, _ = assert_exactly_once_and_agreeing(cluster_file, name, 15)
    assert st["best"]["metric"] <= OPTIMUM * 1.05, st["best"]
    assert st["best"]["metric"] == pytest.approx(
        final_loss(st["best"]["params"])
    )  # a trial's last report is its final loss


def test_bayes_killed_between_a_start_and_its_end_resumes_exactly_once(cluster_file, sweep_env, tmp_path):
    name = f"bkill-{uuid.uuid4().hex[:6]}"
    sweep_env.append(name)
    f = write_sweep(tmp_path, cluster_file, name, run_cap=4, max_concurrent=2, steps=6, step_sleep=0.5)
    run_until_killed(cluster_file, f, "after-launch")
    st = status_of(cluster_file, name)
    assert st["counts"]["running"] == 2 and st["counts"]["done"] == 0  # started, launched, not ended

    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0  # adopts the two running trials
    wait_finished(cluster_file, name)
    _, recs = assert_exactly_once_and_agreeing(cluster_file, name, 4)
    assert sum(r["ev"] == "controller" and r["action"] == "start" for r in recs) == 2


def test_pruned_trial_is_stopped_on_its_node_leaves_no_process_and_shows_in_status(
    cluster_file, sweep_env, tmp_path, capsys
):
    name = f"prune-{uuid.uuid4().hex[:6]}"
    sweep_env.append(name)
    # One at a time, the best first: the second is judged at step 2 against the first and is clearly worse.
    f = write_sweep(
        tmp_path,
        cluster_file,
        name,
        method="grid",
        steps=16,
        step_sleep=0.5,
        max_concurrent=1,
        parameters={"lr": {"values": [0.003, 0.9]}, "momentum": {"value": 0.8}, "opt": {"value": "adam"}},
        early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2},
    )
    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0
    st = wait_finished(cluster_file, name)
    assert st["counts"] == {"pending": 0, "running": 0, "done": 1, "pruned": 1, "failed": 0}
    pruned = next(t for t in st["trials"] if t["state"] == "pruned")
    assert pruned["params"]["lr"] == 0.9 and pruned["attempts"] == 1 and "pruned at step" in pruned["error"]
    pid = int((runs_dir(cluster_file) / f"{name}.pids" / pruned["id"]).read_text())
    wait_for(lambda: not pid_alive(pid), 20, "the pruned trial's process to be gone")
    recs = [json.loads(x) for x in (runs_dir(cluster_file) / pruned["run"] / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in recs) < 16  # cut short
    paths = sweep_paths(load_cluster(cluster_file), name)
    state = replay(Journal(paths.journal).read())
    study = SweepStudy(load_spec(paths).config, file_storage(study_path(paths.root)))
    assert disagreements(state, study.trials(), 1) == [] and sorted(t.state.name for t in study.trials()) == [
        "COMPLETE",
        "PRUNED",
    ]

    capsys.readouterr()
    png = tmp_path / "curves.png"
    assert main(["sweep", "status", name, "-c", str(cluster_file), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "1 pruned" in out and out.count("pruned") >= 2  # the title count and the trial's state
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

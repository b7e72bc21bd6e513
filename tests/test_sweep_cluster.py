"""Sweeps on the simulated 3-node cluster, through the real launch path (ssh, tmux on each node).

The trial (tests/sweep_trial.py) imports no torch: about a second of work, then it reports a
loss. The controller runs detached in tmux on this machine (the head), on a tmux server of
its own per test, killed at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from launcher.cli import main
from launcher.config import load_cluster
from launcher.sweep.controller import load_spec
from launcher.sweep.journal import Journal, replay
from launcher.sweep.lock import pid_alive, read_lock
from launcher.sweep.paths import sweep_paths
from launcher.sweep.status import build_status
from tests.infra.tmux_server import end_server
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
TRIAL = "tests/sweep_trial.py"


@pytest.fixture(scope="module")
def cluster_file(sim_cluster) -> Path:
    return sim_cluster.write_cluster_config()


@pytest.fixture
def sweep_env(cluster_file, monkeypatch, tmp_path):
    """A tmux server of our own for the controller, killed (with anything left on it) at the end."""
    sock = f"corral-sweep-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", sock)
    started: list[str] = []
    yield started
    for name in started:
        main(["sweep", "stop", name, "-c", str(cluster_file), "--timeout", "20"])
    end_server(sock)


def write_sweep(dir_: Path, cluster_file: Path, name: str, *, lrs, wds=(0.0,), extra_args=(), **over) -> Path:
    runs = Path(load_cluster(cluster_file).storage.runs)
    data = {
        "name": name,
        "job": {
            "script": TRIAL,
            "args": ["--executions", str(runs / f"{name}.executions"), *extra_args],
            "nproc_per_node": 1,
        },
        "method": "grid",
        "parameters": {"lr": {"values": list(lrs)}, "wd": {"values": list(wds)}},
        "metric": {"name": "loss", "goal": "minimize"},
        "plain": True,
        "poll_interval": 0.5,
        "retries": 1,
        **over,
    }
    path = dir_ / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def executions(cluster_file: Path, name: str) -> list[dict]:
    path = Path(load_cluster(cluster_file).storage.runs) / f"{name}.executions"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def story(cluster_file: Path, name: str) -> str:
    """The sweep's journal and the end of its controller's log: why a trial ran again, shown on failure."""
    paths = sweep_paths(load_cluster(cluster_file), name)
    parts = [p.read_text()[-6000:] for p in (paths.journal, paths.log) if p.exists()]
    return "\n".join(parts)


def status_of(cluster_file: Path, name: str) -> dict:
    paths = sweep_paths(load_cluster(cluster_file), name)
    return build_status(load_spec(paths), paths)


def wait_finished(cluster_file: Path, name: str, timeout: float = 150) -> dict:
    def over():
        st = status_of(cluster_file, name)
        return st if st["finished"] and not st["controller"]["alive"] else None

    try:
        return wait_for(over, timeout, f"sweep {name} to finish")
    except AssertionError:
        log = sweep_paths(load_cluster(cluster_file), name).log
        raise AssertionError(
            f"sweep {name} did not finish; controller log:\n{log.read_text() if log.exists() else '(none)'}"
        ) from None


def journal_of(cluster_file: Path, name: str):
    return Journal(sweep_paths(load_cluster(cluster_file), name).journal).read()


def test_grid_of_six_spreads_over_nodes_and_status_names_the_best(cluster_file, sweep_env, tmp_path, capsys):
    name = f"grid-{uuid.uuid4().hex[:6]}"
    sweep_env.append(name)
    f = write_sweep(tmp_path, cluster_file, name, lrs=[0.1, 0.01, 0.05], wds=[0.0, 0.1])
    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0
    st = wait_finished(cluster_file, name)

    assert st["counts"] == {"pending": 0, "running": 0, "done": 6, "pruned": 0, "failed": 0}
    assert len({t["node"] for t in st["trials"]}) == 3, [t["node"] for t in st["trials"]]
    losses = [t["metric"] for t in st["trials"]]
    assert losses == sorted(losses)
    expected = {
        (t["params"]["lr"], t["params"]["wd"]): ((t["params"]["lr"] - 0.01) ** 2 + t["params"]["wd"]) * 4 / 3
        for t in st["trials"]
    }
    assert all(abs(t["metric"] - expected[(t["params"]["lr"], t["params"]["wd"])]) < 1e-9 for t in st["trials"])
    assert st["best"]["params"] == {"lr": 0.01, "wd": 0.0}
    assert Counter(e["trial"] for e in executions(cluster_file, name)) == {t["id"]: 1 for t in st["trials"]}
    assert replay(journal_of(cluster_file, name)).problems == []

    capsys.readouterr()
    plot = tmp_path / "sweep.png"
    assert main(["sweep", "status", name, "-c", str(cluster_file), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert f"best: trial {st['best']['id']}" in out and "6 done" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["sweep", "status", name, "-c", str(cluster_file), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert {"name", "trials", "best"} <= set(js) and {"id", "params", "state", "attempts", "node", "metric"} <= set(
        js["trials"][0]
    )

    # running a finished sweep again says so: nothing is left to run, so no controller starts and nothing runs twice
    before = journal_of(cluster_file, name)
    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0
    assert f"sweep {name} is finished: 6 done, 0 failed; best: trial {st['best']['id']}" in capsys.readouterr().out
    assert journal_of(cluster_file, name) == before
    assert len(executions(cluster_file, name)) == 6


def test_controller_killed_midway_then_rerun_finishes_every_trial_exactly_once(cluster_file, sweep_env, tmp_path):
    name = f"kill-{uuid.uuid4().hex[:6]}"
    sweep_env.append(name)
    f = write_sweep(tmp_path, cluster_file, name, lrs=[0.1, 0.2], wds=[0.0, 0.1], extra_args=["--sleep", "3"])
    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0
    paths = sweep_paths(load_cluster(cluster_file), name)
    wait_for(lambda: status_of(cluster_file, name)["counts"]["running"] >= 2, 60, "trials to run")
    holder = read_lock(paths.lock)
    assert holder.pgid and holder.pgid != os.getpgrp()
    os.killpg(holder.pgid, signal.SIGKILL)  # the controller's process group, as it recorded it in its lock
    wait_for(lambda: not pid_alive(holder.pid), 10, "the controller to die")
    st = status_of(cluster_file, name)
    assert not st["controller"]["alive"] and st["counts"]["done"] < 4

    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0  # resume: breaks the stale lock, adopts running trials
    st = wait_finished(cluster_file, name)
    assert st["counts"]["done"] == 4
    recs = journal_of(cluster_file, name)
    state = replay(recs)
    assert state.problems == []
    done = Counter(r["trial"] for r in recs if r["ev"] == "end" and r["result"] == "done")
    assert done == {t["id"]: 1 for t in st["trials"]}
    assert Counter(e["trial"] for e in executions(cluster_file, name)) == {t["id"]: 1 for t in st["trials"]}
    assert sum(r["ev"] == "controller" and r["action"] == "start" for r in recs) == 2


def test_always_failing_trial_is_retried_then_failed_and_the_rest_complete(cluster_file, sweep_env, tmp_path):
    name = f"fail-{uuid.uuid4().hex[:6]}"
    sweep_env.append(name)
    f = write_sweep(tmp_path, cluster_file, name, lrs=[0.1, 0.3, 0.4], extra_args=["--fail-lr", "0.3"], retries=1)
    assert main(["sweep", str(f), "-c", str(cluster_file)]) == 0
    st = wait_finished(cluster_file, name)
    assert st["counts"] == {"pending": 0, "running": 0, "done": 2, "pruned": 0, "failed": 1}
    bad = next(t for t in st["trials"] if t["state"] == "failed")
    assert bad["params"]["lr"] == 0.3 and bad["attempts"] == 2 and "exit status" in bad["error"]
    runs = Counter(e["trial"] for e in executions(cluster_file, name))
    done = [t["id"] for t in st["trials"] if t["state"] == "done"]
    assert runs[bad["id"]] == 2 and all(runs[t] == 1 for t in done), (runs, story(cluster_file, name))
    assert st["nodes_aside"] == {}  # one bad trial does not make its nodes look bad


def test_two_controllers_at_once_one_refuses_and_stop_ends_the_sweep(cluster_file, sweep_env, tmp_path):
    name = f"two-{uuid.uuid4().hex[:6]}"
    sweep_env.append(name)
    f = write_sweep(tmp_path, cluster_file, name, lrs=[0.1, 0.2, 0.3], extra_args=["--sleep", "30"])
    argv = [sys.executable, "-m", "launcher.cli", "sweep", str(f), "-c", str(cluster_file)]
    procs = [
        subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(p.wait(timeout=90), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    refused = next(r for r in results if r[0] == 2)
    assert f"sweep '{name}' is already running" in refused[2] and "corral sweep stop" in refused[2]

    wait_for(lambda: status_of(cluster_file, name)["counts"]["running"] == 3, 60, "3 trials to run")
    assert main(["sweep", "stop", name, "-c", str(cluster_file)]) == 0
    st = status_of(cluster_file, name)
    assert not st["controller"]["alive"] and st["counts"]["running"] == 0 and st["counts"]["pending"] == 3
    ends = [r for r in journal_of(cluster_file, name) if r["ev"] == "end"]
    assert len(ends) == 3 and all(r["result"] == "stopped" for r in ends)

"""The journal (append, torn lines, replay) and the O_EXCL lock (refusal, stale recovery, takeover)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from launcher.sweep.journal import Journal, replay
from launcher.sweep.lock import LockHeld, LockInfo, LockLost, SweepLock, is_stale, read_lock


def test_journal_appends_fsynced_lines_and_replays(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append("start", trial="a", attempt=1, run="s-a", nodes=["n1"], params={"lr": 1})
    j.append("end", trial="a", attempt=1, run="s-a", result="failed", exit_codes={"n1": 1})
    j.append("start", trial="a", attempt=2, run="s-a-2", nodes=["n2"], params={"lr": 1})
    j.append("end", trial="a", attempt=2, run="s-a-2", result="done", exit_codes={"n2": 0}, metric=0.5)
    j.append("start", trial="b", attempt=1, run="s-b", nodes=["n1"], params={"lr": 2})
    st = replay(j.read())
    a, b = st.trials["a"], st.trials["b"]
    assert a.state(retries=1) == "done" and a.done.metric == 0.5 and a.failures == 1
    assert b.state(retries=1) == "running" and st.busy_nodes() == {"n1"}
    assert st.started_trials() == 2 and st.problems == []
    assert st.streaks == {"n1": ["a"], "n2": []}


def test_torn_last_line_is_skipped_and_never_glued_to(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.append("start", trial="a", attempt=1, run="s-a", nodes=["n1"], params={})
    with open(path, "a") as f:
        f.write('{"v":1,"ev":"end","trial":"a","att')  # the controller died mid-write
    j.append("end", trial="a", attempt=1, run="s-a", result="done", exit_codes={}, metric=1.0)
    recs = j.read()
    assert [r["ev"] for r in recs] == ["start", "end"]
    assert replay(recs).trials["a"].state(0) == "done"
    assert all(json.loads(line) for line in path.read_text().splitlines()[2:])


def test_replay_flags_inconsistencies():
    recs = [
        {"ev": "start", "trial": "a", "attempt": 1, "run": "r", "nodes": ["n1"], "params": {}},
        {"ev": "start", "trial": "a", "attempt": 2, "run": "r2", "nodes": ["n2"], "params": {}},
        {"ev": "end", "trial": "z", "attempt": 1, "run": "rz", "result": "done"},
    ]
    problems = replay(recs).problems
    assert any("started while attempt 1 was running" in p for p in problems)
    assert any("ended but never started" in p for p in problems)


def test_failure_streak_counts_different_trials_and_resets_on_success():
    def att(trial, n, result, node="n1"):
        return [
            {"ev": "start", "trial": trial, "attempt": n, "run": f"{trial}{n}", "nodes": [node], "params": {}},
            {
                "ev": "end",
                "trial": trial,
                "attempt": n,
                "run": f"{trial}{n}",
                "result": result,
                "exit_codes": {node: 0 if result == "done" else 1},
            },
        ]

    assert replay(att("a", 1, "failed") + att("a", 2, "failed")).streaks["n1"] == ["a"]
    assert replay(att("a", 1, "failed") + att("b", 1, "failed")).streaks["n1"] == ["a", "b"]
    assert replay(att("a", 1, "failed") + att("c", 1, "done") + att("b", 1, "failed")).streaks["n1"] == ["b"]
    assert replay(att("a", 1, "stopped") + att("b", 1, "lost")).streaks.get("n1", []) == []


# ---- lock ---------------------------------------------------------------------


def test_second_holder_is_refused_with_who_holds_it(tmp_path):
    first = SweepLock(tmp_path / "lock", "s1")
    first.acquire()
    with pytest.raises(LockHeld) as err:
        SweepLock(tmp_path / "lock", "s1").acquire()
    msg = str(err.value)
    assert "sweep 's1' is already running" in msg and f"pid {os.getpid()}" in msg and "corral sweep stop s1" in msg
    first.release()
    assert not (tmp_path / "lock").exists()
    SweepLock(tmp_path / "lock", "s1").acquire()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_dead_process_on_this_host_is_broken(tmp_path):
    path = tmp_path / "lock"
    path.write_text(
        json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "old", "heartbeat": time.time()})
    )
    lock = SweepLock(path, "s1")
    lock.acquire()
    assert read_lock(path).token == lock.info.token


def test_other_host_lock_is_stale_only_after_its_heartbeat_ages(tmp_path):
    now = time.time()
    fresh = LockInfo(pid=1, host="elsewhere", token="t", heartbeat=now - 5)
    old = LockInfo(pid=1, host="elsewhere", token="t", heartbeat=now - 120)
    assert not is_stale(fresh, now=now, stale_after=60) and is_stale(old, now=now, stale_after=60)
    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "t", "heartbeat": now - 5}))
    with pytest.raises(LockHeld):
        SweepLock(path, "s1", stale_after=60).acquire()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "t", "heartbeat": now - 120}))
    SweepLock(path, "s1", stale_after=60).acquire()


def test_heartbeat_refreshes_and_detects_a_takeover(tmp_path):
    lock = SweepLock(tmp_path / "lock", "s1")
    lock.acquire()
    before = read_lock(lock.path).heartbeat
    time.sleep(0.01)
    lock.heartbeat()
    assert read_lock(lock.path).heartbeat > before
    lock.path.write_text(json.dumps({"pid": 1, "host": "other", "token": "thief", "heartbeat": time.time()}))
    with pytest.raises(LockLost):
        lock.heartbeat()
    lock.release()  # must not remove the other holder's lock
    assert read_lock(lock.path).token == "thief"


def test_racing_breakers_of_one_stale_lock_leave_exactly_one_holder(tmp_path):
    """Eight processes find the same stale lock at once; exactly one may win."""
    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "old", "heartbeat": 0}))
    code = (
        "import sys,time; from launcher.sweep.lock import SweepLock, LockHeld\n"
        "l = SweepLock(sys.argv[1], 's')\n"
        "try:\n    l.acquire(); print('WON', flush=True); time.sleep(1.5)\n"
        "except LockHeld:\n    print('REFUSED', flush=True)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True) for _ in range(8)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs.count("WON") == 1, outs
    assert not list(tmp_path.glob("lock.break"))

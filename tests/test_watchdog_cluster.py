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
import yaml

from launcher import api
from launcher.cli import main as cli_main
from launcher.config import ClusterConfig, JobConfig
from launcher.heartbeat import progress_path
from launcher.tools import ssh
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
HANG_AFTER = 8


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


def hang_job(
    name: str, *, watchdog: dict, args: list[str], restarts: int = 0, checkpoint: dict | None = None
) -> JobConfig:
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
            **({"checkpoint": checkpoint} if checkpoint is not None else {}),
        }
    )


def rank_pid(handle, rank: int, restart: int = 0) -> int:
    path = handle.run_dir / "hang-test" / f"pid-rank{rank}-restart{restart}"
    wait_for(path.exists, 120, f"rank {rank} started")
    return int(path.read_text())


def rank_phase(handle, rank: int) -> str | None:
    """The phase of the rank's progress mark (``launcher.heartbeat``): "checkpoint" while a save blocks."""
    try:
        return json.loads(Path(progress_path(handle.run_dir, node_of_rank(handle, rank), rank)).read_text())["phase"]
    except (OSError, ValueError, KeyError):
        return None


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


def watchdog_logs(handle) -> dict[str, str]:
    """Each node's watchdog log and events, for a failure's message."""
    out = {}
    for n in handle.plan.nodes:
        path = Path(n.state_dir) / "watchdog" / "watchdog.log"
        out[n.node] = path.read_text()[-2500:] if path.exists() else "(no watchdog log)"
    out["events"] = json.dumps(events(handle), indent=1)[-3000:]
    return out


def node_of_rank(handle, rank: int) -> str:
    return handle.plan.nodes[rank].node  # one process per node: global rank = node rank


def test_sigstopped_rank_is_named_with_stacks_and_the_job_shows_hung(cl, names, capsys):
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
    # corral top shows the verdict on a line of its own
    cluster_file = handle.run_dir / "top-cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(cl.model_dump(mode="json", exclude_none=True)))
    assert cli_main(["top", name, "-c", str(cluster_file), "--once"]) == 0
    shown = capsys.readouterr().out
    assert "watchdog:" in shown and victim_node in shown, shown
    # and corral ps: the state hung, the suspect on its own line
    assert cli_main(["ps", "-c", str(cluster_file)]) == 0
    table = capsys.readouterr().out
    assert "hung" in table and "stopped (SIGSTOP" in table and victim_node in table, table
    # dump only: nothing was killed
    assert os.path.exists(f"/proc/{victim}")


def expected_acc(steps: int, world: int = 3) -> float:
    """The worker's exact sum: every step all-reduces rank + step + 1 over the ranks."""
    return float(sum(world * (world + 1) / 2 + world * step for step in range(steps)))


def test_restart_ends_the_frozen_group_and_the_job_resumes_from_its_checkpoint(cl, names):
    name = names("wd-restart")
    steps = 240
    job = hang_job(
        name,
        watchdog={"hang_after": f"{HANG_AFTER}s", "on_hang": "restart"},
        args=["--steps", str(steps), "--step-time", "0.05", "--every", "10"],
        restarts=1,
        checkpoint={"keep_last": 2},
    )
    handle = api.launch(job, cl)
    victim = rank_pid(handle, 1)
    wait_for(lambda: rank_step(handle, 1) >= 45, 180, "45 steps (four checkpoints)")
    # frozen inside its next save: its peers then wait for it in the save's own collective, marked as saving
    wait_for(lambda: rank_phase(handle, 1) == "checkpoint", 60, "rank 1 saving the checkpoint of step 50", 0.005)
    os.kill(victim, signal.SIGSTOP)
    try:
        status = handle.wait(timeout=300)
    finally:  # what every node printed and saw, also when the job did not end in time
        logs = {n.node: Path(n.log_path).read_text()[-3000:] for n in handle.plan.nodes}
        print(json.dumps({"logs": logs, "watchdog": watchdog_logs(handle)}, indent=1))
    assert status.ok, (status.to_json(), logs, watchdog_logs(handle))
    ev = hang_events(handle)
    assert len(ev) == 1 and ev[0]["action"] == "restart", ev
    assert ev[0]["nodes"] == [node_of_rank(handle, 1)] and ev[0]["ranks"] == [1]
    out = handle.run_dir / "hang-test"
    for rank in range(3):
        starts = [json.loads(x) for x in (out / f"starts-rank{rank}").read_text().splitlines()]
        assert len(starts) == 2 and starts[0]["resumed_from"] is None, starts
        assert starts[1]["resumed_from"] is not None and starts[1]["resumed_from"] >= 40, starts
        done = json.loads((out / f"done-rank{rank}").read_text())
        assert done["acc"] == expected_acc(steps), done
    assert not os.path.exists(f"/proc/{victim}"), "the frozen process is gone"
    assert status.state == "exited"
    state = json.loads((handle.run_dir / "watchdog" / "state.json").read_text())
    assert state["state"] == "watching" and state["restarts"] == 1, state  # watched the restarted group again


def test_a_rank_asleep_outside_the_collective_is_named_and_stop_leaves_the_job_hung(cl, names):
    name = names("wd-sleep")
    job = hang_job(
        name,
        watchdog={"hang_after": f"{HANG_AFTER}s", "on_hang": "stop"},
        args=["--steps", "100000", "--step-time", "0.05", "--sleep-rank", "0", "--sleep-at", "30", "--sleep-s", "600"],
    )
    handle = api.launch(job, cl)
    sleeper = rank_pid(handle, 0)
    wait_for(lambda: hang_events(handle), 180, "a hang event")
    ev = hang_events(handle)[0]
    assert ev["action"] == "stop"
    assert ev["suspects"] == [
        {
            "node": node_of_rank(handle, 0),
            "rank": 0,
            "reason": "outside-collective",
            "evidence": ev["suspects"][0]["evidence"],
        }
    ], ev
    assert "wait in all_reduce" in ev["evidence"][0] and "hang_train.py" in ev["evidence"][0]
    status = handle.wait(timeout=120)  # stop ends the job on every node
    assert status.state == "hung", status.to_json()
    assert all(n.state == "exited" and n.exit_code != 0 for n in status.nodes), status.to_json()
    assert not os.path.exists(f"/proc/{sleeper}")
    stacks = Path(ev["stacks"])
    assert sorted(p.name for p in stacks.iterdir()) == sorted(
        f"{node_of_rank(handle, r)}-rank{r}.txt" for r in range(3)
    )
    assert (
        "time.sleep" in (stacks / f"{node_of_rank(handle, 0)}-rank0.txt").read_text()
        or "main (" in (stacks / f"{node_of_rank(handle, 0)}-rank0.txt").read_text()
    )


def test_log_silence_of_a_job_that_never_reports_with_the_launcher_killed(cl, names, tmp_path):
    """`corral launch --follow` is SIGKILLed right after the start: the watchdog on the nodes acts alone."""
    import subprocess
    import sys

    name = names("wd-silent")
    job = hang_job(
        name,
        # the grace covers the silent start (importing torch on loaded cores); then log silence decides
        watchdog={"hang_after": f"{HANG_AFTER}s", "first_step_grace": "30s"},
        args=["--steps", "100000", "--step-time", "0.05", "--no-report"],
    )
    job_file = tmp_path / f"{name}.yaml"
    job_file.write_text(yaml.safe_dump(job.model_dump(mode="json", exclude_none=True)))
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(cl.model_dump(mode="json", exclude_none=True)))
    try:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", "launch", str(job_file), "-c", str(cluster_file), "--follow"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            handle = wait_for_handle(cl, name)
            victim = rank_pid(handle, 1)
            wait_for(lambda: "step 20 " in Path(handle.plan.nodes[1].log_path).read_text(), 120, "20 steps printed")
        finally:
            launcher.kill()
            launcher.wait()
        os.kill(victim, signal.SIGSTOP)
        frozen_at = time.time()
        wait_for(lambda: hang_events(handle), 30 + HANG_AFTER + 60, "a hang event")
    finally:
        job_file.unlink(missing_ok=True)
    assert launcher.returncode == -signal.SIGKILL
    ev = hang_events(handle)[0]
    assert ev["at"] > frozen_at, ("a hang before the freeze: a false alarm", ev, watchdog_logs(handle))
    assert ev["signal"] == "log" and ev["nodes"] == [node_of_rank(handle, 1)], (ev, watchdog_logs(handle))
    assert api.status(name, cl).state == "hung"


def wait_for_handle(cl, name):
    def found():
        try:
            return api.handle(name, cl)
        except Exception:  # noqa: BLE001 - the record is not written yet
            return None

    return wait_for(found, 60, f"the run record of {name}")


def test_no_false_alarm_for_a_slow_first_step_steady_slow_steps_and_a_long_checkpoint_save(cl, names):
    name = names("wd-calm")
    job = hang_job(
        name,
        # first step 12 s (grace 90 s: importing torch on loaded cores comes first), steps of 1 s
        # (> hang_after / 10), one save capped to take ~16 s
        watchdog={"hang_after": f"{HANG_AFTER}s", "first_step_grace": "90s", "on_hang": "stop"},
        args=["--steps", "14", "--step-time", "1.0", "--first-step", "12", "--every", "12", "--ckpt-mb", "32"],
        checkpoint={"max_write_mibps": 2},
    )
    handle = api.launch(job, cl)
    status = handle.wait(timeout=240)
    assert status.ok and status.state == "exited", (status.to_json(), watchdog_logs(handle))
    assert events(handle) == [], watchdog_logs(handle)
    saves = [float(x) for x in (handle.run_dir / "hang-test" / "save-seconds-rank0").read_text().split()]
    assert max(saves) > HANG_AFTER, saves  # the save outlasted hang_after: only its mark kept it from a hang

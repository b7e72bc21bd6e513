"""``launcher.api.run_to_completion``: launch, wait, collect through the node agents, clean up.

The run directory is on each node's private /tmp (the simulated nodes share the host's
filesystem everywhere else), so the results can only have come back through the agents: no
benchmark needs a shared drive.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest

from launcher import api
from launcher.config import ClusterConfig, JobConfig

pytestmark = pytest.mark.cluster


@pytest.fixture
def private_runs_cluster(sim_cluster):
    tag = secrets.token_hex(4)
    data = sim_cluster.cluster_config()
    data["storage"] = {"runs": f"/tmp/corral-rtc-{tag}/runs", "checkpoints": f"/tmp/corral-rtc-{tag}/ckpt"}
    yield ClusterConfig.model_validate(data)
    shutil.rmtree(f"/tmp/corral-rtc-{tag}", ignore_errors=True)  # the run record, on this machine's /tmp


def test_results_come_back_through_the_agents_and_sessions_are_removed(private_runs_cluster, sim_cluster):
    cluster = private_runs_cluster
    name = f"rtc-{secrets.token_hex(3)}"
    job = JobConfig.model_validate(
        {"name": name, "script": "tests/workers/echo_env.py", "args": ["x"], "nproc_per_node": 1}
    )
    polls = []
    done = api.run_to_completion(
        job, cluster, plain=True, timeout=180, collect=["echo-{node}.json", "absent.json"], on_poll=polls.append
    )
    labels = [n.label for n in cluster.nodes]
    assert done.status.ok and not done.timed_out and polls
    assert sorted(done.files) == sorted(labels)
    for label in labels:
        rec = json.loads(done.files[label]["echo-{node}.json"])
        assert rec["argv"] == ["x"] and rec["env"]["CORRAL_NODE"] == label
        assert done.files[label]["absent.json"] is None
    assert not (Path(done.handle.run_dir) / f"echo-{labels[0]}.json").exists()  # not on this machine: the node's /tmp
    assert done.first("echo-{node}.json") is not None
    for node in sim_cluster.nodes:  # the finished sessions are gone
        out = sim_cluster.run(node, ["tmux", "has-session", "-t", f"=corral-{name}"])
        assert out.returncode != 0


def test_timeout_stops_the_job_and_still_collects(private_runs_cluster):
    cluster = private_runs_cluster
    name = f"rtc-{secrets.token_hex(3)}"
    job = JobConfig.model_validate(
        {"name": name, "script": "tests/workers/echo_env.py", "nproc_per_node": 1, "env": {"ECHO_SLEEP": "120"}}
    )
    done = api.run_to_completion(job, cluster, plain=True, timeout=15, collect=["echo-{node}.json"])
    assert done.timed_out and not done.status.running
    assert all(json.loads(got["echo-{node}.json"])["env"]["CORRAL_NODE"] == label for label, got in done.files.items())


def test_the_timeout_counts_from_the_call_the_launch_included(monkeypatch):
    """A budget holds however slowly the nodes start: what the wait gets is the timeout less the launch."""
    from launcher.errors import RunFailed

    class Handle:
        record, name = object(), "slow-start"
        stopped = False

        def stop(self, timeout):
            Handle.stopped = True

        def status(self):
            return "stopped"

    clock = [100.0]
    waited = []

    def slow_launch(*args, **kwargs):
        clock[0] += 7.0  # the launch took 7 s of a 10 s timeout
        return Handle()

    def wait_record(record, cluster, timeout, on_poll=None):
        waited.append(timeout)
        raise RunFailed("still running")

    monkeypatch.setattr(api, "launch", slow_launch)
    monkeypatch.setattr(api, "wait_record", wait_record)
    monkeypatch.setattr(api.time, "monotonic", lambda: clock[0])
    done = api.run_to_completion(JobConfig.model_validate({"name": "x", "script": "t.py"}), None, timeout=10)
    assert waited == [3.0] and done.timed_out and Handle.stopped
    clock[0] += 20.0  # a launch longer than the whole timeout leaves the wait nothing, never a negative
    waited.clear()
    api.run_to_completion(JobConfig.model_validate({"name": "x", "script": "t.py"}), None, timeout=5)
    assert waited == [0.0]

"""``corral launch`` of a job with a container section: torchrun runs inside the container, started
from the node's tmux pane; ps shows the container; stop removes it (docker + tmux, localhost)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from container.docker import Docker
from launcher import api
from launcher.agent.node_agent import rlimits
from launcher.config import ClusterConfig, JobConfig
from tests.infra.docker_fixtures import TEST_LABEL, python_mounts
from tests.infra.tmux_server import end_server

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")]


def granted_memlock():
    rl = rlimits()
    hard = rl["limits"]["memlock"][1]
    return "unlimited" if rl["can_raise"] or hard == -1 else hard


def test_launch_runs_torchrun_inside_the_container_and_stop_removes_it(test_image, monkeypatch):
    token = uuid.uuid4().hex[:8]
    sock, root = f"corral-test-{token}", Path("/var/tmp") / f"corral-ctr-launch-{token}"
    root.mkdir(parents=True)
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", sock)
    name = f"ctr-{token}"
    docker = Docker(node="test")
    cluster = ClusterConfig.model_validate(
        {
            "nodes": [{"host": "localhost", "name": "local"}],
            "workdir": str(REPO),
            "storage": {"runs": str(root / "runs"), "checkpoints": str(root / "ckpt")},
        }
    )
    job = JobConfig.model_validate(
        {
            "name": name,
            "script": "examples/train_demo.py",
            "args": ["--steps", "20", "--step-time", "0", "--plain-sgd"],
            "container": {
                "image": test_image,
                "mounts": python_mounts(),
                "ulimits": {"memlock": granted_memlock()},
                "labels": {TEST_LABEL: token},
            },
        }
    )
    try:
        handle = api.launch(job, cluster)
        assert handle.plan.nodes[0].command[:2] == ["docker", "run"]
        status = handle.wait(timeout=180)
        log = handle.log_path("local").read_text()
        assert status.ok, log[-3000:]
        assert "container exited 0" in (status.nodes[0].detail or ""), status.to_json()
        results = sorted((handle.run_dir / "results").glob("rank*.json"))
        assert [json.loads(p.read_text())["world_size"] for p in results] == [2, 2], (
            "results written inside land on the host"
        )
        assert "[local] [rank1]: rank 1/2 ready" in log
        assert docker.containers({"corral.job": name}), "the exited container stays until stop (ps shows its exit code)"
        api.stop(name, cluster, timeout=2)
        assert docker.containers({"corral.job": name}) == []
    finally:
        docker.remove([r["Names"] for r in docker.containers({TEST_LABEL: token})])
        end_server(sock)
        shutil.rmtree(root, ignore_errors=True)

"""The simulated 5-node cluster and the helpers of the ``corral bench cluster`` acceptance tests
(tests/test_cluster_accept_sim.py, tests/test_cluster_accept_faults_sim.py): a pytest plugin loaded by
tests/conftest.py. ``five`` is module-scoped: each of the two modules builds its own cluster, so under
pytest-xdist they run side by side.

The peers' threshold is 0.7 (a figure 70% below the median): what this shared 2-core machine separates from its
own noise without false positives (docs/BENCH_CLUSTER.md, "Sensitivity"); the product's default is 0.15.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from launcher.cli import main
from tests.infra.tmux_server import end_server

THRESHOLD = "0.7"


@pytest.fixture(scope="module")
def five(request, _reaped_stale_sim_runs):
    """Five simulated nodes, one set per test module."""
    from tests.conftest import _new_cluster

    return _new_cluster(request, 5)


@pytest.fixture
def cfg(five, tmp_path, monkeypatch) -> Path:
    # a fresh tmux socket: its server is started over ssh after the faults are in place, so it inherits them
    sock = f"corral-accept-{secrets.token_hex(3)}"
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", sock)
    yield five.write_cluster_config(tmp_path / "cluster.yaml")
    end_server(sock)


def bench(cfg: Path, out: Path, *extra: str) -> tuple[int, dict]:
    rc = main(["bench", "cluster", "-c", str(cfg), "--out", str(out), "--threshold", THRESHOLD, *extra])
    return rc, json.loads((out / "report.json").read_text())


def findings(report: dict, node: str) -> list[dict]:
    return [f for n in report["nodes"] if n["name"] == node for f in n["findings"]]


def kinds(report: dict, node: str) -> set[str]:
    return {f["check"] for f in findings(report, node)}


def job_pids(cfg: Path, job_prefix: str = "bench-cluster-") -> list[int]:
    """Processes of this cluster's jobs whose name starts so (the simulated nodes share this PID namespace; the
    runs dir tells this cluster's jobs from another test's running beside it under pytest-xdist)."""
    import yaml

    runs = yaml.safe_load(cfg.read_text())["storage"]["runs"]
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                env = (p / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(v.startswith(f"CORRAL_JOB_NAME={job_prefix}".encode()) for v in env) and any(
                v.startswith(f"CORRAL_RUN_DIR={runs}/".encode()) for v in env
            ):
                found.append(int(p.name))
    return found

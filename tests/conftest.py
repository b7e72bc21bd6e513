"""Shared test plumbing: markers, facility checks, the simulated cluster.

Markers (registered here because pytest runs with --strict-markers):
  cluster  needs the simulated cluster (root, iproute2, openssh-server)
  docker   needs a reachable Docker engine
  slurm    needs a real Slurm cluster (slurmctld, slurmd, munge) over the simulated nodes
  gpu      needs a CUDA GPU
  slow     takes more than a few seconds
  long     takes minutes (scale tests): left out of `make test`, run by `make test-long` (CI runs both)

A test marked cluster, docker or slurm is skipped where the facility is missing,
except on CI (env CI=true), where that skip becomes a failure: a CI machine
that silently lost sshd or dockerd must not report green. gpu tests skip
cleanly everywhere (CI has no GPU).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra.simcluster import SimCluster, missing_facility, reap_stale_runs
from tests.infra.tmux_server import end_server

# Docker tests: starts dockerd (only when none runs) before the facility check below, the test image, labelled cleanup.
# The clean-checkout check: a run that leaves new entries in `git status --porcelain` fails.
pytest_plugins = ("tests.infra.docker_fixtures", "tests.infra.clean_checkout", "tests.infra.accept")

MISSING = "missing facility: "
"""Prefix of every skip reason caused by a missing facility (CI turns it into a failure)."""
LOUD_ON_CI = ("cluster", "docker", "slurm")

MARKERS = {
    "cluster": "needs the simulated multi-node cluster (root, ip netns, sshd); see docs/SIMCLUSTER.md",
    "docker": "needs a reachable Docker engine",
    "slurm": "needs a real Slurm cluster on this machine (slurmctld, slurmd, munge and the simulated cluster's namespaces); see docs/SLURM.md",
    "gpu": "needs a CUDA GPU (skips cleanly where there is none, CI included)",
    "slow": "takes more than a few seconds",
    "long": "takes minutes (e.g. 32-node scale tests): `make test` leaves it out, `make test-long` and CI run it",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    # A suite started in the background by a non-interactive shell (`make test &` in a script: no job control)
    # inherits SIGINT ignored, as POSIX has it, and so does every process it starts; the tests of Ctrl-C
    # (launcher.aio, `bench cluster` interrupted) need it delivered. pytest-xdist's workers run this too.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with a ``slow`` test run first, each module's tests together and in their order. Under
    pytest-xdist (``make test``: ``--dist load --maxschedchunk 1``, each worker handed its next test when it
    finishes one) the minute-long cluster tests then start while the many short ones are still queued to
    fill in around them, instead of the last of them starting near the end (longest first packs best)."""
    slow_modules = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_modules)  # stable: each keeps its order


# ---- facility checks (cached: each costs a subprocess or a socket) ----------

_facility_cache: dict[str, str | None] = {}


def _cached(name: str, check: Callable[[], str | None]) -> str | None:
    if name not in _facility_cache:
        _facility_cache[name] = check()
    return _facility_cache[name]


def _docker_missing() -> str | None:
    """Ping the engine over its unix socket; no docker SDK import needed."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None  # a remote engine: let the test find out
    path = host[len("unix://") :]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = s.recv(4096)
    except OSError as exc:
        return f"no Docker engine at {path} ({exc}); start dockerd"
    if b" 200 " not in reply.split(b"\r\n", 1)[0]:
        return f"Docker engine at {path} did not answer /_ping with 200"
    return None


def _gpu_missing() -> str | None:
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return "no CUDA GPU (/dev/nvidia* absent)"
    try:
        import torch
    except ImportError:
        return "torch not installed"
    return None if torch.cuda.is_available() else "no CUDA GPU (torch.cuda.is_available() is False)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cluster"):
        reason = _cached("cluster", missing_facility)
        if reason:
            pytest.skip(MISSING + "simulated cluster: " + reason)
    if item.get_closest_marker("docker"):
        reason = _cached("docker", _docker_missing)
        if reason:
            pytest.skip(MISSING + reason)
    if item.get_closest_marker("slurm"):
        from tests.infra.slurmcluster import missing_slurm

        reason = _cached("cluster", missing_facility) or _cached("slurm", missing_slurm)
        if reason:
            pytest.skip(MISSING + "Slurm cluster: " + reason)
    if item.get_closest_marker("gpu"):
        reason = _cached("gpu", _gpu_missing)
        if reason:
            pytest.skip(reason)  # no MISSING prefix: fine everywhere, CI included


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """On CI, a skip for a missing facility is a failure, with the skip reason."""
    report: pytest.TestReport = yield
    if not (on_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return report
    reason = _skip_reason(report)
    loud_marker = any(item.get_closest_marker(m) for m in LOUD_ON_CI)
    if reason.startswith(MISSING) or (loud_marker and not item.get_closest_marker("gpu")):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped on CI (CI=true), which counts as a failure for tests "
            f"marked {'/'.join(LOUD_ON_CI)} or missing a facility: {reason}"
        )
    return report


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason
    return str(longrepr)


# ---- the simulated cluster ---------------------------------------------------

MakeSimCluster = Callable[..., SimCluster]


def _require_cluster_facility() -> None:
    reason = _cached("cluster", missing_facility)
    if reason:
        pytest.skip(MISSING + "simulated cluster: " + reason)


@pytest.fixture(scope="session")
def _reaped_stale_sim_runs() -> None:
    """Once per session, remove what earlier runs killed with SIGKILL left behind."""
    _require_cluster_facility()
    reap_stale_runs()


def _new_cluster(request: pytest.FixtureRequest, n_nodes: int, **kwargs: object) -> SimCluster:
    cluster = SimCluster(n_nodes, **kwargs)  # type: ignore[arg-type]
    request.addfinalizer(cluster.close)  # before start(): partial setups are removed too
    cluster.start()
    return cluster


@pytest.fixture
def make_sim_cluster(request: pytest.FixtureRequest, _reaped_stale_sim_runs: None) -> MakeSimCluster:
    """Factory: ``make_sim_cluster(n)`` gives a started n-node SimCluster, torn down after the test."""

    def make(n_nodes: int = 3, **kwargs: object) -> SimCluster:
        return _new_cluster(request, n_nodes, **kwargs)

    return make


@pytest.fixture(scope="module")
def sim_cluster(request: pytest.FixtureRequest, _reaped_stale_sim_runs: None) -> SimCluster:
    """A 3-node SimCluster shared by a module's tests.

    Tests that inject faults must undo them (start_sshd, reconnect); tests that
    need a pristine or differently sized cluster use make_sim_cluster.
    """
    return _new_cluster(request, 3)


@pytest.fixture
def local_space(monkeypatch: pytest.MonkeyPatch):
    """The embedded-style localhost cluster with a private tmux server and storage outside /tmp.

    Yields (cluster, root, token); the tmux server, its socket file and the storage are removed after.
    """
    from launcher.config import ClusterConfig

    token = uuid.uuid4().hex[:8]
    sock = f"corral-test-{token}"
    root = Path("/var/tmp") / f"corral-local-test-{token}"
    root.mkdir(parents=True)
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", sock)
    cluster = ClusterConfig.model_validate(
        {
            "nodes": [{"host": "localhost", "name": "local"}],
            "workdir": str(Path(__file__).resolve().parents[1]),
            "storage": {"runs": str(root / "runs"), "checkpoints": str(root / "ckpt")},
        }
    )
    yield cluster, root, token
    end_server(sock)
    shutil.rmtree(root, ignore_errors=True)


# ---- the Slurm cluster -------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster(request: pytest.FixtureRequest, _reaped_stale_sim_runs: None):
    """A 2-node Slurm cluster (slurmctld, one slurmd per node, its own munged) shared by a module's tests.

    SLURM_CONF points corral and the clients at it for the module; everything is torn down after.
    """
    from tests.infra.slurmcluster import SlurmCluster, missing_slurm

    reason = missing_slurm()
    if reason:
        pytest.skip(MISSING + "Slurm cluster: " + reason)
    cluster = SlurmCluster(2)
    request.addfinalizer(cluster.close)
    cluster.start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf_path)

    def restore() -> None:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old

    request.addfinalizer(restore)
    return cluster

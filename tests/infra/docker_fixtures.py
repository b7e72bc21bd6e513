"""Docker for the tests: start ``dockerd`` only when none runs, a tiny locally built image, labelled cleanup.

Loaded as a pytest plugin from tests/conftest.py (``pytest_plugins``). Its ``pytest_runtest_setup``
runs before conftest's facility check, so the engine is up before a ``docker`` test is judged;
it starts one only for a test marked ``docker``, and stops only the dockerd it started, at the end
of the session (and only when no container is left running on it), then removes what that dockerd
left on the host (its iptables rules and chains, the docker0 bridge) unless they were there before.
Under pytest-xdist the controller does this once for all workers (``pytest_configure``).

The image ``corral-test-base:1`` holds no Python: just the shared libraries the host's Python and
torch link against (found with ldd) and /bin/sh. The tests bind-mount the venv (the builder's venv
mount) and the base interpreter it points to (a ``container.mounts`` entry), read-only. No registry:
it is ``docker import`` of a tar stream built here, and cached by its tag.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

TEST_IMAGE = "corral-test-base:1"
TEST_LABEL = "corral.test"
SOCKET = "/var/run/docker.sock"
START_TIMEOUT_S = 60

_started: dict[str, object] = {}


def engine_answers(path: str = SOCKET) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in s.recv(4096).split(b"\r\n", 1)[0]
    except OSError:
        return False


def _forward_policy() -> str | None:
    try:
        out = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^-P FORWARD (\w+)", out, re.MULTILINE)
    return m.group(1) if m else None


DOCKER_CHAINS = ("DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2", "DOCKER-USER")
"""The iptables chains dockerd creates and leaves behind when it stops."""


def _dockers_traces() -> bool:
    """Whether dockerd's chains or bridge exist (left by an earlier engine): then they are not ours to remove."""
    filt = subprocess.run(["iptables", "-S"], capture_output=True, text=True, timeout=10).stdout
    bridge = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True, timeout=10).returncode == 0
    return bridge or any(line == f"-N {c}" for c in DOCKER_CHAINS for line in filt.splitlines())


def _remove_dockers_traces() -> None:
    """What a dockerd we started left on the host: its rules (filter and nat), its chains, the docker0 bridge."""
    for table in ("filter", "nat"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, timeout=10).stdout
        for line in rules.splitlines():
            words = line.split()
            if words[:1] == ["-A"] and words[1] not in DOCKER_CHAINS and ("DOCKER" in line or "docker0" in line):
                subprocess.run(["iptables", "-t", table, "-D", *words[1:]], capture_output=True, timeout=10)
        for chain in DOCKER_CHAINS:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, timeout=10)
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, timeout=10)
    subprocess.run(["ip", "link", "del", "docker0"], capture_output=True, timeout=10)


def start_dockerd() -> subprocess.Popen | None:
    """Start dockerd when none answers; returns the process we started (None: one was running or none can run)."""
    if engine_answers() or os.geteuid() != 0:
        return None
    if subprocess.run(["sh", "-c", "command -v dockerd"], capture_output=True).returncode != 0:
        return None
    logf = open(f"/var/tmp/corral-test-dockerd-{os.getpid()}.log", "ab")
    policy = _forward_policy()
    _started["traces_before"] = _dockers_traces()
    proc = subprocess.Popen(
        ["dockerd"], stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if engine_answers():
            _started.update(proc=proc, forward_policy=policy, log=logf)
            return proc
        time.sleep(0.3)
    _stop(proc, policy)
    return None


def _stop(proc: subprocess.Popen, policy: str | None) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # dockerd sets the FORWARD policy to DROP and leaves it; put back what was there before it.
    if policy and policy != _forward_policy():
        subprocess.run(["iptables", "-P", "FORWARD", policy], capture_output=True, timeout=10)


def stop_started_dockerd() -> None:
    proc = _started.get("proc")
    if not isinstance(proc, subprocess.Popen):
        return
    running = subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True, timeout=30).stdout.split()
    if running:
        log.warning("leaving dockerd (pid %s) running: %d container(s) still run on it", proc.pid, len(running))
        return
    _stop(proc, _started.get("forward_policy"))  # type: ignore[arg-type]
    if _started.get("traces_before") is False:
        _remove_dockers_traces()
    logf = _started.get("log")
    if logf is not None:
        logf.close()  # type: ignore[attr-defined]
        Path(logf.name).unlink(missing_ok=True)  # type: ignore[attr-defined]
    _started.clear()


def _xdist_controller(config: pytest.Config) -> bool:
    """The process that hands tests to pytest-xdist's workers (``-n N``), not a worker and not a plain run."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist the controller starts dockerd once, before any worker, and stops it after the last:
    # workers find it running, so several can run docker tests without racing to start or stop the engine.
    if _xdist_controller(config) and "not docker" not in (config.option.markexpr or ""):
        if start_dockerd() is not None:
            config.add_cleanup(stop_started_dockerd)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") and "tried" not in _started:
        _started["tried"] = True
        if start_dockerd() is not None:
            item.config.add_cleanup(stop_started_dockerd)


# ---- the test image ---------------------------------------------------------------------------------


def _shared_libraries() -> set[str]:
    """Libraries outside the interpreter and the venv that they (and every extension module) link against."""
    roots = [Path(sys.prefix), Path(sys.base_prefix) / "lib"]
    files = [os.path.realpath(sys.executable)]
    for root in roots:
        files += [str(p) for p in root.rglob("*.so*") if p.is_file()]
    libs: set[str] = set()
    for i in range(0, len(files), 100):
        out = subprocess.run(["ldd", *files[i : i + 100]], capture_output=True, text=True).stdout
        libs |= set(re.findall(r"=> (/\S+)", out)) | set(re.findall(r"^\s+(/\S+ld-linux\S*)", out, re.MULTILINE))
    keep = (str(Path(sys.prefix).resolve()), str(Path(sys.base_prefix).resolve()))
    return {lib for lib in libs if not os.path.realpath(lib).startswith(keep)}


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    added: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            if name in added:
                return
            added.add(name)
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o755) -> None:
            if name in added:
                return
            added.add(name)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in (
            "usr",
            "usr/bin",
            "usr/lib",
            "usr/lib64",
            "usr/sbin",
            "etc",
            "root",
            "proc",
            "sys",
            "dev",
            "var",
            "run",
        ):
            add_dir(d)
        add_dir("tmp", 0o1777)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
            if os.path.islink("/" + link):
                info = tarfile.TarInfo(link)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        for lib in sorted(_shared_libraries()):
            where = os.path.join(os.path.realpath(os.path.dirname(lib)), os.path.basename(lib)).lstrip("/")
            for parent in reversed(Path(where).parents):
                if str(parent) not in (".", "") and not (Path("/") / parent).is_symlink():
                    add_dir(str(parent))
            add_file(where, Path(lib).read_bytes())
        add_file("usr/bin/sh", Path(os.path.realpath("/bin/sh")).read_bytes())
        add_file(
            "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n", 0o644
        )
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
    return buf.getvalue()


def build_test_image(tag: str = TEST_IMAGE) -> str:
    """Build the image once per engine (cached by tag)."""
    from container.docker import Docker

    docker = Docker()
    # one builder at a time (pytest-xdist workers): a second import of the tag would leave a dangling image
    with open(__file__) as lock:  # a file every worker has; locking it leaves nothing behind
        fcntl.flock(lock, fcntl.LOCK_EX)
        if docker.image_present(tag):
            return tag
        data = _rootfs_tar()
        proc = subprocess.run(["docker", "import", "-", tag], input=data, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"docker import failed: {proc.stderr.decode(errors='replace')}")
    return tag


def python_mounts() -> list[dict]:
    """The base interpreter the venv points to, read-only (the builder mounts the venv itself)."""
    base = os.path.realpath(sys.base_prefix)
    return [{"source": base, "read_only": True}]


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_cli():
    from container.docker import Docker

    return Docker(node="test")


@pytest.fixture(scope="session")
def test_image(docker_cli) -> str:
    return build_test_image()


@pytest.fixture
def docker_run_id(docker_cli):
    """A unique id for this test's containers and networks; everything labelled with it is removed afterwards."""
    run_id = "t" + uuid.uuid4().hex[:10]
    networks: list[str] = []
    yield run_id, networks
    rows = docker_cli.containers({TEST_LABEL: run_id})
    docker_cli.remove([r["Names"] for r in rows])
    for net in networks:
        docker_cli.run(["network", "rm", net], check=False)


@pytest.fixture
def docker_network(docker_cli, docker_run_id) -> str:
    """A user-defined bridge network for this test (removed after it, with its containers)."""
    run_id, networks = docker_run_id
    name = f"corral-{run_id}"
    docker_cli.run(["network", "create", "--driver", "bridge", "--label", f"{TEST_LABEL}={run_id}", name])
    networks.append(name)
    return name


@pytest.fixture
def host_dir():
    """A unique directory outside /tmp (simulated nodes hide the host's /tmp), removed afterwards."""
    import shutil

    d = Path("/var/tmp") / f"corral-ctr-{uuid.uuid4().hex[:10]}"
    d.mkdir(parents=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)

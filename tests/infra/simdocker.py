"""A Docker engine per simulated node (opt-in), for multi-node container tests.

Each node of a :class:`tests.infra.simcluster.SimCluster` gets its own ``dockerd``:

* started inside the node's network and UTS namespaces (``nsenter`` into the node's anchor), so
  ``--network host`` containers sit on the node's address and carry its hostname; the engine
  starts its own managed containerd (none runs at ``/run/containerd``), which inherits the same
  namespaces, so the containers' shims do too;
* in a private mount namespace of its own (``unshare --mount``) where the node's hosts file is
  bound over ``/etc/hosts`` (``--network host`` containers get a copy of the engine's
  ``/etc/hosts``); not the node's mount namespace, because ``ip netns exec`` remounted ``/sys``
  there and dockerd needs the host's cgroup mounts under ``/sys/fs/cgroup``;
* with its own ``--data-root``, ``--exec-root``, ``--pidfile``, socket and ``--config-file`` (the
  daemon keeps its key next to its config file) under the run directory, ``--bridge none
  --iptables=false --ip-forward=false --ip-masq=false`` (the node's network is the simulated one);
* made the node's default engine: its socket is bind-mounted over ``/run/docker.sock`` in the
  node's mount namespace (where the node's sshd and everything it starts live), so ``docker``
  run over ssh on the node talks to that node's engine. The host's engine is never touched.

The test image is loaded into every engine (``docker save`` once, ``docker load`` per engine).
Teardown (always, even after a failed start): remove every container of the engine, SIGTERM the
engine by its PID (SIGKILL after a grace period), kill what is left of its containerd and shims
by their PIDs (found by the engine's exec-root in their command line), unmount the socket in
the node, remove the directories. The engine's own mounts (overlay layers) live in its private
mount namespace and vanish with its last process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.infra.docker_fixtures import engine_answers
from tests.infra.simcluster import NodeRef, SimCluster, SimClusterError, SimNode, process_exited

log = logging.getLogger(__name__)

NODE_SOCKET = "/run/docker.sock"
"""Where the node's processes look for the engine (/var/run is a link to /run)."""
START_TIMEOUT_S = 90
STOP_GRACE_S = 20
DOCKERD_FLAGS = (
    "--bridge",
    "none",
    "--iptables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--shutdown-timeout",
    "2",
)

# Overlays over /etc, /dev (its pts and shm mounts carried over) and optionally /sys/class; $1 is the
# layers' directory, $2 the node's hosts file (bound again over the overlaid /etc/hosts).
_IB_MOUNT = """set -e
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/etc/upper,workdir=$1/etc/work" /etc
mount --bind "$2" /etc/hosts
mount --bind /dev/pts "$1/keep/pts"; mount --bind /dev/shm "$1/keep/shm"
mount -t overlay overlay -o "lowerdir=/dev,upperdir=$1/dev/upper,workdir=$1/dev/work" /dev
mount --move "$1/keep/pts" /dev/pts; mount --move "$1/keep/shm" /dev/shm
if [ -n "$3" ]; then mount -t overlay overlay -o "lowerdir=/sys/class,upperdir=$1/sys/upper,workdir=$1/sys/work" /sys/class; fi
"""
_IB_UMOUNT = "umount -l /sys/class 2>/dev/null; umount -l /dev/pts; umount -l /dev/shm; umount -l /dev; umount -l /etc/hosts; umount -l /etc"

# Binds the node's hosts file over /etc/hosts in the engine's private mount namespace, then
# becomes dockerd; "$@" is dockerd's argv.
_ENGINE_SHELL = 'mount --bind "$0" /etc/hosts && exec "$@"'


@dataclass
class NodeEngine:
    """One node's engine: where it lives and how to reach it from the host."""

    node: SimNode
    root: Path
    proc: subprocess.Popen | None = None
    socket_mounted: bool = False

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def exec_root(self) -> Path:
        return self.root / "x"

    @property
    def host(self) -> str:
        """``DOCKER_HOST`` for reaching this engine from the host."""
        return f"unix://{self.socket}"

    def docker_argv(self, args: Sequence[str]) -> list[str]:
        """The docker CLI against this engine, run on the host."""
        return ["docker", "-H", self.host, *args]

    def dockerd_argv(self) -> list[str]:
        r = self.root
        return [
            "dockerd",
            "--data-root",
            str(r / "data"),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(r / "dockerd.pid"),
            "--host",
            self.host,
            "--config-file",
            str(r / "daemon.json"),
            *DOCKERD_FLAGS,
        ]


def _run(
    argv: Sequence[str], *, timeout: float = 60, check: bool = True, stdin: IO | None = None
) -> subprocess.CompletedProcess:
    log.debug("simdocker: %s", shlex.join(argv))
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=stdin)
    if check and proc.returncode != 0:
        raise SimClusterError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


class NodeEngines:
    """Engines on every node of a started SimCluster; use as a context manager or start()/close().

    ``images`` (tags on the host's engine) are loaded into each node's engine.
    """

    def __init__(self, cluster: SimCluster, images: Sequence[str] = ()) -> None:
        self.cluster = cluster
        self.images = list(images)
        self.engines: dict[str, NodeEngine] = {}
        self._closed = False

    def __enter__(self) -> NodeEngines:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def engine(self, node: NodeRef) -> NodeEngine:
        return self.engines[self.cluster.node(node).hostname]

    def start(self) -> NodeEngines:
        if not Path(NODE_SOCKET).exists():
            raise SimClusterError(
                f"{NODE_SOCKET} does not exist on the host: the node engines' sockets are mounted over it; start the host's dockerd"
            )
        try:
            for node in self.cluster.nodes:
                root = self.cluster.run_dir / "docker" / f"n{node.index + 1}"
                root.mkdir(parents=True)
                (root / "daemon.json").write_text("{}\n")
                self.engines[node.hostname] = NodeEngine(node, root)
            for eng in self.engines.values():
                self._start_engine(eng)
            for eng in self.engines.values():
                self._wait_engine(eng)
                self.mount_socket(eng.node)
            self._load_images()
        except BaseException:
            self.close()
            raise
        return self

    def _start_engine(self, eng: NodeEngine) -> None:
        anchor = self.cluster.anchor_pid(eng.node)
        hosts = self.cluster.layout.etc_netns_dir(eng.node) / "hosts"
        argv = [
            "nsenter",
            "-t",
            str(anchor),
            "-n",
            "-u",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _ENGINE_SHELL,
            str(hosts),
            *eng.dockerd_argv(),
        ]
        log.debug("simdocker: %s", shlex.join(argv))
        with open(eng.root / "dockerd.log", "ab") as out:
            eng.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)

    def _wait_engine(self, eng: NodeEngine) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not engine_answers(str(eng.socket)):
            if eng.proc is None or eng.proc.poll() is not None or time.monotonic() > deadline:
                tail = (eng.root / "dockerd.log").read_text(errors="replace")[-1500:]
                raise SimClusterError(f"dockerd on {eng.node.hostname} did not start: {tail}")
            time.sleep(0.2)

    def mount_socket(self, node: NodeRef) -> None:
        """Make the node's engine its default one (bind its socket over /run/docker.sock in the node)."""
        eng = self.engine(node)
        if not eng.socket_mounted:
            _run(
                [
                    "nsenter",
                    "-t",
                    str(self.cluster.anchor_pid(eng.node)),
                    "-m",
                    "--",
                    "mount",
                    "--bind",
                    str(eng.socket),
                    NODE_SOCKET,
                ]
            )
            eng.socket_mounted = True

    def unmount_socket(self, node: NodeRef) -> None:
        eng = self.engine(node)
        if eng.socket_mounted:
            eng.socket_mounted = False
            _run(
                ["nsenter", "-t", str(self.cluster.anchor_pid(eng.node)), "-m", "--", "umount", NODE_SOCKET],
                check=False,
            )

    def _load_images(self) -> None:
        if not self.images:
            return
        tar = self.cluster.run_dir / "docker" / "images.tar"
        _run(["docker", "save", "-o", str(tar), *self.images], timeout=300)

        def load(eng: NodeEngine) -> None:
            _run(eng.docker_argv(["load", "-i", str(tar)]), timeout=300)

        with ThreadPoolExecutor(len(self.engines)) as pool:
            list(pool.map(load, self.engines.values()))
        tar.unlink()

    # ---- faults -------------------------------------------------------------------------------

    def stop_engine(self, node: NodeRef) -> None:
        """Stop one node's engine (its socket in the node stays mounted but nothing answers)."""
        self._stop(self.engine(node))

    def start_engine(self, node: NodeRef) -> None:
        eng = self.engine(node)
        if eng.proc is not None and eng.proc.poll() is None:
            return
        self._start_engine(eng)
        self._wait_engine(eng)
        # The restarted engine made a new socket file; the node's bind mount still holds the old one.
        self.unmount_socket(eng.node)
        self.mount_socket(eng.node)

    def docker(
        self, node: NodeRef, args: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run the docker CLI against a node's engine from the host."""
        return _run(self.engine(node).docker_argv(args), check=check, timeout=timeout)

    # ---- InfiniBand stand-ins -----------------------------------------------------------------

    @contextlib.contextmanager
    def ib_standins(self, node: NodeRef, *, sysfs: bool = False) -> Iterator[None]:
        """A ``mknod`` uverbs device under /dev/infiniband, /etc/nccl.conf and /etc/nccl on one node only.

        The host's /dev and /etc stay untouched: an overlay over each, in the node's mount
        namespace (where the probe looks) and in its engine's (where ``--device`` and the binds
        are resolved), each with its own upper layer. ``sysfs`` also adds /sys/class/infiniband in
        the node's namespace only: enough for the probe, but a container cannot bind it (its /sys is
        a fresh sysfs without that directory), so use it only for runs that are refused.
        """
        n = self.cluster.node(node)
        eng = self.engine(n)
        namespaces = {"node": self.cluster.anchor_pid(n), "engine": eng.proc.pid if eng.proc else None}
        hosts = self.cluster.layout.etc_netns_dir(n) / "hosts"
        done: list[tuple[int, Path]] = []
        try:
            for label, pid in namespaces.items():
                if pid is None:
                    raise SimClusterError(f"{n.hostname}: the engine is not running")
                top = eng.root / f"ib-{label}"
                for sub in (
                    "etc/upper/nccl",
                    "etc/work",
                    "dev/upper/infiniband",
                    "dev/work",
                    "keep/pts",
                    "keep/shm",
                    "sys/upper/infiniband",
                    "sys/work",
                ):
                    (top / sub).mkdir(parents=True, exist_ok=True)
                (top / "etc/upper/nccl.conf").write_text("NCCL_DEBUG=INFO\n")
                _run(["mknod", str(top / "dev/upper/infiniband/uverbs0"), "c", "231", "192"])
                _run(
                    [
                        "nsenter",
                        "-t",
                        str(pid),
                        "-m",
                        "--",
                        "sh",
                        "-c",
                        _IB_MOUNT,
                        "sh",
                        str(top),
                        str(hosts),
                        "1" if sysfs and label == "node" else "",
                    ]
                )
                done.append((pid, top))
            yield
        finally:
            for pid, top in reversed(done):
                _run(["nsenter", "-t", str(pid), "-m", "--", "sh", "-c", _IB_UMOUNT], check=False)
                shutil.rmtree(top, ignore_errors=True)

    # ---- teardown -----------------------------------------------------------------------------

    def _stop(self, eng: NodeEngine) -> None:
        proc = eng.proc
        if proc is None:
            return
        if proc.poll() is None and engine_answers(str(eng.socket)):
            ids = _run(eng.docker_argv(["ps", "-aq"]), check=False).stdout.split()
            if ids:
                _run(eng.docker_argv(["rm", "--force", *ids]), check=False, timeout=120)
        if proc.poll() is None:
            # The engine is our child in a session of its own: its process group is sh -> dockerd (exec'd).
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        _kill_pids(_pids_mentioning(str(eng.exec_root)))
        eng.proc = None

    def close(self) -> list[str]:
        """Tear every engine down; returns what could not be removed (also logged). Idempotent."""
        if self._closed:
            return []
        self._closed = True
        errors: list[str] = []
        for eng in self.engines.values():
            for what, fn in (
                ("stop engine", lambda e=eng: self._stop(e)),
                ("unmount socket", lambda e=eng: self.unmount_socket(e.node)),
            ):
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - teardown does all it can
                    errors.append(f"{eng.node.hostname}: {what}: {exc}")
        if self.engines:
            shutil.rmtree(self.cluster.run_dir / "docker", ignore_errors=True)
            left = self.cluster.run_dir / "docker"
            if left.exists():
                errors.append(f"could not remove {left}")
        for e in errors:
            log.error("simdocker teardown: %s", e)
        return errors


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (an engine's unique exec-root: its containerd and shims)."""
    found = []
    needle = text.encode()
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if needle in (p / "cmdline").read_bytes():
                    found.append(int(p.name))
            except OSError:
                continue
    return found


def _kill_pids(pids: list[int], grace_s: float = 5) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not all(process_exited(p) for p in pids):
            time.sleep(0.05)
        if all(process_exited(p) for p in pids):
            return

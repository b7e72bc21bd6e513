"""A real Slurm cluster on one machine, for integration tests: Debian's slurmctld, slurmd and munge.

Built on the network namespaces of :class:`tests.infra.simcluster.SimCluster`: slurmctld runs on the
host (it listens on the run's bridge address), one slurmd per simulated node runs inside that
node's network namespace, with the node's hostname and a hosts file naming every node (torchrun's
c10d rendezvous resolves hostnames). Each cluster has its own munged (own key and socket), its
own ports (probed free), state and spool directories and ``slurm.conf``; clients reach it through
``SLURM_CONF`` (:meth:`SlurmCluster.env`).

Why slurmd is started with ``nsenter --net`` and not ``ip netns exec``: the latter remounts /sys,
which hides /sys/fs/cgroup, and slurmd then fails with "Unable to initialize cgroup plugin".
nsenter does not apply /etc/netns/NODE/hosts, so the hosts file is bind-mounted in a private
mount namespace (``unshare --mount``), where the hostname is set too (``--uts``).

Teardown (idempotent; also on a failed start): the daemons we started, by their recorded process
groups (and the kernel kills them if the test process dies first: parent-death signal), then the SimCluster (every process left in the nodes' namespaces: jobs included), then the
run's files. Nothing here touches a daemon it did not start.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.infra.simcluster import SHARED_CORES_ENV, SimCluster, SimClusterError, stop_process_group

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "srun", "scontrol", "sinfo")
PARTITION = "debug"
START_TIMEOUT_S = 90.0


def missing_slurm() -> str | None:
    """The first Slurm facility absent here, or None."""
    for tool in DAEMONS:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} not installed (Debian: slurmctld slurmd slurm-client munge)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def slurm_conf_text(
    *,
    cluster_name: str,
    ctld_host: str,
    ctld_addr: str,
    ctld_port: int,
    slurmd_port: int,
    state: Path,
    munge_socket: Path,
    nodes: list[tuple[str, str]],
    cpus: int,
) -> str:
    """Pure: a minimal slurm.conf (no accounting, no cgroups) for ``nodes`` [(name, address)]."""
    lines = [
        f"ClusterName={cluster_name}",
        f"SlurmctldHost={ctld_host}({ctld_addr})",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        # cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
        f"AuthInfo=socket={munge_socket},cred_expire=10",
        "CredType=cred/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2",
        "KillWait=5",
        "MinJobAge=600",
        "SlurmdTimeout=60",
        "SchedulerParameters=sched_interval=1",
        f"StateSaveLocation={state}/ctld",
        f"SlurmdSpoolDir={state}/spool/%n",
        f"SlurmctldPidFile={state}/slurmctld.pid",
        f"SlurmdPidFile={state}/slurmd.%n.pid",
        f"SlurmctldLogFile={state}/slurmctld.log",
        f"SlurmdLogFile={state}/slurmd.%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
    ]
    lines += [f"NodeName={name} NodeAddr={addr} CPUs={cpus} RealMemory=2000 State=UNKNOWN" for name, addr in nodes]
    names = ",".join(name for name, _ in nodes)
    lines.append(f"PartitionName={PARTITION} Nodes={names} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


class SlurmCluster:
    """N slurmd nodes and a slurmctld, each cluster fully private; see the module docstring."""

    def __init__(self, n_nodes: int = 2, *, cpus: int = 2) -> None:
        self.n_nodes = n_nodes
        self.cpus = cpus
        self.sim = SimCluster(n_nodes)
        self._procs: dict[str, subprocess.Popen[Any]] = {}
        self._closed = False

    # ---- paths -----------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.sim.run_dir / "slurm"

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.state_dir / "munge" / "munge.socket"

    @property
    def node_names(self) -> list[str]:
        return [n.hostname for n in self.sim.nodes]

    def env(self) -> dict[str, str]:
        """Environment for the Slurm clients (and corral) to talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf_path)}

    # ---- lifecycle -------------------------------------------------------------

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> SlurmCluster:
        try:
            self.sim.start()
            self.state_dir.mkdir()
            for sub in ("ctld", "spool", "munge"):
                (self.state_dir / sub).mkdir()
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf_path)])
            for node in self.sim.nodes:
                self._start_slurmd(node)
            self.wait_idle()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name in sorted(
            self._procs, key=lambda k: k.startswith("munged")
        ):  # munged last: slurmd talks to it on exit
            stop_process_group(self._procs[name], grace_s=5.0)
        self.sim.close(raise_on_error=False)

    # ---- daemons ---------------------------------------------------------------

    def _log(self, name: str):
        return open(self.state_dir / f"{name}.out", "ab")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[Any]:
        with self._log(name) as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self.env(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._procs[name] = proc
        return proc

    def _start_munge(self) -> None:
        mdir = self.state_dir / "munge"
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        mdir.chmod(0o700)
        # --force: munged refuses to run as root otherwise; this munged serves only this cluster.
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={mdir / 'munged.pid'}",
                f"--log-file={mdir / 'munged.log'}",
                f"--seed-file={mdir / 'seed'}",
            ],
        )
        _wait(
            lambda: self.munge_socket.exists(),
            20,
            lambda: f"munged did not start: {self.tail('munged.out')} {self.tail('munge/munged.log')}",
        )

    def _write_conf(self) -> None:
        layout = self.sim.layout
        nodes = [(n.hostname, n.addr) for n in self.sim.nodes]
        self.conf_path.write_text(
            slurm_conf_text(
                cluster_name=f"c{layout.prefix}",
                ctld_host=socket.gethostname(),
                ctld_addr=layout.bridge_addr,
                ctld_port=free_port(),
                slurmd_port=free_port(),
                state=self.state_dir,
                munge_socket=self.munge_socket,
                nodes=nodes,
                cpus=self.cpus,
            )
        )
        hosts = layout.hosts_file_text() + f"{layout.bridge_addr}\t{socket.gethostname()}\n"
        (self.state_dir / "hosts").write_text(hosts)

    def _start_slurmd(self, node: Any) -> None:
        script = 'hostname "$1" && mount --bind "$2" /etc/hosts && exec slurmd -D -N "$1" -f "$3"'
        argv = [
            "nsenter",
            f"--net=/run/netns/{node.netns}",
            "unshare",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            node.hostname,
            str(self.state_dir / "hosts"),
            str(self.conf_path),
        ]
        self._spawn(f"slurmd-{node.hostname}", argv)

    def tail(self, name: str, n: int = 1500) -> str:
        try:
            return (self.state_dir / name).read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    # ---- clients ---------------------------------------------------------------

    def client(self, argv: list[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        # From the cluster's own directory: a job submitted without --output writes slurm-<id>.out into
        # the submitter's directory, which must never be the checkout the tests run in.
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=timeout, cwd=self.state_dir)
        if check and proc.returncode != 0:
            raise SimClusterError(f"{shlex.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def node_states(self) -> dict[str, str]:
        out = self.client(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def wait_idle(self, timeout: float = START_TIMEOUT_S) -> None:
        def ready() -> bool:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SimClusterError(
                        f"{name} exited {proc.returncode}: {self.tail(name + '.out')} {self.tail('slurmctld.log')}"
                    )
            states = self.node_states()
            return len(states) == self.n_nodes and all(s in ("idle", "mix", "alloc") for s in states.values())

        _wait(ready, timeout, lambda: f"nodes not idle: {self.node_states()}; {self.tail('slurmctld.log')}")

    def cluster_config(self, *, workdir: str | Path, venv: str | Path | None, **slurm: Any) -> dict[str, Any]:
        """A corral cluster file for this Slurm cluster; storage on the run's shared directory."""
        storage = self.sim.shared_dir / "storage"
        return {
            "slurm": {"partition": PARTITION, **slurm},
            "workdir": str(workdir),
            "env": dict(SHARED_CORES_ENV),
            **({"venv": str(venv)} if venv else {}),
            "storage": {"runs": str(storage / "runs"), "checkpoints": str(storage / "checkpoints")},
        }


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, even by SIGKILL, so that no slurmctld or munged
    (they live in the host's namespaces, out of the simulated cluster's reach) outlives its run."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait(done: Any, timeout: float, why: Any) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SimClusterError(why())
        time.sleep(0.2)

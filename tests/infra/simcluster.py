"""A simulated multi-node cluster on one machine, for integration tests.

Why: corral launches torchrun in tmux over ssh on 2-16 VMs. To test that for
real (ssh, tmux, c10d rendezvous, node failures) without VMs, each "node" here
is a Linux network namespace with its own sshd, hostname and /tmp, wired to a
private bridge. Everything except /tmp is shared with the host, like an NFS
home: a venv or repository under /work is usable on every node.
``private_home=True`` gives each node its own copy-on-write view of the user's
home (an overlay over it; writes stay on that node), as separate machines have:
login scripts that take a lock under $HOME (pyenv's ``rehash`` in ``pyenv
init``) then no longer serialize logins to different nodes.

Layout of one run (prefix ``p`` is 6 random characters, e.g. ``s3fa9c``):

* bridge ``crl-p-br`` with address ``10.213.X.1/24`` (X random, not routed yet);
* node ``i`` (1-based): namespace ``corral-sim-p-n<i>``, hostname ``p-n<i>``,
  address ``10.213.X.<10+i>`` on ``eth0``, host-side veth ``crl-p-v<i>``;
* iptables ``FORWARD -i crl-p-br -o crl-p-br -j ACCEPT`` (commented with the
  run's tag): a running dockerd sets the FORWARD policy to DROP with
  br_netfilter loaded, which silently drops node-to-node traffic otherwise;
* ``/etc/netns/<namespace>/hosts`` lists every node, so names resolve inside
  the nodes (torchrun's c10d rendezvous needs it);
* run directory ``/var/tmp/corral-sim-p/`` (not /tmp: each node has its own
  /tmp, which hides the host's): host key, client key, ``ssh_config``,
  ``known_hosts``, sshd logs, ``cluster.yaml``, storage for runs/checkpoints.

How the host reaches the nodes: the node's hostnames resolve only inside the
nodes. From the host use the IP address (what :meth:`SimCluster.cluster_config`
puts in ``host``) or ``ssh -F <run dir>/ssh_config <hostname>`` (what
:meth:`SimCluster.ssh_argv` does). Nothing is added to the host's /etc/hosts,
so parallel runs cannot step on each other.

Each node keeps its hostname and /tmp in a long-lived "anchor" process; sshd is
started inside the anchor's namespaces, so restarting sshd keeps /tmp (and the
tmux servers whose sockets live there), like restarting sshd on a real VM.
Killing every process of a node (:meth:`SimCluster.kill_node_processes`) is a
crash; :meth:`SimCluster.start_sshd` afterwards is a reboot (fresh /tmp).

API in brief (nodes are given as SimNode, 0-based index, hostname or address):
``start``/``close`` (or ``with``), ``run(node, argv)`` over ssh, ``ssh_argv``,
``exec_in_ns``/``popen_in_ns`` (inside the node without ssh), ``stop_sshd``,
``start_sshd``, ``restart_sshd``, ``kill_node_processes``, ``disconnect``,
``reconnect``, ``reachable``, ``cluster_config``/``write_cluster_config``,
``shared_dir`` (scratch seen by host and nodes), ``leftovers``.

Teardown is idempotent and always attempted: context manager, pytest
finalizer, ``atexit``; and :func:`reap_stale_runs` removes what a run killed
with SIGKILL left behind (each run holds an flock on its run directory while
alive, so a lock that can be taken means the owner is gone).

Only the processes, namespaces, links, iptables rule and files a run created
are ever touched; traffic stays on the run's bridge.
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import json
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Union

log = logging.getLogger(__name__)

RUN_ROOT = Path("/var/tmp")
"""Parent of the run directories; must not be under /tmp (hidden on nodes)."""
RUN_DIR_GLOB = "corral-sim-*"
SUBNET_POOL = ipaddress.ip_network("10.213.0.0/16")
"""Each run takes one random /24 out of this pool that is not routed yet."""
SSH_PORT = 22
CONNECT_TIMEOUT_S = 5
"""ssh ConnectTimeout: the nodes are local, so anything slower is a dead node."""
MAX_NODES = 64
"""Node names and veth names stay within 15 characters up to 99 nodes; the /24 holds 243."""
SSHD = "/usr/sbin/sshd"
# Facilities the cluster needs; missing_facility() names the first one absent.
_REQUIRED_TOOLS = ("ip", "ssh", "ssh-keygen", "unshare", "nsenter", "sleep")


SHARED_CORES_ENV = {"OMP_NUM_THREADS": "1"}
"""The cluster files' environment: every simulated node sees all of the machine's cores (`nproc`: 2), so
corral gives a 1-process job as many OpenMP threads, and they spin-wait against the other nodes' ranks on
the same two cores. One thread each halved a demo rank's CPU (5.2 to 2.6 CPU-s, perf/process_census.py
over the killed-launcher launch test), as a user on shared or small machines would set it."""

STOCK_SHELL_INIT = {".bashrc": "/usr/share/base-files/dot.bashrc", ".profile": "/usr/share/base-files/dot.profile"}
"""What a node's root shell reads at login: Debian's stock files (base-files), as on a fresh VM, not this
machine's. Root's .bashrc here runs `pyenv init`: ~70 processes and 0.13 CPU-s for every ssh session,
101,415 bash processes in one run of the suite (perf/process_census.py), and a lock file in ~/.pyenv/shims
that stalled a private home's logins for 60 s."""


class SimClusterError(RuntimeError):
    """A command or step of the simulated cluster failed; says which and why."""


# --------------------------------------------------------------------------
# Pure layout: every name, address and path of one run, decided up front.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SimNode:
    """One node: what to call it, where it lives, how it is wired."""

    index: int
    """0-based position in the cluster."""
    hostname: str
    """Hostname inside the node (resolves only inside the nodes)."""
    netns: str
    """Name of the network namespace (``ip netns``)."""
    addr: str
    """IPv4 address of ``eth0`` inside the node; reachable from the host."""
    host_veth: str
    """Host-side end of the node's veth pair, a port of the bridge."""


@dataclass(frozen=True)
class SimLayout:
    """Names, addresses and paths of one run: pure data, no side effects.

    Kept separate from :class:`SimCluster` so it can be checked without root
    and written to ``state.json`` for :func:`reap_stale_runs`.
    """

    prefix: str
    subnet: str
    bridge: str
    bridge_addr: str
    run_dir: str
    nodes: tuple[SimNode, ...] = field(default_factory=tuple)

    @classmethod
    def plan(cls, n_nodes: int, prefix: str, subnet: str, run_root: Path = RUN_ROOT) -> SimLayout:
        if not 1 <= n_nodes <= MAX_NODES:
            raise ValueError(f"n_nodes must be between 1 and {MAX_NODES}, got {n_nodes}")
        net = ipaddress.ip_network(subnet)
        hosts = list(net.hosts())
        nodes = tuple(
            SimNode(
                index=i,
                hostname=f"{prefix}-n{i + 1}",
                netns=f"corral-sim-{prefix}-n{i + 1}",
                addr=str(hosts[10 + i]),  # node 1 is .11, node 2 .12, ...
                host_veth=f"crl-{prefix}-v{i + 1}",
            )
            for i in range(n_nodes)
        )
        return cls(
            prefix=prefix,
            subnet=str(net),
            bridge=f"crl-{prefix}-br",
            bridge_addr=str(hosts[0]),
            run_dir=str(run_root / f"corral-sim-{prefix}"),
            nodes=nodes,
        )

    @property
    def tag(self) -> str:
        """Label put on what the run creates (iptables comment, file headers)."""
        return f"corral-sim-{self.prefix}"

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def iptables_rule(self) -> list[str]:
        """The FORWARD rule (without -I/-D) letting bridged node traffic pass.

        Why: a running dockerd sets the FORWARD policy to DROP and loads
        br_netfilter, which silently drops node-to-node traffic on the bridge.
        """
        return ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-m", "comment", "--comment", self.tag, "-j", "ACCEPT"]

    def hosts_file_text(self) -> str:
        lines = [f"# {self.tag}", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{n.addr}\t{n.hostname}" for n in self.nodes]
        return "\n".join(lines) + "\n"

    def etc_netns_dir(self, node: SimNode) -> Path:
        return Path("/etc/netns") / node.netns

    def path(self, name: str) -> Path:
        return Path(self.run_dir) / name

    def ssh_config_text(self) -> str:
        """Client config: one alias per hostname, strict host keys, key only."""
        blocks = [f"# {self.tag}: generated by tests/infra/simcluster.py"]
        for n in self.nodes:
            blocks.append(f"Host {n.hostname}\n    HostName {n.addr}")
        patterns = " ".join([n.hostname for n in self.nodes] + [n.addr for n in self.nodes])
        options = "\n".join(f"    {k} {v}" for k, v in self.ssh_options().items())
        blocks.append(
            f"Host {patterns}\n    User root\n    Port {SSH_PORT}\n"
            f"    IdentityFile {self.path('id_ed25519')}\n"
            f"    ConnectTimeout {CONNECT_TIMEOUT_S}\n{options}"
        )
        return "\n\n".join(blocks) + "\n"

    def ssh_options(self) -> dict[str, str]:
        """``-o`` options a client needs (besides user, key and port)."""
        return {
            "UserKnownHostsFile": str(self.path("known_hosts")),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "IdentitiesOnly": "yes",
            "BatchMode": "yes",
            "LogLevel": "ERROR",
        }

    def sshd_config_text(self) -> str:
        """Server config shared by all nodes (ListenAddress goes on the argv).

        Our own file rather than /etc/ssh/sshd_config, so a change to the
        machine's sshd setup cannot change the tests. UsePAM no: no logind, no
        lastlog, faster logins; PidFile none: several sshds, no shared file;
        curve25519 key exchange: the post-quantum default (sntrup761) costs
        ~80 ms of CPU per connection on 2 cores, and tests open hundreds.
        """
        return (
            "\n".join(
                [
                    f"# {self.tag}",
                    f"Port {SSH_PORT}",
                    f"HostKey {self.path('ssh_host_ed25519_key')}",
                    f"AuthorizedKeysFile {self.path('authorized_keys')}",
                    "PidFile none",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "X11Forwarding no",
                    "MaxStartups 100:30:200",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
                ]
            )
            + "\n"
        )

    def cluster_config(self, *, workdir: str | Path | None = None, venv: str | Path | None = None) -> dict[str, Any]:
        """A corral cluster config (plain dict, launcher.config.ClusterConfig shape).

        ``host`` is the IP address, because the launcher's ssh runs on the host
        where the node names do not resolve; ``name`` is the node's hostname;
        ``addr`` is what the rendezvous uses. *workdir* defaults to this
        repository, *venv* to the running venv (None outside one).
        """
        if workdir is None:
            workdir = Path(__file__).resolve().parents[2]
        if venv is None and sys.prefix != sys.base_prefix:
            venv = sys.prefix
        return {
            "nodes": [{"host": n.addr, "name": n.hostname, "addr": n.addr, "gpus": 0} for n in self.nodes],
            "ssh": {
                "user": "root",
                "identity_file": str(self.path("id_ed25519")),
                "port": SSH_PORT,
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": self.ssh_options(),
            },
            "workdir": str(workdir),
            "venv": None if venv is None else str(venv),
            "env": dict(SHARED_CORES_ENV),
            "storage": {
                "runs": str(self.path("storage/runs")),
                "checkpoints": str(self.path("storage/checkpoints")),
            },
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SimLayout:
        data = json.loads(text)
        data["nodes"] = tuple(SimNode(**n) for n in data["nodes"])
        return cls(**data)


MOUNT_FLAGS = frozenset({"rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noatime", "strictatime", "seclabel"})


def cgroup_mounts_script(mounts: str | None = None) -> str:
    """Shell that mounts this host's cgroup hierarchies again inside a node's mount namespace.

    ``ip netns exec`` gives the node a fresh sysfs, without the mounts under /sys/fs/cgroup, and a real node
    has them: the node probe reads the CPU quota it runs under there. Mounting a v1 hierarchy with the same
    controllers attaches the existing one, so a fault's cgroup on the host is the node's too. Each mount may
    fail alone (a kernel that refuses leaves the node without that hierarchy, as before)."""
    cmds = []
    text = mounts if mounts is not None else Path("/proc/self/mounts").read_text()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not (fields[1] == "/sys/fs/cgroup" or fields[1].startswith("/sys/fs/cgroup/")):
            continue
        _, path, fstype, opts = fields[:4]
        where = shlex.quote(path)
        if fstype == "tmpfs":
            cmds.append(f"mount -t tmpfs -o mode=755 cgroup_root {where}")
        elif fstype == "cgroup":
            keep = ",".join(o for o in opts.split(",") if o not in MOUNT_FLAGS)
            cmds.append(f"mkdir -p {where} && mount -t cgroup -o {shlex.quote(keep)} cgroup {where}")
        elif fstype == "cgroup2":
            cmds.append(f"mkdir -p {where} && mount -t cgroup2 cgroup2 {where}")
    return "".join(f"{{ {c}; }} 2>/dev/null; " for c in cmds)


def new_prefix() -> str:
    """Short random run prefix: a letter then 5 hex digits (interface names <= 15)."""
    return "s" + secrets.token_hex(3)[:5]


# --------------------------------------------------------------------------
# The one choke point for external commands.
# --------------------------------------------------------------------------


def _cmd(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    log.debug("simcluster: %s", shlex.join(argv))
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    except FileNotFoundError as exc:
        raise SimClusterError(f"{argv[0]} not found: install it ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise SimClusterError(f"timed out after {timeout:g}s: {shlex.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise SimClusterError(
            f"{shlex.join(argv)} failed with exit status {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def _mac(addr: str) -> str:
    """A locally administered MAC address derived from an IPv4 address (unique per address)."""
    return "02:00:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(addr).packed)


def missing_facility() -> str | None:
    """Why a cluster cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, bridge, sshd)"
    if not Path(SSHD).is_file():
        return f"{SSHD} not found (apt-get install openssh-server)"
    for tool in _REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    try:
        proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns list` failed: {exc}"
    if proc.returncode != 0:
        return f"`ip netns list` failed: {proc.stderr.strip()}"
    if not os.access(RUN_ROOT, os.W_OK):
        return f"{RUN_ROOT} is not writable"
    return None


# --------------------------------------------------------------------------
# Host inspection helpers (read-only).
# --------------------------------------------------------------------------


def _used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network already routed or assigned on the host."""
    nets: list[ipaddress.IPv4Network] = []
    for route in json.loads(_cmd(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            nets.append(ipaddress.ip_network(dst, strict=False))
    for link in json.loads(_cmd(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def _pick_subnet(rng: random.Random) -> str:
    used = _used_ipv4_networks()
    candidates = list(SUBNET_POOL.subnets(new_prefix=24))
    rng.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise SimClusterError(f"no free /24 left in {SUBNET_POOL}")


def _link_exists(name: str) -> bool:
    return _cmd(["ip", "link", "show", "dev", name], check=False).returncode == 0


def _netns_exists(name: str) -> bool:
    listing = _cmd(["ip", "netns", "list"], check=False).stdout
    return any(line.split(" ", 1)[0] == name for line in listing.splitlines())


def _netns_pids(name: str) -> list[int]:
    """PIDs of processes in our namespace (zombies are not listed)."""
    if not _netns_exists(name):
        return []
    out = _cmd(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _iptables_available() -> bool:
    return shutil.which("iptables") is not None


def _tagged_forward_rules(layout: SimLayout) -> list[list[str]]:
    """Our FORWARD rules (those carrying the run's comment), as `-A FORWARD ...` argv."""
    if not _iptables_available():
        return []
    listing = _cmd(["iptables", "-w", "-S", "FORWARD"], check=False).stdout
    rules = [shlex.split(line) for line in listing.splitlines()]
    return [r for r in rules if "--comment" in r and r[r.index("--comment") + 1] == layout.tag]


def find_leftovers(layout: SimLayout) -> list[str]:
    """What of this run still exists on the host (empty when torn down)."""
    left = []
    for node in layout.nodes:
        if _netns_exists(node.netns):
            left.append(f"netns {node.netns}")
        if _link_exists(node.host_veth):
            left.append(f"link {node.host_veth}")
        if layout.etc_netns_dir(node).exists():
            left.append(f"dir {layout.etc_netns_dir(node)}")
    if _link_exists(layout.bridge):
        left.append(f"bridge {layout.bridge}")
    for rule in _tagged_forward_rules(layout):
        left.append(f"iptables rule {shlex.join(rule)}")
    if Path(layout.run_dir).exists():
        left.append(f"dir {layout.run_dir}")
    return left


# --------------------------------------------------------------------------
# Teardown, shared by SimCluster.close() and reap_stale_runs().
# --------------------------------------------------------------------------


def _kill_netns_processes(netns: str, grace_s: float = 2.0, reap: Iterable[subprocess.Popen[Any]] = ()) -> None:
    """SIGTERM, then SIGKILL, every process in *our* namespace until none is left."""
    reap = list(reap)
    signalled: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
        pids = _netns_pids(netns)
        if not pids:
            break
        signalled.update(pids)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if _wait_until(lambda: not _netns_pids(netns), grace_s, reap):
            break
    # A dying process leaves its namespaces before it has finished exiting (a big one, like a
    # tmux server, can take a moment under load): wait until each one signalled is gone or a zombie.
    _wait_until(lambda: all(process_exited(pid) for pid in signalled), grace_s, reap)
    left = _netns_pids(netns)
    if left:
        raise SimClusterError(f"processes {left} in {netns} survived SIGKILL")


def _wait_until(done: Callable[[], bool], timeout_s: float, reap: list[subprocess.Popen[Any]]) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        for p in reap:
            p.poll()  # reap our own children so they stop counting
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def process_exited(pid: int) -> bool:
    """The process is gone, or a zombie (dead; its parent has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def stop_process_group(proc: subprocess.Popen[Any], grace_s: float = 2.0) -> None:
    """Stop a process we started in its own session: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _destroy(layout: SimLayout, procs: Iterable[subprocess.Popen[Any]] = ()) -> list[str]:
    """Remove everything of *layout*; returns errors (empty when all went well)."""
    procs = list(procs)
    errors: list[str] = []

    def attempt(what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # keep going: teardown must do all it can
            errors.append(f"{what}: {exc}")

    for proc in procs:
        attempt(f"stop pid {proc.pid}", stop_process_group, proc)
    for node in layout.nodes:
        attempt(f"kill processes in {node.netns}", _kill_netns_processes, node.netns, 2.0, procs)
    for node in layout.nodes:
        # Deleting the host end removes the pair; a deleted namespace may linger
        # (orphaned sockets) and would keep the peer alive otherwise.
        if _link_exists(node.host_veth):
            attempt(f"delete {node.host_veth}", _cmd, ["ip", "link", "del", node.host_veth])
    if _link_exists(layout.bridge):
        attempt(f"delete {layout.bridge}", _cmd, ["ip", "link", "del", layout.bridge])
    for node in layout.nodes:
        if _netns_exists(node.netns):
            attempt(f"delete netns {node.netns}", _cmd, ["ip", "netns", "del", node.netns])
    for rule in _tagged_forward_rules(layout):  # ours, and any a test added with our tag
        attempt("delete iptables rule", _cmd, ["iptables", "-w", "-D", *rule[1:]])
    for node in layout.nodes:
        attempt(f"remove {layout.etc_netns_dir(node)}", shutil.rmtree, layout.etc_netns_dir(node), True)
    attempt(f"remove {layout.run_dir}", shutil.rmtree, layout.run_dir, True)
    errors += [f"left over: {x}" for x in find_leftovers(layout)]
    return errors


def reap_stale_runs(run_root: Path = RUN_ROOT, min_age_s: float = 300.0) -> list[str]:
    """Tear down runs whose owner process is gone (killed with SIGKILL, say).

    A live run holds an exclusive flock on ``<run dir>/owner.lock``; if we can
    take it, nobody owns the run any more. Returns the prefixes reaped.
    """
    reaped = []
    for run_dir in sorted(run_root.glob(RUN_DIR_GLOB)):
        if not run_dir.is_dir():
            continue
        try:
            fd = os.open(run_dir / "owner.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            state = run_dir / "state.json"
            if state.exists():
                layout = SimLayout.from_json(state.read_text())
                errors = _destroy(layout)
                if errors:
                    log.warning("reaping %s: %s", run_dir, "; ".join(errors))
                reaped.append(layout.prefix)
            elif time.time() - run_dir.stat().st_mtime > min_age_s:
                shutil.rmtree(run_dir, ignore_errors=True)  # died before planning
                reaped.append(run_dir.name)
        finally:
            os.close(fd)
    return reaped


# --------------------------------------------------------------------------
# The cluster.
# --------------------------------------------------------------------------

NodeRef = Union[SimNode, int, str]
"""A node: the SimNode, its 0-based index, its hostname or its address."""

_LIVE: set[SimCluster] = set()
"""Started, not yet closed clusters: the atexit safety net closes them."""


@atexit.register
def _close_live_clusters() -> None:
    for cluster in list(_LIVE):
        if cluster._owner_pid == os.getpid():  # not in a forked child
            cluster.close(raise_on_error=False)


class SimCluster:
    """N simulated nodes with sshd, on a private bridge; see the module docstring.

    Use as a context manager, or call :meth:`start` and (always) :meth:`close`::

        with SimCluster(3) as cluster:
            cluster.run(0, ["hostname"]).stdout
    """

    def __init__(
        self, n_nodes: int = 3, *, run_root: Path = RUN_ROOT, sshd_timeout_s: float = 10.0, private_home: bool = False
    ) -> None:
        if not 1 <= n_nodes <= MAX_NODES:
            raise ValueError(f"n_nodes must be between 1 and {MAX_NODES}, got {n_nodes}")
        self.n_nodes = n_nodes
        self.run_root = Path(run_root)
        self.sshd_timeout_s = sshd_timeout_s
        self.private_home = private_home
        self._layout: SimLayout | None = None
        self._prefix: str | None = None
        self._owner_lock: int | None = None
        self._anchors: dict[int, subprocess.Popen[str]] = {}
        self._sshds: dict[int, subprocess.Popen[bytes]] = {}
        self._spawned: list[subprocess.Popen[Any]] = []
        self._closed = False
        self._owner_pid = os.getpid()

    # ---- properties -------------------------------------------------------

    @property
    def layout(self) -> SimLayout:
        if self._layout is None:
            raise SimClusterError("cluster not started")
        return self._layout

    @property
    def nodes(self) -> tuple[SimNode, ...]:
        return self.layout.nodes

    @property
    def prefix(self) -> str:
        return self.layout.prefix

    @property
    def run_dir(self) -> Path:
        return Path(self.layout.run_dir)

    @property
    def shared_dir(self) -> Path:
        """Scratch directory seen by the host and every node (pytest's tmp_path,
        under /tmp, is not); removed on close()."""
        return self.layout.path("shared")

    @property
    def ssh_config_path(self) -> Path:
        return self.layout.path("ssh_config")

    @property
    def identity_file(self) -> Path:
        return self.layout.path("id_ed25519")

    @property
    def known_hosts_path(self) -> Path:
        return self.layout.path("known_hosts")

    def node(self, ref: NodeRef) -> SimNode:
        if isinstance(ref, SimNode):
            return ref
        for n in self.nodes:
            if ref in (n.index, n.hostname, n.addr):
                return n
        raise KeyError(f"no node {ref!r} in {[n.hostname for n in self.nodes]}")

    # ---- lifecycle ----------------------------------------------------------

    def __enter__(self) -> SimCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(raise_on_error=exc[0] is None)

    def start(self) -> SimCluster:
        """Bring every node up, ready for ssh. Tears down what it made on failure."""
        if self._layout is not None:
            raise SimClusterError("cluster already started")
        _LIVE.add(self)
        try:
            self._claim_run_dir()
            self._create_network()
            self._write_ssh_files()
            for node in self.nodes:
                self._start_anchor(node)
                self.start_sshd(node, wait=False)
            for node in self.nodes:
                self.wait_for_sshd(node)
        except BaseException:
            self.close(raise_on_error=False)
            raise
        log.info("simcluster %s up: %s", self.prefix, ", ".join(f"{n.hostname}={n.addr}" for n in self.nodes))
        return self

    def close(self, *, raise_on_error: bool = True) -> None:
        """Kill every process of the run, delete links, namespaces, rule, files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        errors: list[str] = []
        if self._layout is not None:
            procs = [*self._sshds.values(), *self._spawned, *self._anchors.values()]
            errors = _destroy(self._layout, procs)
        elif self._prefix is not None:  # failed before planning the network
            shutil.rmtree(self.run_root / f"corral-sim-{self._prefix}", ignore_errors=True)
        if self._owner_lock is not None:
            os.close(self._owner_lock)
            self._owner_lock = None
        if errors:
            msg = f"simcluster teardown incomplete: {'; '.join(errors)}"
            if raise_on_error:
                raise SimClusterError(msg)
            log.error(msg)

    def _claim_run_dir(self) -> None:
        """Pick a free prefix (mkdir is atomic) and hold its owner lock."""
        self.run_root.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            prefix = new_prefix()
            run_dir = self.run_root / f"corral-sim-{prefix}"
            try:
                run_dir.mkdir(mode=0o700)
            except FileExistsError:
                continue
            fd = os.open(run_dir / "owner.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks only while a reaper looks at it
            self._owner_lock = fd
            self._prefix = prefix
            return
        raise SimClusterError(f"could not find a free run directory under {self.run_root}")

    def _create_network(self) -> None:
        # One global lock so two runs cannot pick the same free subnet at once.
        lock_fd = os.open(self.run_root / "corral-sim.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            subnet = _pick_subnet(random.Random(secrets.randbits(64)))
            assert self._prefix is not None
            layout = SimLayout.plan(self.n_nodes, self._prefix, subnet, self.run_root)
            self._layout = layout
            layout.path("state.json").write_text(layout.to_json())  # before creating anything
            _cmd(["ip", "link", "add", layout.bridge, "address", _mac(layout.bridge_addr), "type", "bridge"])
            _cmd(["ip", "addr", "add", f"{layout.bridge_addr}/{layout.prefixlen}", "dev", layout.bridge])
            _cmd(["ip", "link", "set", layout.bridge, "up"])
        finally:
            os.close(lock_fd)
        if _iptables_available():
            _cmd(["iptables", "-w", "-I", *layout.iptables_rule()])
        for node in layout.nodes:
            etc = layout.etc_netns_dir(node)
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(layout.hosts_file_text())
            _cmd(["ip", "netns", "add", node.netns])
            _cmd(
                ["ip", "link", "add", node.host_veth, "type", "veth"]
                + ["peer", "name", "eth0", "address", _mac(node.addr), "netns", node.netns]
            )
            _cmd(["ip", "link", "set", node.host_veth, "master", layout.bridge])
            _cmd(["ip", "link", "set", node.host_veth, "up"])
            _cmd(["ip", "-n", node.netns, "link", "set", "lo", "up"])
            _cmd(["ip", "-n", node.netns, "addr", "add", f"{node.addr}/{layout.prefixlen}", "dev", "eth0"])
            _cmd(["ip", "-n", node.netns, "link", "set", "eth0", "up"])
        self._write_static_neighbours()

    def _write_static_neighbours(self) -> None:
        """Permanent ARP entries for every address on the bridge, in every node and the host.

        Why: the kernel's ARP table is one table for all network namespaces,
        and its limit (net.ipv4.neigh.default.gc_thresh3, 1024 by default)
        counts the learned entries of every node together. 32 nodes talking
        all to all (gloo's full mesh) learn 32 x 32 entries and overflow it:
        connects then fail with "No route to host" or time out, which real
        machines, each with its own table, never see. Permanent entries are
        exempt from that limit and vanish with the namespace and the bridge.
        """
        layout = self.layout
        addrs = [layout.bridge_addr, *(n.addr for n in layout.nodes)]
        for node in layout.nodes:
            lines = [f"neigh replace {a} lladdr {_mac(a)} dev eth0 nud permanent" for a in addrs if a != node.addr]
            _cmd(["ip", "-n", node.netns, "-batch", "-"], input="\n".join(lines) + "\n")
        lines = [
            f"neigh replace {n.addr} lladdr {_mac(n.addr)} dev {layout.bridge} nud permanent" for n in layout.nodes
        ]
        _cmd(["ip", "-batch", "-"], input="\n".join(lines) + "\n")

    def _write_ssh_files(self) -> None:
        layout = self.layout
        for key in ("ssh_host_ed25519_key", "id_ed25519"):
            _cmd(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"{layout.tag}-{key}",
                    "-f",
                    str(layout.path(key)),
                ]
            )
        host_pub = layout.path("ssh_host_ed25519_key.pub").read_text().split()[:2]
        layout.path("known_hosts").write_text(
            "".join(f"{n.hostname},{n.addr} {' '.join(host_pub)}\n" for n in self.nodes)
        )
        shutil.copyfile(layout.path("id_ed25519.pub"), layout.path("authorized_keys"))
        layout.path("sshd_config").write_text(layout.sshd_config_text())
        layout.path("ssh_config").write_text(layout.ssh_config_text())
        for sub in ("logs", "shared", "storage/runs", "storage/checkpoints"):
            layout.path(sub).mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privsep dir

    # ---- per-node processes -------------------------------------------------

    def _log_file(self, node: SimNode, what: str) -> IO[bytes]:
        return open(self.layout.path(f"logs/{node.hostname}.{what}.log"), "ab")

    def _start_anchor(self, node: SimNode) -> None:
        """A process that holds the node's hostname and private /tmp (and home, if asked)."""
        # the shell init files are bound after the overlay, which would hide them
        stock = " ".join(
            f'&& {{ [ ! -e "$3/{name}" ] || [ ! -e {src} ] || mount --bind -o ro {src} "$3/{name}"; }}'
            for name, src in STOCK_SHELL_INIT.items()
        )
        script = (
            cgroup_mounts_script() + 'hostname "$1" && mount -t tmpfs -o mode=1777 tmpfs /tmp '
            '&& { [ -z "$2" ] || mount -t overlay overlay -o "lowerdir=$3,upperdir=$2/upper,workdir=$2/work" "$3"; } '
            f"{stock} && echo ready && exec sleep infinity"
        )
        home_layer = ""
        if self.private_home:
            layer = self.layout.path(f"home/{node.hostname}")
            for sub in ("upper", "work"):
                (layer / sub).mkdir(parents=True, exist_ok=True)
            home_layer = str(layer)
        argv = [
            "ip",
            "netns",
            "exec",
            node.netns,
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            node.hostname,
            home_layer,
            os.path.expanduser("~"),
        ]
        log.debug("simcluster: %s", shlex.join(argv))
        with self._log_file(node, "anchor") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
            )
        self._anchors[node.index] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()  # returns "" if the shell failed and exited
        proc.stdout.close()
        if line.strip() != "ready":
            raise SimClusterError(f"{node.hostname}: could not set up hostname and /tmp: {self._tail(node, 'anchor')}")

    def _anchor_alive(self, node: SimNode) -> bool:
        proc = self._anchors.get(node.index)
        return proc is not None and proc.poll() is None

    def anchor_pid(self, node: NodeRef) -> int:
        """PID of the process holding the node's namespaces (network, hostname, mounts), for nsenter."""
        n = self.node(node)
        if not self._anchor_alive(n):
            raise SimClusterError(f"{n.hostname} is down (its processes were killed); start_sshd() boots it")
        return self._anchors[n.index].pid

    def enter_argv(self, node: NodeRef, argv: Sequence[str], *, cwd: str | None = None) -> list[str]:
        """argv running *argv* inside the node: its network, hostname and /tmp.

        *cwd* defaults to / (the host's cwd may be under /tmp, which the node hides).
        """
        n = self.node(node)
        if not self._anchor_alive(n):
            raise SimClusterError(f"{n.hostname} is down (its processes were killed); start_sshd() boots it")
        return ["nsenter", "-t", str(self._anchors[n.index].pid), "-m", "-u", "-n", f"--wd={cwd or '/'}", "--", *argv]

    def sshd_running(self, node: NodeRef) -> bool:
        proc = self._sshds.get(self.node(node).index)
        return proc is not None and proc.poll() is None

    def start_sshd(self, node: NodeRef, *, wait: bool = True) -> None:
        """Start the node's sshd (no-op if running). Boots the node if it was killed."""
        n = self.node(node)
        if self.sshd_running(n):
            return
        if not self._anchor_alive(n):
            self._start_anchor(n)  # a "reboot": fresh /tmp
        argv = self.enter_argv(
            n,
            [SSHD, "-D", "-e", "-f", str(self.layout.path("sshd_config")), "-o", f"ListenAddress={n.addr}:{SSH_PORT}"],
            cwd="/",
        )
        log.debug("simcluster: %s", shlex.join(argv))
        with self._log_file(n, "sshd") as err:
            self._sshds[n.index] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
            )
        if wait:
            self.wait_for_sshd(n)

    def stop_sshd(self, node: NodeRef) -> None:
        """Stop the node's sshd; new ssh connections fail, open sessions survive."""
        proc = self._sshds.pop(self.node(node).index, None)
        if proc is not None:
            stop_process_group(proc)

    def restart_sshd(self, node: NodeRef) -> None:
        self.stop_sshd(node)
        self.start_sshd(node)

    def wait_for_sshd(self, node: NodeRef, timeout_s: float | None = None) -> None:
        """Poll until the node's sshd sends its banner, or raise with its log."""
        n = self.node(node)
        deadline = time.monotonic() + (timeout_s or self.sshd_timeout_s)
        while True:
            if not self.sshd_running(n):
                raise SimClusterError(f"sshd on {n.hostname} exited: {self._tail(n, 'sshd')}")
            if self._ssh_banner(n.addr):
                return
            if time.monotonic() > deadline:
                raise SimClusterError(f"sshd on {n.hostname} ({n.addr}) not ready: {self._tail(n, 'sshd')}")
            time.sleep(0.02)

    @staticmethod
    def _ssh_banner(addr: str, timeout_s: float = 1.0) -> bool:
        try:
            with socket.create_connection((addr, SSH_PORT), timeout=timeout_s) as s:
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def reachable(self, node: NodeRef, timeout_s: float = 1.0) -> bool:
        """Whether the node's sshd answers from the host within the timeout."""
        return self._ssh_banner(self.node(node).addr, timeout_s)

    def _tail(self, node: SimNode, what: str, n: int = 2000) -> str:
        try:
            text = self.layout.path(f"logs/{node.hostname}.{what}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-n:].strip() or "(empty log)"

    def kill_node_processes(self, node: NodeRef) -> None:
        """Kill every process in the node's namespace (sshd, tmux servers, jobs): a crash.

        Scoped to our own namespace, so it cannot hit anything else.
        """
        n = self.node(node)
        procs = [p for p in (self._sshds.pop(n.index, None), self._anchors.get(n.index)) if p]
        _kill_netns_processes(n.netns, reap=[*procs, *self._spawned])
        for p in procs:
            p.wait(timeout=5)

    def popen_in_ns(self, node: NodeRef, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a background process inside the node; it is killed on close()."""
        cwd = kwargs.pop("cwd", None)
        proc = subprocess.Popen(self.enter_argv(node, argv, cwd=cwd), start_new_session=True, **kwargs)
        self._spawned.append(proc)
        return proc

    def exec_in_ns(
        self,
        node: NodeRef,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = False,
        input: str | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run *argv* inside the node without ssh (its network, hostname, /tmp)."""
        return _cmd(self.enter_argv(node, argv, cwd=cwd), check=check, timeout=timeout, input=input)

    # ---- network faults -----------------------------------------------------

    def disconnect(self, node: NodeRef) -> None:
        """Cut the node off the bridge: its packets vanish, like a pulled cable."""
        _cmd(["ip", "link", "set", self.node(node).host_veth, "nomaster"])

    def reconnect(self, node: NodeRef) -> None:
        _cmd(["ip", "link", "set", self.node(node).host_veth, "master", self.layout.bridge])

    # ---- ssh ------------------------------------------------------------------

    def ssh_argv(
        self, node: NodeRef, command: Sequence[str] | str, *, options: dict[str, str] | None = None
    ) -> list[str]:
        """argv for the system ssh client running *command* on the node.

        A sequence is quoted with shlex.join (the remote shell sees exactly
        those words); a string is passed as a remote shell command as is.
        """
        n = self.node(node)
        remote = command if isinstance(command, str) else shlex.join(command)
        extra = [a for k, v in (options or {}).items() for a in ("-o", f"{k}={v}")]
        return ["ssh", "-F", str(self.ssh_config_path), *extra, n.hostname, remote]

    def run(
        self,
        node: NodeRef,
        command: Sequence[str] | str,
        *,
        timeout: float = 30.0,
        check: bool = False,
        input: str | None = None,
        options: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run *command* on the node over ssh; returns the CompletedProcess (text)."""
        argv = self.ssh_argv(node, command, options=options)
        log.debug("simcluster: %s", shlex.join(argv))
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, input=input if input is not None else ""
            )
        except subprocess.TimeoutExpired as exc:
            raise SimClusterError(f"timed out after {timeout:g}s: {shlex.join(argv)}") from exc
        if check and proc.returncode != 0:
            raise SimClusterError(
                f"on {self.node(node).hostname}: {shlex.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    # ---- corral configuration ---------------------------------------------------

    def cluster_config(self, *, workdir: str | Path | None = None, venv: str | Path | None = None) -> dict[str, Any]:
        """A corral cluster config for these nodes; see :meth:`SimLayout.cluster_config`."""
        return self.layout.cluster_config(workdir=workdir, venv=venv)

    def write_cluster_config(self, path: str | Path | None = None, **kwargs: Any) -> Path:
        """Write :meth:`cluster_config` as YAML (default ``<run dir>/cluster.yaml``)."""
        target = Path(path) if path is not None else self.layout.path("cluster.yaml")
        config = self.cluster_config(**kwargs)
        try:
            import yaml

            text = yaml.safe_dump(config, sort_keys=False)
        except ImportError:  # JSON is valid YAML
            text = json.dumps(config, indent=2) + "\n"
        target.write_text(text)
        return target

    def leftovers(self) -> list[str]:
        """What of this run still exists on the host (empty after close())."""
        return find_leftovers(self.layout) if self._layout is not None else []

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("up" if self._layout else "new")
        name = self._layout.prefix if self._layout else "?"
        return f"<SimCluster {name} {self.n_nodes} nodes {state}>"

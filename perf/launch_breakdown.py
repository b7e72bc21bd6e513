"""Where a launch's time goes: corral vs the plain ssh+tmux loop of ``launch_latency``.

Three measurements on the simulated cluster (root, from the repository root), each from a quiet
machine, the two (or three) kinds interleaved with alternating order:

* ``cpu``: CPU seconds per command name (BSD process accounting, ``acct(2)``: one record per
  exited process) from the command's start until the job has fully exited. Answers "does corral
  do more work?".
* ``idle``: the machine's idle core-seconds between the command's start and the moment every rank
  is ready (``/proc/stat`` sampled every 20 ms), in all and in the first 2 s, and the busy fraction
  per 0.5 s. Answers "when are the cores left unused?".
* ``barrier``: the plain loop, the same torchrun started after a barrier (connect to every node in
  parallel, then start every node in parallel: what any preflight-then-start launcher does), and
  corral. Answers "what does the barrier itself cost?".
* ``store`` (no cluster): 7 TCPStore clients start connecting, the server comes up ``--delays``
  seconds later; how late the clients connect after it is up. That is what a per-attempt store
  (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, served by rank 0's worker once it has imported torch)
  costs the other ranks: their connect retries back off exponentially.

    python -m perf.launch_breakdown cpu --nodes 8 --reps 2
    python -m perf.launch_breakdown idle --nodes 8 --reps 3
    python -m perf.launch_breakdown barrier --nodes 8 --reps 6
    python -m perf.launch_breakdown store --delays 0.5 1 2 3 5
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from perf import launch_latency as lat

ACCT_RECORD = struct.Struct("<BBHIIIIIIfHHHHHHHH16s")
"""``struct acct_v3`` (linux/acct.h): flag, version, tty, exitcode, uid, gid, pid, ppid, btime,
etime, then utime, stime, mem, io, rw, minflt, majflt, swaps as ``comp_t``, then comm."""
ACCT_HZ = 100
"""AHZ: the unit of ``comp_t`` times."""


def comp_t(value: int) -> int:
    """Decode a ``comp_t``: 13-bit mantissa, 3-bit base-8 exponent."""
    return (value & 0x1FFF) << (3 * (value >> 13))


@dataclass(frozen=True)
class AcctRecord:
    comm: str
    pid: int
    ppid: int
    cpu_s: float


def parse_acct(data: bytes) -> list[AcctRecord]:
    """Records of an accounting file written in the v3 format (version byte 3)."""
    out = []
    for off in range(0, len(data) - ACCT_RECORD.size + 1, ACCT_RECORD.size):
        f = ACCT_RECORD.unpack_from(data, off)
        if f[1] != 3:
            raise ValueError(f"accounting record version {f[1]} at byte {off}; expected 3 (acct_v3)")
        cpu = (comp_t(f[10]) + comp_t(f[11])) / ACCT_HZ
        out.append(AcctRecord(f[18].split(b"\0", 1)[0].decode(errors="replace"), f[6], f[7], cpu))
    return out


class ProcessAccounting:
    """``acct(2)`` on for the duration of a ``with`` block (whole machine; root only)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd, self.path = tempfile.mkstemp(prefix="corral-acct-")
        os.close(fd)

    def __enter__(self) -> ProcessAccounting:
        if self._libc.acct(self.path.encode()) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"acct({self.path}): {os.strerror(err)} (needs root and CONFIG_BSD_PROCESS_ACCT)")
        return self

    def __exit__(self, *exc: object) -> None:
        self._libc.acct(None)

    def records(self) -> list[AcctRecord]:
        try:
            return parse_acct(Path(self.path).read_bytes())
        finally:
            os.unlink(self.path)


class CpuSampler:
    """The machine's busy CPU-seconds (``/proc/stat``) every ``interval`` s, in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), lat.busy_cpu_seconds()))
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def busy_between(self, t0: float, t1: float) -> tuple[float, float]:
        """(busy CPU-s, wall s) between the first and last samples inside [t0, t1]."""
        pts = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(pts) < 2:
            return 0.0, 0.0
        return pts[-1][1] - pts[0][1], pts[-1][0] - pts[0][0]

    def idle_core_s(self, t0: float, t1: float, cores: int) -> float:
        busy, wall = self.busy_between(t0, t1)
        return cores * wall - busy

    def profile(self, t0: float, t1: float, step: float, cores: int) -> list[float]:
        out, t = [], t0
        while t < t1:
            busy, wall = self.busy_between(t, t + step)
            out.append(round(busy / (wall * cores), 2) if wall else 0.0)
            t += step
        return out


def run_barrier(sim, n: int, work: Path, venv: str, port: int) -> float:
    """The baseline's torchrun, started after a barrier: ssh to every node in parallel (each
    connection kept as a control master), then ``tmux new-session`` on every node in parallel."""
    name = f"bar{n}-{uuid.uuid4().hex[:6]}"
    out = work / name
    out.mkdir()
    commands = lat.baseline_tmux_commands(sim, n, name, out, venv, port)
    master = ["-o", "ControlMaster=auto", "-o", f"ControlPath={work}/cm-{name}-%h", "-o", "ControlPersist=60"]
    nodes = sim.nodes[:n]

    def ssh(node, command: list[str], *extra: str) -> list[str]:
        argv = sim.ssh_argv(node, command)
        return [argv[0], *master, *extra, *argv[1:]]

    t0 = time.time()
    for p in [subprocess.Popen(ssh(node, ["true"])) for node in nodes]:
        p.wait()
    for p in [subprocess.Popen(ssh(node, command)) for node, command in zip(nodes, commands)]:
        p.wait()
    ready = lat.wait_baseline(out, n)
    for node in nodes:
        subprocess.run(ssh(node, [], "-O", "exit"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ready - t0


def store_connect_lag(delay_s: float, clients: int = 7, port: int = 0) -> float:
    """Seconds between a TCPStore server coming up (``delay_s`` after its clients started
    connecting) and the last client connected. Loopback only."""
    import datetime
    import socket

    from torch.distributed import TCPStore

    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    timeout = datetime.timedelta(seconds=60)
    done: list[float] = []

    def client() -> None:
        TCPStore("127.0.0.1", port, clients + 1, False, timeout=timeout)
        done.append(time.monotonic())

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(delay_s)
    up = time.monotonic()
    server = TCPStore("127.0.0.1", port, clients + 1, True, timeout=timeout, multi_tenant=True)
    for t in threads:
        t.join()
    del server
    return max(done) - up


KINDS = {
    "baseline": lambda sim, n, work, venv, port: lat.run_baseline(sim, n, work, venv, port),
    "barrier": run_barrier,
    "corral": lambda sim, n, work, venv, port: lat.run_corral(sim, n, work, venv),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["cpu", "idle", "barrier", "store"])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--shared-home", action="store_true", help="all simulated nodes share the host's home")
    parser.add_argument(
        "--delays", type=float, nargs="+", default=[0.5, 1, 2, 3, 5], help="store: server start delays (s)"
    )
    args = parser.parse_args(argv)
    if args.what == "store":
        for d in args.delays:
            print(
                f"server up {d:g} s after the clients: last client connected {store_connect_lag(d):.2f} s later",
                flush=True,
            )
        return 0
    from tests.infra.simcluster import SimCluster

    kinds = ["baseline", "barrier", "corral"] if args.what == "barrier" else ["baseline", "corral"]
    cores = os.cpu_count() or 1
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, collections.Counter] = {k: collections.Counter() for k in kinds}
    idle: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    n, venv = args.nodes, sys.prefix
    with SimCluster(n, private_home=not args.shared_home) as sim, CpuSampler() as sampler:
        work = Path(sim.run_dir) / "breakdown"
        work.mkdir()
        port = 29650
        for rep in range(args.reps):
            for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                lat.wait_quiet()
                port += 1
                t0 = time.time()
                if args.what == "cpu":
                    with ProcessAccounting() as acct:
                        wall = KINDS[kind](sim, n, work, venv, port)
                        time.sleep(1.0)  # the last records of the job's teardown
                    for r in acct.records():
                        cpu[kind][r.comm] += r.cpu_s
                else:
                    wall = KINDS[kind](sim, n, work, venv, port)
                walls[kind].append(wall)
                line = f"{kind:8s} {wall:6.2f} s"
                if args.what == "idle":
                    ready = t0 + wall
                    idle[kind].append((sampler.idle_core_s(t0, ready, cores), sampler.idle_core_s(t0, t0 + 2.0, cores)))
                    line += (
                        f"  idle {idle[kind][-1][0]:.2f} core-s (first 2 s: {idle[kind][-1][1]:.2f})"
                        f"  busy/0.5 s {sampler.profile(t0, ready + 0.5, 0.5, cores)}"
                    )
                print(line, flush=True)
    print()
    for kind in kinds:
        print(
            f"{kind:8s} wall median {statistics.median(walls[kind]):.2f} s, mean {statistics.mean(walls[kind]):.2f} s"
        )
        if args.what == "idle":
            print(
                f"{'':8s} idle median {statistics.median(x[0] for x in idle[kind]):.2f} core-s, "
                f"first 2 s {statistics.median(x[1] for x in idle[kind]):.2f} core-s"
            )
    if args.what == "cpu":
        print("\nCPU-s per repetition, by command:")
        for kind in kinds:
            print(f"  {kind}: {sum(cpu[kind].values()) / args.reps:.2f} in all")
        names = sorted(set().union(*cpu.values()), key=lambda c: -sum(cpu[k][c] for k in kinds))
        for name in names:
            vals = "  ".join(f"{k} {cpu[k][name] / args.reps:6.2f}" for k in kinds)
            if any(cpu[k][name] >= 0.01 for k in kinds):
                print(f"  {name:16s} {vals}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the watchdog reads about its node's workers from ``/proc`` (standard library only).

A worker is a process whose environment carries the run's id and the node's name
(``CORRAL_RUN_ID``, ``CORRAL_NODE``; torchrun starts each worker in its own session, so the
wrapper's process group does not hold them) and a ``RANK``. Reading every process's
environment is the expensive part, so ``Workers`` does it only when a known worker is gone or
none is known, and otherwise reads one ``stat`` file per worker.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    pid: int
    rank: int | None
    """``RANK`` from its environment (None: torchrun itself, or another process of the job)."""
    local_rank: int


def read_stat(pid: int) -> tuple[str, float] | None:
    """``(state letter, start time as seconds since boot)``, or None for a process that is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[0], int(fields[19]) / CLK_TCK


def boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return time.time() - float(open("/proc/uptime").read().split()[0])


def _environ(pid: int) -> dict[bytes, bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k] = v
    return out


def job_processes(run_id: str, node: str) -> list[Proc]:
    """Every process of this run on this node (torchrun, workers), found by the environment marker."""
    me = os.getpid()
    want_id, want_node = run_id.encode(), node.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        env = _environ(int(entry))
        if env.get(b"CORRAL_RUN_ID") != want_id or env.get(b"CORRAL_NODE") != want_node:
            continue
        rank = env.get(b"RANK")
        found.append(
            Proc(
                int(entry),
                int(rank) if rank and rank.isdigit() else None,
                int(env.get(b"LOCAL_RANK", b"0") or 0) if rank else 0,
            )
        )
    return found


class Workers:
    """The node's current workers, rescanned only when one of them is gone (a restart, an exit)."""

    def __init__(self, run_id: str, node: str) -> None:
        self.run_id, self.node = run_id, node
        self.known: list[Proc] = []

    def current(self) -> list[tuple[Proc, str, float]]:
        """``(process, state, start seconds since boot)`` per worker; ``gone`` for one that vanished
        since the last scan (reported once, then rescanned)."""
        out = []
        stale = not self.known
        for p in self.known:
            st = read_stat(p.pid)
            if st is None:  # a zombie is kept (and reported as one) until its parent reaps it
                stale = True
            out.append((p, st[0] if st else "gone", st[1] if st else 0.0))
        if stale:
            self.known = [p for p in job_processes(self.run_id, self.node) if p.rank is not None]
            out = []
            for p in self.known:
                st = read_stat(p.pid)
                out.append((p, st[0] if st else "gone", st[1] if st else 0.0))
        return out


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def end_processes(pids: list[int], grace_s: float) -> list[int]:
    """SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then SIGKILL what is left after
    ``grace_s``; returns the pids that needed SIGKILL."""
    signal_pids(pids, signal.SIGCONT)
    signal_pids(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if (read_stat(p) or ("gone",))[0] not in ("gone", "Z", "X")]
    signal_pids(alive, signal.SIGKILL)
    return alive


__all__ = ["Proc", "Workers", "boot_time", "end_processes", "job_processes", "read_stat", "signal_pids"]

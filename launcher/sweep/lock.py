"""One controller per sweep: an ``O_EXCL`` lock file with owner, host and heartbeat, no symlinks.

Optuna's journal lock uses symlinks, which the target cloud's shared drives refuse; this one
needs only ``open(O_CREAT | O_EXCL)``, ``rename`` and ``unlink``. The owner rewrites its
heartbeat every few seconds (write to a private temporary file, then rename over the lock).

A lock is stale when its owner is gone: on the same host, its pid no longer exists; from
another host (where the pid means nothing), its heartbeat is older than ``stale_after``.
Breaking a stale lock is itself serialised by a second O_EXCL file (``lock.break``) so two
processes that both see the stale lock cannot both end up holding a new one.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from launcher.errors import UserError

STALE_AFTER = 60.0
"""Seconds without a heartbeat after which a lock held from another host is stale."""
HEARTBEAT_EVERY = 5.0
BREAK_STALE_AFTER = 30.0
"""A ``lock.break`` file older than this was left by a process that died while breaking."""


@dataclass
class LockInfo:
    """What a lock file says about its holder."""

    pid: int
    host: str
    token: str
    heartbeat: float
    pgid: Optional[int] = None
    started: float = field(default_factory=time.time)
    session: Optional[str] = None
    """The tmux session the controller runs in, so `sweep stop` can end it."""

    def age(self, now: Optional[float] = None) -> float:
        return (now if now is not None else time.time()) - self.heartbeat

    def describe(self, now: Optional[float] = None) -> str:
        return f"controller pid {self.pid} on {self.host}, last heartbeat {self.age(now):.0f} s ago"


class LockHeld(UserError):
    """Another live controller holds the sweep."""

    def __init__(self, sweep: str, holder: LockInfo) -> None:
        self.holder = holder
        super().__init__(
            f"sweep {sweep!r} is already running ({holder.describe()})",
            hint=f"watch it with `corral sweep status {sweep}`, or end it with `corral sweep stop {sweep}`",
        )


class LockLost(RuntimeError):
    """The lock file no longer names this holder (another process broke it): stop writing the journal."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(path: Path) -> Optional[LockInfo]:
    """The holder, or None when there is no lock; an unreadable lock (being written) reads as a fresh unknown holder."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return LockInfo(**{k: data[k] for k in data if k in LockInfo.__dataclass_fields__})
    except (json.JSONDecodeError, TypeError, KeyError):
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        return LockInfo(pid=-1, host="?", token="?", heartbeat=mtime)


def is_stale(
    info: LockInfo, *, now: Optional[float] = None, stale_after: float = STALE_AFTER, host: Optional[str] = None
) -> bool:
    """Pure: is this holder gone? Same host: its pid is dead. Other host: its heartbeat is too old."""
    here = host if host is not None else socket.gethostname()
    if info.host == here and info.pid > 0:
        return not pid_alive(info.pid)
    return info.age(now) > stale_after


class SweepLock:
    """Acquire/heartbeat/release the lock file of one sweep."""

    def __init__(
        self,
        path: str | Path,
        sweep: str,
        *,
        stale_after: float = STALE_AFTER,
        session: Optional[str] = None,
        token: Optional[str] = None,
    ) -> None:
        self.path = Path(path)
        self.sweep = sweep
        self.stale_after = stale_after
        self.info = LockInfo(
            pid=os.getpid(),
            host=socket.gethostname(),
            token=token or uuid.uuid4().hex,
            heartbeat=time.time(),
            pgid=os.getpgrp(),
            session=session,
        )
        self.held = False

    def acquire(self) -> None:
        """Take the lock, breaking it if its holder is gone; raise LockHeld if a live controller has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._try_create():
                self.held = True
                return
            holder = read_lock(self.path)
            if holder is None:
                continue  # released between our create and our read
            if not is_stale(holder, stale_after=self.stale_after):
                raise LockHeld(self.sweep, holder)
            self._break(holder)
        holder = read_lock(self.path)
        raise LockHeld(self.sweep, holder or LockInfo(pid=-1, host="?", token="?", heartbeat=time.time()))

    def _payload(self) -> bytes:
        return json.dumps(asdict(self.info)).encode()

    def _try_create(self) -> bool:
        self.info.heartbeat = time.time()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self._payload())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _break(self, stale: LockInfo) -> None:
        guard = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > BREAK_STALE_AFTER:
                    guard.unlink()
            except FileNotFoundError:
                pass
            time.sleep(0.1)
            return
        try:
            os.close(fd)
            current = read_lock(self.path)
            # Only remove the very lock we judged stale, never one a faster process has just created.
            if current is not None and current.token == stale.token and current.pid == stale.pid:
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    def heartbeat(self) -> None:
        """Refresh the heartbeat; raise LockLost if someone else now holds the lock."""
        current = read_lock(self.path)
        if current is None or current.token != self.info.token:
            self.held = False
            raise LockLost(f"the lock {self.path} was taken over ({current.describe() if current else 'removed'})")
        self.info.heartbeat = time.time()
        tmp = self.path.with_name(f"{self.path.name}.{self.info.token}.tmp")
        tmp.write_bytes(self._payload())
        os.replace(tmp, self.path)

    def release(self) -> None:
        if not self.held:
            return
        current = read_lock(self.path)
        if current is not None and current.token == self.info.token:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

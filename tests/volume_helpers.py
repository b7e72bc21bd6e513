"""Helpers for the volume benchmark's real-disk tests: unique directories, the worker as a process."""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKER_MODULE = "benchmarks.volume.worker"


def unique_dir(base: str = "/var/tmp") -> Path:
    d = Path(base) / f"corral-voltest-{os.getpid()}-{secrets.token_hex(4)}"
    d.mkdir()
    return d


def remove_tree(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)


class Worker:
    """``python -m benchmarks.volume.worker`` as a child process whose stderr can be awaited line by line."""

    def __init__(self, args: list[str], *, preexec_fn=None, module_cli: bool = False) -> None:
        argv = (
            [sys.executable, "-m", "launcher.cli", "bench", "volume", *args]
            if module_cli
            else [sys.executable, "-m", WORKER_MODULE, *args]
        )
        self.proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec_fn
        )
        self.lines: list[str] = []
        self._buf = b""

    def wait_for(self, predicate, timeout: float = 60.0) -> str:
        """Read stderr until a line satisfies ``predicate``; fail with everything read so far."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stderr.fileno()
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._buf += chunk
                *done, self._buf = self._buf.split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace")
                    self.lines.append(line)
                    if predicate(line):
                        return line
        raise AssertionError("worker never printed the awaited line; stderr so far:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return (
            self.proc.returncode,
            out.decode(),
            "\n".join(self.lines) + "\n" + (self._buf + err).decode(errors="replace"),
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

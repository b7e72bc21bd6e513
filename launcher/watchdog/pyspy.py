"""The one place that runs ``py-spy`` (a rank's Python stack, native frames where available).

Runs on the node, inside the watchdog (standard library only). ``py-spy dump`` pauses the
process while it reads it (ptrace); a process stopped with SIGSTOP cannot be read that way
("Failed to get stack traces"), so a stopped process is read with ``--nonblocking``, which
reads its memory without pausing it. ``--native`` adds C/C++ frames (gloo, NCCL, CUDA); when
it fails (no unwinding information, an unsupported platform) the dump is taken again without.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess

log = logging.getLogger(__name__)

DUMP_TIMEOUT_S = 30.0
"""A dump of a large process with native frames takes a few seconds; more means py-spy is stuck."""


def find_pyspy(venv_bin: str | None = None) -> str | None:
    """py-spy from the job's venv (a dependency of corral), else from PATH."""
    if venv_bin:
        candidate = os.path.join(venv_bin, "py-spy")
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("py-spy")


def dump_argv(binary: str, pid: int, *, stopped: bool, native: bool) -> list[str]:
    argv = [binary, "dump", "--pid", str(pid)]
    if stopped:
        argv.append("--nonblocking")
    if native:
        argv.append("--native")
    return argv


def _run(argv: list[str], timeout: float) -> tuple[int, str, str]:
    log.debug("%s", shlex.join(argv))
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, "", f"py-spy did not finish within {timeout:g} s"
    except OSError as exc:
        return 127, "", f"cannot run py-spy: {exc.strerror}"
    return p.returncode, p.stdout, p.stderr


def dump(binary: str | None, pid: int, *, stopped: bool, native: bool = True) -> tuple[str | None, str | None]:
    """``(stack text, None)`` or ``(None, why not)`` for process ``pid``."""
    if binary is None:
        return None, "py-spy is not installed on this node (it is a corral dependency: install it into the job's venv)"
    tries = [native, False] if native else [False]
    err = ""
    for with_native in tries:
        rc, out, err = _run(dump_argv(binary, pid, stopped=stopped, native=with_native), DUMP_TIMEOUT_S)
        if rc == 0 and out.strip():
            return out, None
        if rc == 124:
            break
    reason = (err.strip().splitlines() or ["no output"])[-1]
    return None, f"py-spy dump of process {pid} failed: {reason}"


__all__ = ["DUMP_TIMEOUT_S", "dump", "dump_argv", "find_pyspy"]

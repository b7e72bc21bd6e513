"""A test's own tmux server, ended with nothing left: the server killed and its socket file removed.

tmux leaves the socket file behind when its server is killed (``kill-server``, or a signal to the
server's process group), so a test that names a server of its own (``CORRAL_TMUX_SOCKET``) removes the
file too: a suite run leaves nothing in ``/tmp/tmux-<uid>``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def socket_file(sock: str) -> Path:
    return Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}" / sock


def end_server(sock: str) -> None:
    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    socket_file(sock).unlink(missing_ok=True)

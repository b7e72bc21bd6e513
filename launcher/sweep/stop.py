"""`corral sweep stop`: ask the controller to stop its trials and exit; do it ourselves if it is gone or hung."""

from __future__ import annotations

import logging
import os
import time

from launcher.config import ClusterConfig
from launcher.sweep.controller import Controller, load_spec
from launcher.sweep.journal import Journal, replay
from launcher.sweep.lock import is_stale, read_lock
from launcher.sweep.paths import sweep_paths

log = logging.getLogger(__name__)


def stop_sweep(cluster: ClusterConfig, name: str, *, timeout: float = 60.0) -> int:
    """Returns how many running trials were stopped."""
    from launcher.sweep.backend import LaunchBackend
    from launcher.sweep.detach import TMUX_SOCKET_ENV, kill_session

    paths = sweep_paths(cluster, name)
    sweep = load_spec(paths)
    before = len(replay(Journal(paths.journal).read()).running())
    holder = read_lock(paths.lock)
    if holder is not None and not is_stale(holder):
        paths.stop_request.write_text(str(time.time()), encoding="utf-8")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and read_lock(paths.lock) is not None:
            time.sleep(0.3)
        if read_lock(paths.lock) is None:
            return before
        log.warning(
            "the controller did not stop within %.0f s: ending its tmux session and stopping its trials here", timeout
        )
    holder = read_lock(paths.lock)
    if holder is not None and holder.session:
        kill_session(os.environ.get(TMUX_SOCKET_ENV) or None, holder.session)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not is_stale(holder):
            time.sleep(0.2)
    controller = Controller(sweep, cluster, LaunchBackend(cluster), paths)
    controller.lock.stale_after = 0.0 if holder is not None and not is_stale(holder) else controller.lock.stale_after
    controller.lock.acquire()
    try:
        controller.reload()
        n = len(controller.state.running())
        controller.stop_all("stopped by `corral sweep stop`")
        controller._record("controller", action="exit", reason="stopped by `corral sweep stop` (no live controller)")
    finally:
        controller.lock.release()
        paths.stop_request.unlink(missing_ok=True)
    return n

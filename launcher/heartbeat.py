"""Each rank's progress mark, read by the hang watchdog on its node (docs/WATCHDOG.md).

``report(step=...)`` and the ``Checkpointer`` call ``beat``/``phase`` here: every rank of a corral
job (``CORRAL_RUN_DIR`` and ``CORRAL_NODE`` set) keeps one small file,
``<run dir>/nodes/<node>/progress/rank<R>.json``, holding its last step, when it was reached and
whether a checkpoint save is under way. The file is replaced whole (write, rename), so the
watchdog never reads half a mark; it costs one small write per step. Outside corral nothing is
written. Standard library only: training scripts import it.
"""

from __future__ import annotations

import json
import os
import time

PROGRESS_DIR = "nodes/{node}/progress"
RANK_FILE = "rank{rank}.json"

_state: dict[str, object] = {}
"""This process's last mark: the step survives a phase change and the other way round."""


def progress_path(run_dir: str, node: str, rank: int | str) -> str:
    return os.path.join(run_dir, PROGRESS_DIR.format(node=node), RANK_FILE.format(rank=rank))


def _target() -> str | None:
    run_dir, node = os.environ.get("CORRAL_RUN_DIR"), os.environ.get("CORRAL_NODE")
    if not (run_dir and node):
        return None
    return progress_path(run_dir, node, os.environ.get("RANK", os.environ.get("CORRAL_NODE_RANK", "0")))


def _write(path: str) -> None:
    record = {"pid": os.getpid(), **_state}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, json.dumps(record).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def beat(step: object = None) -> None:
    """This rank reached ``step`` now (any step value that changes counts; None: a step without a number)."""
    path = _target()
    if path is None:
        return
    _state["step"] = step if isinstance(step, (int, float, str)) else _state.get("beats", 0)
    _state["beats"] = int(_state.get("beats", 0)) + 1  # type: ignore[call-overload]
    _state["t"] = round(time.time(), 3)
    _write(path)


def phase(name: str) -> None:
    """This rank entered ``name`` (``checkpoint`` while a save blocks it, ``step`` after): a
    checkpoint save in progress counts as progress, however long it takes."""
    path = _target()
    if path is None:
        return
    _state["phase"] = name
    _state["phase_t"] = round(time.time(), 3)
    _write(path)


__all__ = ["PROGRESS_DIR", "beat", "phase", "progress_path"]

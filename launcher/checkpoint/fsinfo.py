"""Is the checkpoint root somewhere that survives? Filesystem type lookup and the path policy.

A checkpoint on tmpfs dies with the machine, one on a container's overlay filesystem dies
with the container and is absent from host disk snapshots, and /tmp is often either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

VOLATILE_FS = {
    "tmpfs": "tmpfs (memory: lost on reboot, absent from disk snapshots)",
    "ramfs": "ramfs (memory: lost on reboot, absent from disk snapshots)",
    "overlay": "an overlay filesystem (a container's layer: lost with the container, absent from host snapshots)",
    "aufs": "an aufs filesystem (a container's layer: lost with the container, absent from host snapshots)",
}
VOLATILE_DIRS = ("/tmp", "/dev/shm")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo (fields: ... mount_point ... - fstype source options)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 2:
            continue
        mounts.append(Mount(_unescape(lf[4]), rf[0], _unescape(rf[1])))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path`` (absolute, symlinks resolved): the longest matching mount point; later wins."""
    best = None
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        if path == mp or path.startswith(mp + "/") or mp == "/":
            if best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/"):
                best = m
    return best


def volatile_reasons(path: str, mounts: list[Mount]) -> list[str]:
    """Why ``path`` is a poor place for checkpoints; empty when it is fine. Pure."""
    reasons = []
    for d in VOLATILE_DIRS:
        if path == d or path.startswith(d + "/"):
            reasons.append(f"it is under {d} (often tmpfs or cleaned at boot)")
    m = mount_of(path, mounts)
    if m is not None and m.fstype in VOLATILE_FS:
        reasons.append(f"it is on {VOLATILE_FS[m.fstype]} mounted at {m.mount_point}")
    return reasons


def check_root(root: str) -> list[str]:
    """Reasons the checkpoint root (which may not exist yet) is volatile, read from this machine."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            mounts = parse_mountinfo(f.read())
    except OSError:
        mounts = []
    return volatile_reasons(os.path.realpath(root), mounts)

"""Node-side probe: what a container run on this node can use. Standard library only.

This file is run on each node as ``python3 - ARGS_JSON`` (its source on stdin, over ssh for a
remote node) or imported and called in-process for a local one, so it must not import corral.
It looks (stat, getrlimit, /proc, PATH) and changes one thing only: it creates the job's run and
checkpoint directories it is asked to (``ensure_dirs``), because a bind mount needs its source to
exist and the checkpoints must land there. It never calls docker: docker facts come through
corral's docker choke point (``container/docker.py``).

Output: one JSON object (see ``probe``), read back by ``container.facts.NodeFacts.from_probe``.
"""

from __future__ import annotations

import json
import os
import re
import resource
import stat
import sys

RLIMITS = {"memlock": resource.RLIMIT_MEMLOCK, "stack": resource.RLIMIT_STACK}
CAP_SYS_RESOURCE = 24
DOCKERD_PID_FILES = ("/var/run/docker.pid", "/run/docker.pid")
_LIMIT_ROWS = {"memlock": "Max locked memory", "stack": "Max stack size"}


def path_kind(path: str) -> str:
    """'char', 'block', 'dir', 'file', 'other' or 'missing' (symlinks followed, as docker does)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    for kind, test in (("char", stat.S_ISCHR), ("block", stat.S_ISBLK), ("dir", stat.S_ISDIR), ("file", stat.S_ISREG)):
        if test(mode):
            return kind
    return "other"


def device_entries(directory: str) -> dict[str, str]:
    """Every entry under a device directory (e.g. /dev/infiniband), with its kind."""
    found: dict[str, str] = {}
    if path_kind(directory) != "dir":
        return found
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            found[full] = path_kind(full)
    return found


def gpu_count(dev: str = "/dev") -> int:
    """NVIDIA GPUs by their device nodes (/dev/nvidia0, /dev/nvidia1, ...): no driver library needed."""
    try:
        return sum(1 for n in os.listdir(dev) if re.fullmatch(r"nvidia\d+", n))
    except OSError:
        return 0


def _dockerd_pid() -> int | None:
    for f in DOCKERD_PID_FILES:
        try:
            with open(f) as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if os.path.exists(f"/proc/{pid}"):
            return pid
    return None


def _limits_of(pid: int) -> dict[str, list[int]] | None:
    """Hard/soft limits from /proc/PID/limits; -1 = unlimited."""
    try:
        with open(f"/proc/{pid}/limits") as fh:
            text = fh.read()
    except OSError:
        return None
    out: dict[str, list[int]] = {}
    for key, row in _LIMIT_ROWS.items():
        m = re.search(rf"^{row}\s+(\S+)\s+(\S+)", text, re.MULTILINE)
        if m:
            out[key] = [-1 if v == "unlimited" else int(v) for v in m.groups()]
    return out if len(out) == len(_LIMIT_ROWS) else None


def _has_cap_sys_resource(pid: int | str) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except OSError:
        pass
    return False


def rlimits() -> dict:
    """The limits a container can get: those of dockerd (its runtime inherits them), else this process's.

    A process without CAP_SYS_RESOURCE cannot raise a hard limit, so a ulimit above it fails
    at container start ("error setting rlimit type 8: operation not permitted").
    """
    pid = _dockerd_pid()
    limits = _limits_of(pid) if pid else None
    if limits is not None:
        return {"source": f"dockerd (pid {pid})", "limits": limits, "can_raise": _has_cap_sys_resource(pid)}
    limits = {}
    for key, res in RLIMITS.items():
        soft, hard = resource.getrlimit(res)
        limits[key] = [-1 if v == resource.RLIM_INFINITY else v for v in (soft, hard)]
    return {"source": "this user's session", "limits": limits, "can_raise": _has_cap_sys_resource("self")}


NVIDIA_TOOLS = ("nvidia-container-runtime-hook", "nvidia-container-runtime", "nvidia-ctk", "nvidia-container-cli")
"""dockerd offers the 'gpu' device capability only when nvidia-container-runtime-hook is on its PATH."""


def tools() -> dict[str, str | None]:
    import shutil

    path = os.environ.get("PATH", "") + ":/usr/bin:/usr/local/bin:/usr/sbin:/usr/local/sbin"
    return {t: shutil.which(t, path=path) for t in NVIDIA_TOOLS}


def ensure_dirs(dirs: list[str]) -> dict[str, str]:
    """Create the directories the run binds into the container; returns an error per directory that failed."""
    errors = {}
    for d in dirs:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as exc:
            errors[d] = f"{exc.strerror or exc}"
    return errors


def probe(paths: list[str], device_dirs: list[str], make_dirs: list[str] = ()) -> dict:
    """Everything the builder and the preflight checks need to know about this node."""
    made = ensure_dirs(list(make_dirs))
    return {
        "mkdir_errors": made,
        "tools": tools(),
        "paths": {p: path_kind(p) for p in paths},
        "devices": {d: device_entries(d) for d in device_dirs},
        "gpu_count": gpu_count(),
        "rlimits": rlimits(),
    }


def main(argv: list[str]) -> int:
    args = json.loads(argv[0]) if argv else {}
    json.dump(probe(args.get("paths", []), args.get("device_dirs", []), args.get("ensure_dirs", [])), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

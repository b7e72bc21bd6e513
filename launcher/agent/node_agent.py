"""corral's node-side helper: the small program the launcher runs on each node.

Why it exists: nodes need not have corral installed, and the things the launcher must do
there (probe facts, write the wrapper and the 0600 secrets file, run the tmux argvs it is sent
(built by ``launcher.tools.tmux``), read a job's state, stop exactly its processes) are awkward and fragile as quoted
shell. So the launcher sends this file's source, then JSON requests, on the ssh session's
stdin to the node's Python (see ``launcher.agent.remote``) and reads one JSON line back for each.
Nothing secret ever appears on a command line: secrets travel inside the request.

Standard library only, Python 3.8+, no imports from corral. Every function takes and
returns plain JSON-able data.
"""

from __future__ import annotations

import os
import stat
import sys
import time

# Imported where used, or not at all: a launch starts this agent on every node while the nodes' cores are
# busy starting the job, and the usual modules cost more than the agent's work. ``json`` (it imports ``re``,
# ``enum``, ``functools``, ``collections``) and ``subprocess`` (``selectors``, ``threading``, ``signal``)
# were ~10 ms of CPU per node and launch; ``pathlib`` alone ~10 ms on a small VM.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

LIGHT_TORCH_CHECK = (
    "import importlib.util, json, os, sys\n"
    "spec = importlib.util.find_spec('torch')\n"
    "where = list(spec.submodule_search_locations or []) if spec else []\n"
    "ok = any(os.path.isfile(os.path.join(d, 'distributed', 'run.py')) for d in where)\n"
    "version = None\n"
    "if ok:\n"
    "    try:\n"
    "        from importlib.metadata import version as v; version = v('torch')\n"
    "    except Exception: pass\n"
    "print(json.dumps({'ok': ok, 'version': version, 'python': sys.executable, 'torchrun': sys.argv[1] or None}))\n"
)
FULL_TORCH_CHECK = (
    "import json, sys\n"
    "import torch, torch.distributed.run\n"
    "print(json.dumps({'ok': True, 'version': torch.__version__, 'python': sys.executable,"
    " 'cuda_devices': torch.cuda.device_count(), 'torchrun': sys.argv[1] or None}))\n"
)


def _json_codec():
    """``json.loads`` and ``json.dumps`` (default options) built on json's C accelerator, ``_json``, without
    importing ``json``; the ``json`` module itself where ``_json`` is missing or does not behave as expected."""
    try:
        import _json

        class Context:  # what json.decoder.JSONDecoder gives the scanner
            strict, object_hook, object_pairs_hook, memo = True, None, None, {}
            parse_float, parse_int, parse_constant = float, int, float  # float("NaN"), float("-Infinity")

        scan = _json.make_scanner(Context)

        def default(o):
            raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

        encode = _json.make_encoder(None, default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)

        def loads(text):
            text = text.strip()
            try:
                obj, end = scan(text, 0)
            except StopIteration as exc:  # json.loads says the same as a JSONDecodeError, a ValueError
                raise ValueError(f"expecting a value at {exc.value}") from None
            if end != len(text):
                raise ValueError(f"extra data at {end}")
            return obj

        def dumps(obj):
            return "".join(encode(obj, 0))

        sample = {"a": [1, 2.5, None, True, "\u00e9\n"], "b": {}}
        if dumps(sample) != '{"a": [1, 2.5, null, true, "\\u00e9\\n"], "b": {}}' or loads(dumps(sample)) != sample:
            raise ValueError("_json differs from json")
        return loads, dumps
    except Exception:  # another Python's _json: the module, at its usual cost
        import json

        return json.loads, json.dumps


_loads, _dumps = _json_codec()


def _run(argv, timeout=60.0, env=None):
    """``subprocess.run(argv, stdin=DEVNULL, capture_output=True, timeout=timeout, env=env)`` without importing
    ``subprocess``: (exit status, stdout, stderr); 127 when the command is not found, 124 when it ran past
    ``timeout`` (it is then killed), minus the signal's number when a signal ended it."""
    import select

    null = os.open(os.devnull, os.O_RDONLY)
    out_r, out_w = os.pipe()  # both ends close on exec: the child gets only its dup2 copies
    err_r, err_w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ if env is None else env, file_actions=actions)
    except FileNotFoundError:
        pid = None
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        for fd in (null, out_w, err_w):
            os.close(fd)
    if pid is None:
        os.close(out_r)
        os.close(err_r)
        return 127, "", f"{argv[0]}: command not found"
    out, err = [], []
    reading = {out_r: out, err_r: err}
    deadline = time.monotonic() + timeout
    try:
        while reading:
            left = deadline - time.monotonic()
            ready = select.select(list(reading), [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                break
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    reading[fd].append(data)
                else:
                    del reading[fd]
                    os.close(fd)
    finally:
        for fd in reading:
            os.close(fd)
    if reading:  # ran past the deadline: killed, as subprocess.run does
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return 124, "", f"timed out after {timeout:g}s"
    status = os.waitpid(pid, 0)[1]
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return code, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")


def _hostname():
    return os.uname().nodename  # socket.gethostname() without importing socket


def _read(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return default


def gpu_count(root="/", smi=None):
    """NVIDIA GPUs on this node, counted one way for every caller (preflight, container facts, bench node).

    The driver's answer first (/proc/driver/nvidia/gpus, else ``nvidia-smi -L``): it is what CUDA and
    NCCL will use, while device files can outlive an unloaded driver or be made by hand. Only without
    any driver answer do the device files (/dev/nvidia0, ...) count, so a node whose driver tools are
    off PATH still reports its GPUs. ``root`` and ``smi`` (argv -> (rc, stdout)) let tests replay a
    recorded node.
    """
    try:
        return len(os.listdir(os.path.join(root, "proc/driver/nvidia/gpus")))
    except OSError:
        pass
    rc, out = smi(["nvidia-smi", "-L"]) if smi else _run(["nvidia-smi", "-L"], timeout=20)[:2]
    if rc == 0:
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    if rc != 127:  # a driver that answers with an error: its GPUs cannot be used
        return 0
    try:
        return sum(1 for n in os.listdir(os.path.join(root, "dev")) if n[6:].isdecimal() and n.startswith("nvidia"))
    except OSError:
        return 0


# -- what a container run can use (container.facts) --

RLIMITS = {"memlock": "RLIMIT_MEMLOCK", "stack": "RLIMIT_STACK"}
"""The limits a container run may need, by the name of their ``resource`` constant."""
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
    import re

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
    import resource

    limits = {}
    for key, res in RLIMITS.items():
        soft, hard = resource.getrlimit(getattr(resource, res))
        limits[key] = [-1 if v == resource.RLIM_INFINITY else v for v in (soft, hard)]
    return {"source": "this user's session", "limits": limits, "can_raise": _has_cap_sys_resource("self")}


NVIDIA_TOOLS = ("nvidia-container-runtime-hook", "nvidia-container-runtime", "nvidia-ctk", "nvidia-container-cli")
"""dockerd offers the 'gpu' device capability only when nvidia-container-runtime-hook is on its PATH."""


def tools() -> dict[str, str | None]:
    path = os.environ.get("PATH", "") + ":/usr/bin:/usr/local/bin:/usr/sbin:/usr/local/sbin"
    return {t: which(t, path=path) for t in NVIDIA_TOOLS}


def ensure_dirs(dirs: list[str]) -> dict[str, str]:
    """Create the directories the run binds into the container; returns an error per directory that failed."""
    errors = {}
    for d in dirs:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as exc:
            errors[d] = f"{exc.strerror or exc}"
    return errors


def container_facts(req, root="/"):
    """What a container run on this node can use (``container.facts.NodeFacts.from_probe`` reads it).

    It looks (stat, getrlimit, /proc, PATH) and changes one thing only: it creates the run and
    checkpoint directories it is asked to, because a bind mount needs its source to exist. Docker
    itself is asked through corral's docker choke point (``container/docker.py``), not here.
    """
    paths, device_dirs = req.get("paths", []), req.get("device_dirs", [])
    made = ensure_dirs(list(req.get("ensure_dirs", [])))
    return {
        "mkdir_errors": made,
        "tools": tools(),
        "paths": {p: path_kind(p) for p in paths},
        "devices": {d: device_entries(d) for d in device_dirs},
        "gpu_count": gpu_count(root),
        "rlimits": rlimits(),
    }


# -- what a node is made of (bench node's inventory; ``root`` lets tests point at a sysfs-like tree) --


def _read_text(path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpu_info(root: Path) -> dict[str, Any]:
    model = None
    for line in (_read_text(root / "proc/cpuinfo") or "").splitlines():
        if line.startswith("model name") and ":" in line:
            model = line.split(":", 1)[1].strip()
            break
    import platform

    return {"model": model or platform.processor() or None, "count": os.cpu_count()}


def _cpu_cgroup_dirs(root: Path) -> list[tuple[int, Path]]:
    """This process's cgroup directory for the cpu controller, then each ancestor up to the hierarchy's root,
    as (cgroup version, directory). v1's ``cpu`` hierarchy wins over v2's on a hybrid host: the controller
    is attached to one of them only."""
    lines = (_read_text(root / "proc/self/cgroup") or "").splitlines()
    base, rel, version = None, None, 0
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and "cpu" in parts[1].split(","):
            mount = root / "sys/fs/cgroup"
            base = next((mount / d for d in (parts[1], "cpu", "cpu,cpuacct") if (mount / d).is_dir()), None)
            rel, version = parts[2], 1
            break
    if base is None:
        for line in lines:
            if line.startswith("0::"):
                unified = root / "sys/fs/cgroup"
                base = unified if (unified / "cgroup.controllers").exists() else unified / "unified"
                rel, version = line[3:], 2
    if base is None or rel is None:
        return []
    parts = [p for p in rel.split("/") if p and p not in (".", "..")]
    return [(version, base.joinpath(*parts[:i])) for i in range(len(parts), -1, -1)]


def cpu_limit(root: Path) -> dict[str, Any]:
    """The CPU a process started here may use: its affinity, and the tightest cgroup CPU quota on its
    cgroup's path (v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, v2 ``cpu.max``) with that group's
    throttling count. A container's or a unit's limit (``docker --cpus``, a pod's CPU limit, systemd's
    ``CPUQuota``) shows here, and every rank launched the same way inherits it."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    out = {
        "affinity": affinity,
        "readable": False,
        "quota_cpus": None,
        "cgroup": None,
        "quota_us": None,
        "period_us": None,
        "nr_throttled": None,
    }
    for version, d in _cpu_cgroup_dirs(root):
        if version == 1:
            text = _read_text(d / "cpu.cfs_quota_us")
            quota, period = _int(text), _int(_read_text(d / "cpu.cfs_period_us"))
        else:
            text = _read_text(d / "cpu.max")
            fields = (text or "").split()
            quota = _int(fields[0]) if len(fields) == 2 and fields[0] != "max" else None
            period = _int(fields[1]) if len(fields) == 2 else None
        out["readable"] = out["readable"] or text is not None
        if quota is None or quota <= 0 or not period:
            continue  # -1 (v1) or "max" (v2): no limit at this level
        if out["quota_cpus"] is None or quota / period < out["quota_cpus"]:
            stat = dict(
                (k, _int(v))
                for k, _, v in (ln.partition(" ") for ln in (_read_text(d / "cpu.stat") or "").splitlines())
            )
            out.update(
                quota_cpus=round(quota / period, 4),
                cgroup="/" + str(d.relative_to(root)),
                quota_us=quota,
                period_us=period,
                nr_throttled=stat.get("nr_throttled"),
            )
    return out


def memory_bytes(root: Path) -> int | None:
    for line in (_read_text(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def disks(root: Path) -> list[dict[str, Any]]:
    """Block devices (not loop, ram or device-mapper children), size and whether rotational."""
    out = []
    block = root / "sys/block"
    for dev in sorted(block.iterdir()) if block.is_dir() else []:
        if dev.name.startswith(("loop", "ram", "zram")):
            continue
        sectors = _int(_read_text(dev / "size"))
        out.append(
            {
                "name": dev.name,
                "size_bytes": sectors * 512 if sectors is not None else None,
                "rotational": _read_text(dev / "queue/rotational") == "1",
                "model": _read_text(dev / "device/model"),
            }
        )
    return out


def network_interfaces(root: Path) -> list[dict[str, Any]]:
    """Interfaces with MTU, state and link speed (Mb/s; virtual NICs often report none)."""
    out = []
    net = root / "sys/class/net"
    for dev in sorted(net.iterdir()) if net.is_dir() else []:
        if dev.name == "lo":
            continue
        speed = _int(_read_text(dev / "speed"))
        out.append(
            {
                "name": dev.name,
                "mtu": _int(_read_text(dev / "mtu")),
                "state": _read_text(dev / "operstate"),
                "speed_mbps": speed if speed is not None and speed > 0 else None,
                "virtual": not (dev / "device").exists(),
            }
        )
    return out


def infiniband(root: Path) -> dict[str, Any]:
    """HCAs from /sys/class/infiniband: per port state (e.g. '4: ACTIVE'), rate ('400 Gb/sec (4X NDR)'), link layer."""
    base = root / "sys/class/infiniband"
    if not base.is_dir():
        return {
            "present": False,
            "reason": "no /sys/class/infiniband (no InfiniBand or RoCE HCA, or its driver is not loaded)",
            "hcas": [],
        }
    hcas = []
    for hca in sorted(base.iterdir()):
        ports = []
        for port in sorted((hca / "ports").iterdir()) if (hca / "ports").is_dir() else []:
            state = _read_text(port / "state")
            ports.append(
                {
                    "port": _int(port.name),
                    "state": state.split(":", 1)[-1].strip() if state else None,
                    "physical_state": (_read_text(port / "phys_state") or "").split(":", 1)[-1].strip() or None,
                    "rate": _read_text(port / "rate"),
                    "link_layer": _read_text(port / "link_layer"),
                }
            )
        hcas.append({"name": hca.name, "firmware": _read_text(hca / "fw_ver"), "ports": ports})
    return {"present": bool(hcas), "reason": None if hcas else "/sys/class/infiniband is empty", "hcas": hcas}


def nccl_config(root: Path) -> dict[str, Any]:
    """System NCCL settings: /etc/nccl.conf and files under /etc/nccl/, plus NCCL_* in the environment."""
    from pathlib import Path

    files = {}
    conf = root / "etc/nccl.conf"
    if conf.is_file():
        files[str(Path("/") / conf.relative_to(root))] = _read_text(conf)
    d = root / "etc/nccl"
    for f in sorted(d.rglob("*")) if d.is_dir() else []:
        if f.is_file():
            files[str(Path("/") / f.relative_to(root))] = _read_text(f)
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")}
    return {"files": files, "env": env}


def numa(root: Path) -> dict[str, Any]:
    """NUMA nodes as the kernel exposes them, and whether CPU affinity can be queried at all."""
    nodes_dir = root / "sys/devices/system/node"
    nodes = sorted(p.name for p in nodes_dir.glob("node[0-9]*")) if nodes_dir.is_dir() else []
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    if not nodes:
        reason = "NUMA topology is not exposed (no /sys/devices/system/node): CPU/GPU affinity cannot be set"
    elif len(nodes) == 1:
        reason = "one NUMA node exposed: CPU affinity per GPU is not available (common on cloud VMs)"
    else:
        reason = None
    return {"nodes": len(nodes), "exposed": len(nodes) > 1, "cpu_affinity": affinity, "reason": reason}


def host_inventory(root="/"):
    """The stdlib part of ``corral bench node``'s inventory (the worker adds torch's versions)."""
    import platform
    from pathlib import Path

    root = Path(root)
    return {
        "hostname": _hostname(),
        "cpu": cpu_info(root),
        "cpu_limit": cpu_limit(root),
        "memory_bytes": memory_bytes(root),
        "disks": disks(root),
        "network": network_interfaces(root),
        "infiniband": infiniband(root),
        "nccl_config": nccl_config(root),
        "numa": numa(root),
        "gpus": gpu_count(str(root)),
        "versions": {"python": platform.python_version(), "kernel": platform.release()},
    }


PORT_RESERVATION_S = 300
"""A port handed to a launch stays reserved this long: torchrun binds it only after importing
torch (seconds later), and a second launch in between must not be given the same port."""


def _reserve(port):
    """Claim ``port`` for one launch on this host (O_EXCL file); stale claims expire."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    d = os.path.join(base, "corral", "ports")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{_hostname()}-{port}")
    try:
        if time.time() - os.path.getmtime(path) > PORT_RESERVATION_S:
            os.unlink(path)
    except OSError:
        pass
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        return False


def free_port(preferred, tries=64):
    """The first port from ``preferred`` on that nothing listens on (bind test, all interfaces)
    and that no other launch on this host was given in the last few minutes."""
    import _socket  # the socket module imports enum and selectors: ~4 ms of CPU for one bind test

    for port in range(preferred, min(preferred + tries, 65536)):
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            continue
        finally:
            s.close()
        if _reserve(port):
            return port
    return None


def op_probe(req):
    """The one node probe: every question about a node, by section (``want``, default ``["launch"]``).

    ``launch``: preflight's facts and checks; ``container``: what a container run can use (the
    request's ``container`` holds its paths, device directories and directories to create);
    ``inventory``: bench node's stdlib inventory. ``gpus`` is always there, counted by ``gpu_count``.
    """
    want, root = req.get("want", ["launch"]), req.get("root", "/")  # root: a recorded node's tree, for tests
    out = {"hostname": _hostname(), "python": sys.version.split()[0], "gpus": gpu_count(root)}
    if "launch" in want:
        out.update(_launch_facts(req))
    if "container" in want:
        out["container"] = container_facts(req.get("container") or {}, root)
    if "inventory" in want:
        out["inventory"] = host_inventory(root)
    return out


def _launch_facts(req):
    """Preflight's facts and checks: workdir, script, venv and torch, tmux, the job's session, port, reach."""
    out = {}
    workdir = req.get("workdir")
    out["workdir"] = workdir
    out["workdir_ok"] = bool(workdir) and os.path.isdir(workdir)
    script = req.get("script")
    if script and workdir:
        out["script_ok"] = os.path.isfile(os.path.join(workdir, script))
    venv = req.get("venv")
    check = FULL_TORCH_CHECK if req.get("full_torch") else LIGHT_TORCH_CHECK
    if venv:
        activate = os.path.join(venv, "bin", "activate")
        out["venv_ok"] = os.path.isfile(activate)
        script = '. "$1" || exit 98; shift; exec python "$@" "$(command -v torchrun)"'
        argv = ["bash", "-c", script, "corral", activate, "-c", check]
    else:
        out["venv_ok"] = None
        argv = ["bash", "-c", 'exec python3 "$@" "$(command -v torchrun)"', "corral", "-c", check]
    fast = None if (req.get("full_torch") or not out["venv_ok"]) else _torch_in_venv(venv)
    if out["venv_ok"] is False:
        out["torch"] = {"ok": False, "error": f"{activate} not found"}
    elif fast is not None:
        out["torch"] = fast
    else:
        rc, stdout, stderr = _run(argv, timeout=float(req.get("torch_timeout", 120)), env=_clean_env())
        if rc == 0 and stdout.strip():
            out["torch"] = _loads(stdout.strip().splitlines()[-1])
            if not out["torch"].get("ok"):
                out["torch"]["error"] = "torch is not installed in this environment"
        else:
            out["torch"] = {"ok": False, "error": (stderr.strip().splitlines() or [f"exit status {rc}"])[-1]}
    out["tmux"] = which("tmux")
    out["bash"] = which("bash") is not None
    if req.get("tmux_panes") and out["tmux"]:
        if not os.path.exists(tmux_socket(req["tmux_panes"])):  # no server, so no session: no tmux to start
            out["session_state"] = "none"
        else:
            rc, panes, _ = _run(req["tmux_panes"], timeout=10)
            dead = [line.split()[0] for line in panes.splitlines() if line.split()]
            out["session_state"] = "none" if rc != 0 else ("running" if "0" in dead else "exited")
    if req.get("port"):
        out["port"] = free_port(int(req["port"]))
    if req.get("reach"):
        out["reach"] = op_reach(req["reach"])
    return out


def which(name, path=None):
    """``shutil.which(name, path=path)`` for a bare command name, without importing shutil (~3 ms of CPU on
    every node of every launch): the first executable file named ``name`` in ``path`` (default ``$PATH``)."""
    path = os.environ.get("PATH", os.defpath) if path is None else path
    for directory in path.split(os.pathsep) if path else ():
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def tmux_socket(argv):
    """The server socket a ``tmux`` argv talks to, as tmux finds it: ``-S PATH``, else ``-L NAME`` (default
    ``default``) in ``$TMUX_TMPDIR`` (default /tmp) ``/tmux-UID``."""
    if "-S" in argv[1:-1]:
        return argv[argv.index("-S") + 1]
    name = argv[argv.index("-L") + 1] if "-L" in argv[1:-1] else "default"
    return os.path.join(os.environ.get("TMUX_TMPDIR") or "/tmp", f"tmux-{os.getuid()}", name)


def _torch_in_venv(venv):
    """torch and torchrun found in the venv by looking at files (no interpreter started: this
    runs on every node before every launch). None when unsure; the caller then runs python."""
    lib = os.path.join(venv, "lib")
    try:  # lib/python3*/... as glob would match it, without glob's re; sorted, so one answer
        pythons = sorted(n for n in os.listdir(lib) if n.startswith("python3"))
    except OSError:
        pythons = []
    runs = [
        r
        for n in pythons
        if os.path.isfile(r := os.path.join(lib, n, "site-packages", "torch", "distributed", "run.py"))
    ]
    if not runs or not os.path.isfile(os.path.join(venv, "bin", "torchrun")):
        return None
    version = None
    text = _read(os.path.join(os.path.dirname(os.path.dirname(runs[0])), "version.py")) or ""
    for line in text.splitlines():
        if line.startswith("__version__"):
            version = line.split("=", 1)[1].strip().strip("'\"")
    return {"ok": True, "version": version, "torchrun": os.path.join(venv, "bin", "torchrun"), "how": "files"}


def _clean_env():
    """The environment without an activated venv (so the node's own python/venv is what runs)."""
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONHOME", None)
    if venv:
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p != os.path.join(venv, "bin")
        )
    return env


def op_reach(req):
    """Can this node open TCP to host:port? A refusal proves the host answered (nothing listens yet)."""
    import socket

    t0 = time.monotonic()
    try:
        with socket.create_connection((req["host"], int(req["port"])), timeout=float(req.get("timeout", 5))):
            pass
        return {"ok": True, "detail": "connected", "seconds": time.monotonic() - t0}
    except ConnectionRefusedError:
        return {"ok": True, "detail": "host answered (port closed)", "seconds": time.monotonic() - t0}
    except OSError as exc:
        return {"ok": False, "detail": str(exc) or type(exc).__name__, "seconds": time.monotonic() - t0}


def _write_file(path, content, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def op_start(req):
    """Write files, run tmux argvs in order, wait until the wrapper has recorded its process group."""
    state_dir = req["state_dir"]
    for d in req.get("dirs", []):
        os.makedirs(d, exist_ok=True)
    for name in ("pid", "exit_code"):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass
    log = req.get("log")
    if log and os.path.exists(log):
        os.replace(log, log + ".prev")
    t0 = time.monotonic()
    for f in req.get("files", []):
        _write_file(f["path"], f["content"], int(f["mode"]))
    for i, argv in enumerate(req.get("steps", [])):
        rc, _, err = _run(argv, timeout=30, env=_clean_env())
        if rc != 0:
            return {"ok": False, "step": i, "argv": argv, "error": err.strip() or f"exit status {rc}"}
    t1 = time.monotonic()
    deadline = t1 + float(req.get("wait_s", 10))
    pid_file = os.path.join(state_dir, "pid")
    while time.monotonic() < deadline:
        text = _read(pid_file)
        if text and len(text.split()) == 3:
            pid, pgid, sid = (int(x) for x in text.split())
            seconds = {"files_tmux": round(t1 - t0, 3), "wrapper": round(time.monotonic() - t1, 3)}
            return {"ok": True, "pid": pid, "pgid": pgid, "sid": sid, "seconds": seconds}
        time.sleep(0.02)
    return {"ok": False, "step": None, "error": "the pane did not start the wrapper (no pid file written)"}


def op_status(req):
    state_dir = req["state_dir"]
    out = {"exit_code": None, "exit_mtime": None, "session": False, "pane_dead": None, "pane_status": None}
    # The session before the exit file: the wrapper writes the file, then ends the session, so a session
    # found gone here means the file is there to read below (the other order could see neither: "missing").
    rc, stdout, _ = _run(req["tmux_panes"], timeout=10)
    if rc == 0:
        out.update(pane_fields(stdout))
    code = _read(os.path.join(state_dir, "exit_code"))
    if code is not None and code.strip().lstrip("-").isdigit():
        out["exit_code"] = int(code.strip())
        out["exit_mtime"] = os.path.getmtime(os.path.join(state_dir, "exit_code"))
    pid = _read(os.path.join(state_dir, "pid"))
    out["pid"] = [int(x) for x in pid.split()] if pid and len(pid.split()) == 3 else None
    out["alive"] = bool(out["pid"]) and _alive(out["pid"][0])
    # small files the caller wants with the state (the watchdog's state and events on its leader node)
    out["files"] = {key: _read_capped(path) for key, path in (req.get("read") or {}).items()}
    return out


def pane_fields(panes):
    """The status fields from ``tmux list-panes`` output (``PANE_FORMAT`` lines); none for no output."""
    parts = panes.split()
    if not parts:
        return {}
    status = int(parts[1]) if len(parts) > 2 and parts[1].lstrip("-").isdigit() else None
    return {"session": True, "pane_dead": parts[0] == "1", "pane_status": status}


STATUS_FILE_CAP = 256 * 1024
"""A status reply carries at most this much of a file: its end (events are appended)."""


def capped_text(data, size):
    """A file's last ``STATUS_FILE_CAP`` bytes as text; one longer than the cap loses its first, partial line."""
    text = data.decode("utf-8", errors="replace")
    return text if size <= STATUS_FILE_CAP else text.split("\n", 1)[-1]


def _read_capped(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - STATUS_FILE_CAP))
            data = f.read()
    except OSError:
        return None
    return capped_text(data, size)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = _read(f"/proc/{pid}/stat")
    return bool(st) and st.rsplit(")", 1)[-1].split()[0] != "Z"


def _proc_table():
    """pid -> (pgid, environ marker fields) for every visible process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _read(f"/proc/{entry}/stat")
        if not st:
            continue
        fields = st.rsplit(")", 1)[-1].split()
        if fields[0] == "Z":
            continue
        table[int(entry)] = int(fields[2])
    return table


def _environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _marker(req):
    return {f"CORRAL_RUN_ID={req['run_id']}".encode(), f"CORRAL_NODE={req['node']}".encode()}


def _job_processes(req):
    """The job's processes on this node: members of the recorded process groups, and every
    process whose environment carries this run's id and node (torchrun starts each worker in
    its own session, and a worker orphaned by a killed torchrun keeps its environment)."""
    marker = _marker(req)
    groups = req["groups"]
    me = os.getpid()
    found = {}
    for pid, pgid in _proc_table().items():
        if pid == me:
            continue
        if pgid in groups or marker <= set(_environ(pid)):
            found[pid] = pgid
    return found


def _live_pane_groups(req):
    """The wrapper's process group, but only while the job's pane still runs that very process:
    a recorded number alone could by now belong to someone else's process."""
    pid_file = _read(os.path.join(req["state_dir"], "pid"))
    if not (pid_file and len(pid_file.split()) == 3):
        return set()
    pid, pgid, _ = (int(x) for x in pid_file.split())
    rc, out, _ = _run(req["tmux_panes"], timeout=10)
    panes = (
        {int(line.split()[-1]) for line in out.splitlines() if line.split() and line.split()[-1].isdigit()}
        if rc == 0
        else set()
    )
    return {pgid} if pid in panes and _alive(pid) else set()


def _signal_once(found, sig, whole_groups):
    """Signal each process of ``found`` once: the groups of ``whole_groups`` with one ``killpg``, the others
    one by one. Once: torchrun turns a signal that arrives while it is ending its workers into a second
    exception, which skips stopping its log threads, and it then never exits."""
    for pgid in sorted(whole_groups):
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
    for pid, pgid in found.items():
        if pgid not in whole_groups:
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def _wait_gone(pids, until):
    while time.monotonic() < until and any(_alive(p) for p in pids):
        time.sleep(0.1)


STOP_LINE = "corral: stopped by corral stop"
"""The last line ``corral stop`` writes into a stopped job's log (a normal end writes
``corral: exited with status N``)."""


def op_stop(req):
    """SIGTERM the job, SIGKILL what remains after the timeout, kill the tmux session, and report
    what (if anything) is still alive.

    In two steps, each process signalled once. First the job's command in the pane (torchrun, which
    ends its own workers and then its log threads), for up to half the timeout. Not the wrapper around
    it: the wrapper leads the pane's session, and its end would hang up the pane's terminal and send
    torchrun a SIGHUP in the middle of that. Then the rest: the wrapper's pipeline, the watchdog and
    any worker left, groups led by a worker as a whole."""
    import signal

    timeout = float(req.get("timeout", 10))
    deadline = time.monotonic() + timeout
    recorded = _live_pane_groups(req)
    req = {**req, "groups": recorded}
    found = _job_processes(req)
    initially = len(found)
    marker = _marker(req)
    first = {pid: g for pid, g in found.items() if g in recorded and marker <= set(_environ(pid))}
    _signal_once(first, signal.SIGTERM, set())
    _wait_gone(first, min(deadline, time.monotonic() + timeout / 2))
    rest = {pid: g for pid, g in _job_processes(req).items() if pid not in first}
    _signal_once(rest, signal.SIGTERM, {g for g in set(rest.values()) if g in rest and g not in recorded})
    found = _job_processes(req)
    while found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = _job_processes(req)
    killed = 0
    if found:
        killed = len(found)
        _signal_once(found, signal.SIGKILL, {g for g in set(found.values()) if g in found or g in recorded})
    _run(req["tmux_kill"], timeout=10)
    deadline = time.monotonic() + 5
    remaining = _job_processes(req)
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        remaining = _job_processes(req)
    exit_file = os.path.join(req["state_dir"], "exit_code")
    # a node whose command was still running records SIGTERM's 143, whatever the command made of the
    # signal (torchrun exits 1); one that had ended keeps its own status
    if (first or not os.path.exists(exit_file)) and os.path.isdir(req["state_dir"]):
        _write_file(exit_file, "143\n", 0o644)
    if initially and req.get("log"):
        # the wrapper was killed before it could write its own last line: say how the job ended
        how = f"SIGTERM, then SIGKILL after {timeout:g} s" + (f" ({killed} process(es) needed it)" if killed else "")
        with open(req["log"], "a", encoding="utf-8") as f:
            f.write(f"[{req['node']}] {STOP_LINE} ({how})\n")
    secrets = req.get("secrets_path")
    if secrets:
        try:
            os.unlink(secrets)
        except FileNotFoundError:
            pass
    return {"found": initially, "killed": killed, "remaining": sorted(remaining)}


def op_tail(req):
    """The last ``lines`` lines of a log (bounded read from the end)."""
    path, n = req["path"], int(req.get("lines", 50))
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            chunk = min(size, max(65536, n * 400))
            f.seek(size - chunk)
            data = f.read()
    except FileNotFoundError:
        return {"ok": False, "error": f"{path}: no such log"}
    text = data.decode(errors="replace").splitlines()
    return {"ok": True, "lines": text[-n:] if n > 0 else []}


def op_forget(req):
    """Remove a finished run's directory on this node (``corral rm``), only if it is one of
    corral's: it holds this node's state directory or log."""
    run_dir, node = req["run_dir"], req["node"]
    if not os.path.isdir(run_dir):
        return {"ok": True, "removed": False}
    if not (
        os.path.isdir(os.path.join(run_dir, "nodes", node))
        or os.path.isfile(os.path.join(run_dir, "logs", f"{node}.log"))
    ):
        return {"ok": False, "error": f"{run_dir} holds no state or log of node {node}: left alone"}
    import shutil

    shutil.rmtree(run_dir)
    return {"ok": True, "removed": True}


def op_read(req):
    """Whole small files (a run's result documents), None for a missing one: no shared drive needed."""
    limit = int(req.get("max_bytes", 8 << 20))
    files = {}
    for path in req["paths"]:
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except (FileNotFoundError, NotADirectoryError):
            files[path] = None
            continue
        if len(data) > limit:
            return {"ok": False, "error": f"{path}: larger than {limit} bytes"}
        files[path] = data.decode(errors="replace")
    return {"ok": True, "files": files}


OPS = {
    "probe": op_probe,
    "reach": op_reach,
    "start": op_start,
    "status": op_status,
    "stop": op_stop,
    "tail": op_tail,
    "read": op_read,
    "forget": op_forget,
}


def op_load(req):
    """Add ops the launcher ships for one session (``corral top``'s sampler): ``code`` must define
    ``OPS_ADDED = {name: function}``. Nothing is written to the node; the ops end with the agent."""
    name = req.get("name") or "corral_extension"
    scope = {"__name__": name}
    exec(compile(req["code"], name, "exec"), scope)
    OPS.update(scope["OPS_ADDED"])
    return {"ok": True, "ops": sorted(scope["OPS_ADDED"])}


OPS["load"] = op_load


def main(request):
    try:
        result = OPS[request["op"]](request)
    except Exception as exc:  # reported to the launcher, which names the node
        result = {"agent_error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(_dumps(result) + "\n")
    sys.stdout.flush()


def serve(stream):
    """Answer each JSON request line of ``stream`` with one JSON line, until end of input."""
    while True:
        line = stream.readline()
        if not line:
            return
        if line.strip():
            main(_loads(line))


if __name__ == "__main__":
    serve(sys.stdin)

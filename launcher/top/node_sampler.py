"""``corral top``'s node side: one cheap sample of a node per request (standard library only).

Shipped to the node agent with its ``load`` op (see ``launcher.top.collect``), so nodes need no
corral install and a refresh costs no new login. Each ``top`` request answers raw counters
(``/proc/stat``, ``/proc/meminfo``, ``/proc/net/dev``, ``statvfs``), the job files of the jobs
asked about, and the GPUs; rates and verdicts are computed by the launcher
(``launcher.top.model``) from two samples.

GPUs, the first source that works, chosen once per agent:
1. ``nvml_replay``: a recorded NVML reading (``corral-nvml-reading/1``) answered as if live
   (demos and tests; the first sample gives "before", later ones "before" updated by "after",
   the recorded events come once);
2. NVML: a small sampler process started with the job's venv python (where nvidia-ml-py is
   importable) and kept for the agent's life, answering one JSON line per request in the same
   ``function(args)`` call format as the recordings;
3. ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` (raw text, parsed by the launcher);
4. none: CPU and job figures only.

Python 3.8+, no imports from corral; functions take and return plain JSON-able data.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import time

SMI_FIELDS = (
    "index,name,utilization.gpu,memory.used,memory.total,power.draw,power.limit,temperature.gpu,"
    "clocks.sm,clocks_throttle_reasons.active,ecc.errors.corrected.volatile.total,ecc.errors.uncorrected.volatile.total"
)
SAMPLER_TIMEOUT_S = 5.0
METRICS_TAIL_BYTES = 16384
METRICS_RECORDS = 40

# The NVML sampler: run with the venv's python (pynvml importable there), reads one line per sample.
NVML_SAMPLER = r"""
import json, sys
NAMES = {1: "UNINITIALIZED", 2: "INVALID_ARGUMENT", 3: "NOT_SUPPORTED", 4: "NO_PERMISSION", 6: "NOT_FOUND",
         9: "DRIVER_NOT_LOADED", 10: "TIMEOUT", 12: "LIBRARY_NOT_FOUND", 13: "FUNCTION_NOT_FOUND",
         15: "GPU_IS_LOST", 16: "RESET_REQUIRED", 999: "UNKNOWN"}
try:
    import pynvml
    pynvml.nvmlInit()
except Exception as exc:
    code = getattr(exc, "value", None)
    why = "NVML_ERROR_" + NAMES.get(code, str(code)) if code is not None else type(exc).__name__ + ": " + str(exc)
    print(json.dumps({"init_error": why}), flush=True)
    sys.exit(0)
def plain(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, "_fields_"):
        return {f[0]: plain(getattr(v, f[0])) for f in v._fields_ if f[0] != "version"}
    return v
count = pynvml.nvmlDeviceGetCount()
handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
events = None
try:
    events = pynvml.nvmlEventSetCreate()
    for h in handles:
        try:
            pynvml.nvmlDeviceRegisterEvents(h, 0x8 | 0x2, events)
        except pynvml.NVMLError:
            pass
except pynvml.NVMLError:
    events = None
REASONS = "nvmlDeviceGetCurrentClocksEventReasons" if hasattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons") else "nvmlDeviceGetCurrentClocksThrottleReasons"
CALLS = [("nvmlDeviceGetName", ()), ("nvmlDeviceGetUtilizationRates", ()), ("nvmlDeviceGetMemoryInfo", ()),
         ("nvmlDeviceGetPowerUsage", ()), ("nvmlDeviceGetEnforcedPowerLimit", ()), ("nvmlDeviceGetTemperature", (0,)),
         ("nvmlDeviceGetClockInfo", (1,)), (REASONS, ()), ("nvmlDeviceGetTotalEccErrors", (0, 0)),
         ("nvmlDeviceGetTotalEccErrors", (1, 0))]
print(json.dumps({"ready": True, "count": count}), flush=True)
for _ in sys.stdin:
    calls = {"nvmlDeviceGetCount()": count}
    for i, h in enumerate(handles):
        for fn, args in CALLS:
            key = "%s(%s)" % (fn, ",".join(str(a) for a in (i,) + args))
            try:
                calls[key] = plain(getattr(pynvml, fn)(h, *args))
            except pynvml.NVMLError as exc:
                calls[key] = {"error": "NVML_ERROR_" + NAMES.get(exc.value, str(exc.value))}
    seen = []
    while events is not None:
        try:
            e = pynvml.nvmlEventSetWait(events, 0)
        except pynvml.NVMLError:
            break
        try:
            gpu = pynvml.nvmlDeviceGetIndex(e.device)
        except pynvml.NVMLError:
            gpu = -1
        seen.append({"gpu": gpu, "type": int(e.eventType), "data": int(e.eventData)})
    print(json.dumps({"calls": calls, "events": seen}), flush=True)
"""


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


# ----------------------------------------------------------------------------- CPU, memory, disks, network


def cpu_counters():
    """Aggregate jiffies from /proc/stat: [user, nice, system, idle, iowait, irq, softirq, steal]."""
    text = _read("/proc/stat") or ""
    for line in text.splitlines():
        if line.startswith("cpu "):
            return [int(x) for x in line.split()[1:9]]
    return None


def memory():
    fields = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            fields[key] = int(rest.split()[0]) * 1024
    return {"total": fields.get("MemTotal"), "available": fields.get("MemAvailable")}


def net_counters():
    """Bytes received and sent per interface but loopback (/proc/net/dev), and their totals.

    Per interface because containers' veths come and go: a rate is taken over the interfaces
    present in both samples, so one that vanished does not look like a counter reset."""
    ifaces = {}
    for line in (_read("/proc/net/dev") or "").splitlines()[2:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        if name == "lo" or not rest:
            continue
        cols = rest.split()
        ifaces[name] = [int(cols[0]), int(cols[8])]
    return {
        "rx": sum(v[0] for v in ifaces.values()),
        "tx": sum(v[1] for v in ifaces.values()),
        "ifaces": ifaces,
    }


def disk_free(label, path):
    """Free and total bytes of the filesystem holding ``path`` (its nearest existing parent)."""
    probe = path
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        probe = parent if parent != probe else ""
    try:
        st = os.statvfs(probe or "/")
    except OSError as exc:
        return {"label": label, "path": path, "error": str(exc)}
    return {"label": label, "path": path, "free": st.f_bavail * st.f_frsize, "total": st.f_blocks * st.f_frsize}


# ----------------------------------------------------------------------------- jobs


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = _read(f"/proc/{pid}/stat")
    return bool(st) and st.rsplit(")", 1)[-1].split()[0] != "Z"


def metrics_tail(path):
    """The last records of a ``metrics.jsonl`` (a bounded read from the end; a torn first line is skipped)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - METRICS_TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    if size > METRICS_TAIL_BYTES:
        lines = lines[1:]
    out = []
    for line in reversed(lines):  # newest first; a line being written is skipped
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
            if len(out) == METRICS_RECORDS:
                break
    return out[::-1]


def job_state(job):
    """A job on this node from its files alone (no tmux call: this runs every refresh)."""
    state_dir = job["state_dir"]
    out = {"name": job["name"], "state": "missing", "exit_code": None}
    code = _read(os.path.join(state_dir, "exit_code"))
    pid = _read(os.path.join(state_dir, "pid"))
    if code is not None and code.strip().lstrip("-").isdigit():
        out.update(state="exited", exit_code=int(code.strip()))
    elif pid and len(pid.split()) == 3 and _alive(int(pid.split()[0])):
        out["state"] = "running"
    try:
        out["log_mtime"] = os.path.getmtime(job["log"]) if job.get("log") else None
    except OSError:
        out["log_mtime"] = None
    out["metrics"] = metrics_tail(job["metrics"]) if job.get("metrics") else []
    if job.get("watchdog"):  # the hang watchdog's state (its leader node only)
        try:
            out["watchdog"] = json.loads(_read(job["watchdog"]) or "null")
        except ValueError:
            out["watchdog"] = None
    return out


# ----------------------------------------------------------------------------- GPUs

_GPU = {}
"""The source chosen by the first request: {"kind": ..., plus its state}."""


def _replay_answer(path):
    st = _GPU.setdefault("replay:" + path, {"n": 0})
    if "recording" not in st:
        with open(path, encoding="utf-8") as f:
            st["recording"] = json.load(f)
    rec = st["recording"]
    st["n"] += 1
    if rec.get("init_error"):
        return {"source": "nvml-replay", "init_error": rec["init_error"]}
    calls = dict(rec.get("before") or {})
    if st["n"] > 1:
        calls.update(rec.get("after") or {})
    events = list(rec.get("events") or []) if st["n"] == 1 else []
    return {"source": "nvml-replay", "calls": calls, "events": events}


def _start_nvml_sampler(python):
    try:
        proc = subprocess.Popen(
            [python, "-c", NVML_SAMPLER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    except OSError as exc:
        return None, str(exc)
    first = _line(proc, SAMPLER_TIMEOUT_S)
    if not first or not first.get("ready"):
        _end(proc)
        why = (first or {}).get("init_error") or "the NVML sampler did not start"
        return None, why
    return proc, None


def _line(proc, timeout):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    raw = proc.stdout.readline()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _end(proc):
    try:
        proc.kill()
        proc.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _nvml_answer():
    proc = _GPU["proc"]
    try:
        proc.stdin.write(b"\n")
        proc.stdin.flush()
    except OSError:
        answer = None
    else:
        answer = _line(proc, SAMPLER_TIMEOUT_S)
    if answer is None:
        _end(proc)
        _GPU.clear()  # choose again next time
        return {"source": "nvml", "error": "the NVML sampler stopped answering"}
    return {"source": "nvml", **answer}


def _smi_answer():
    argv = ["nvidia-smi", "--query-gpu=" + SMI_FIELDS, "--format=csv,noheader,nounits"]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"source": "nvidia-smi", "error": str(exc)}
    if p.returncode != 0:
        return {
            "source": "nvidia-smi",
            "error": (p.stderr.decode(errors="replace").strip() or f"exit status {p.returncode}"),
        }
    return {"source": "nvidia-smi", "fields": SMI_FIELDS, "csv": p.stdout.decode(errors="replace")}


def gpu_sample(req):
    if req.get("nvml_replay"):
        return _replay_answer(req["nvml_replay"])
    if "kind" not in _GPU:
        _choose(req)
    kind = _GPU["kind"]
    if kind == "nvml":
        return _nvml_answer()
    if kind == "nvidia-smi":
        return _smi_answer()
    return {"source": "none", "why": _GPU.get("why")}


def _choose(req):
    """NVML through the venv's python, else nvidia-smi, else none (remembered for the agent's life)."""
    python = req.get("python") or "python3"
    why = []
    has_driver = os.path.isdir("/proc/driver/nvidia") or shutil.which("nvidia-smi")
    if has_driver:
        proc, err = _start_nvml_sampler(python)
        if proc is not None:
            _GPU.update(kind="nvml", proc=proc)
            return
        why.append("NVML: " + str(err))
        if shutil.which("nvidia-smi"):
            _GPU.update(kind="nvidia-smi")
            return
    else:
        why.append("no NVIDIA driver on this node")
    _GPU.update(kind="none", why="; ".join(why))


# ----------------------------------------------------------------------------- the op


def op_top(req):
    """One sample: counters, disks, jobs, GPUs. ``t`` is the node's clock, ``mono`` for rates."""
    times = os.times()
    out = {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "agent_cpu_s": times[0] + times[1],
        "t": time.time(),
        "mono": time.monotonic(),
        "ncpu": os.cpu_count(),
        "cpu": cpu_counters(),
        "load1": os.getloadavg()[0],
        "memory": memory(),
        "net": net_counters(),
        "disks": [disk_free(d["label"], d["path"]) for d in req.get("disks", [])],
        "jobs": [job_state(j) for j in req.get("jobs", [])],
    }
    try:
        out["gpu"] = gpu_sample(req)
    except Exception as exc:  # a broken GPU source must not cost the node's other figures
        out["gpu"] = {"source": "error", "error": f"{type(exc).__name__}: {exc}"}
    return out


OPS_ADDED = {"top": op_top}

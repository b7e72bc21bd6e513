"""The screen's data: node samples (as the agent answers them) folded into a :class:`Frame`.

Pure: :class:`TopState` keeps what a frame needs from earlier samples (the previous counters for
rates, the ECC counts and NVML events seen since the screen opened) and builds frames from
replies; the rendering (``launcher.top.render``) and ``--json`` read the frame only.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.node.nvml_reader import NvmlCallError, ReplayNvml, describe_error
from launcher.top import judge

SMI_NA = {"[N/A]", "N/A", "[Not Supported]", "Not Supported", ""}


@dataclass
class GpuRow:
    index: int
    name: str | None = None
    util_pct: float | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temp_c: float | None = None
    sm_mhz: float | None = None
    throttle: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    """NVML events (XIDs, double-bit ECC) seen since the screen opened, in words."""
    ecc_new: dict[str, int] = field(default_factory=dict)
    """Volatile ECC errors counted since the screen opened (corrected, uncorrected)."""


@dataclass
class JobOnNode:
    job: str
    node: str
    state: str
    exit_code: int | None = None
    steps_per_s: float | None = None
    step: float | None = None
    last_metric: str | None = None
    since_log_s: float | None = None
    straggler: str | None = None
    """Why this node holds the job back (None for the others)."""
    watchdog: str | None = None
    """The hang watchdog's verdict, on the job's first node: ``hung (dump): <suspect and evidence>``."""


@dataclass
class NodeRow:
    node: str
    host: str
    reachable: bool
    error: str | None = None
    waiting_s: float | None = None
    """A request in flight this long (the node has not answered this refresh yet)."""
    sampled_at: float | None = None
    """The node's clock when it took the sample shown."""
    cpu_pct: float | None = None
    load1: float | None = None
    ncpu: int | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    disks: list[dict[str, Any]] = field(default_factory=list)
    rx_bps: float | None = None
    tx_bps: float | None = None
    gpu_source: str | None = None
    gpu_note: str | None = None
    gpus: list[GpuRow] = field(default_factory=list)
    jobs: list[JobOnNode] = field(default_factory=list)


@dataclass
class Frame:
    t: float
    nodes: list[NodeRow]
    stragglers: dict[str, str] = field(default_factory=dict)
    """job -> node marked straggler."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- GPUs from a sample


def _call(source: ReplayNvml, fn: str, *args: int) -> Any:
    try:
        return source.call(fn, *args)
    except NvmlCallError:
        return None


def gpus_from_nvml(calls: dict[str, Any]) -> list[GpuRow]:
    """GPU rows from NVML answers in the recording format (``nvmlDeviceGetName(0)`` -> value)."""
    src = ReplayNvml(calls)
    count = _call(src, "nvmlDeviceGetCount")
    rows = []
    for i in range(count if isinstance(count, int) else 0):
        mem = _call(src, "nvmlDeviceGetMemoryInfo", i)
        util = _call(src, "nvmlDeviceGetUtilizationRates", i)
        power = _call(src, "nvmlDeviceGetPowerUsage", i)
        limit = _call(src, "nvmlDeviceGetEnforcedPowerLimit", i)
        reasons = _call(src, "nvmlDeviceGetCurrentClocksEventReasons", i)
        if reasons is None:
            reasons = _call(src, "nvmlDeviceGetCurrentClocksThrottleReasons", i)
        rows.append(
            GpuRow(
                index=i,
                name=_call(src, "nvmlDeviceGetName", i),
                util_pct=util.get("gpu") if isinstance(util, dict) else None,
                mem_used=mem.get("used") if isinstance(mem, dict) else None,
                mem_total=mem.get("total") if isinstance(mem, dict) else None,
                power_w=power / 1000 if isinstance(power, (int, float)) else None,
                power_limit_w=limit / 1000 if isinstance(limit, (int, float)) else None,
                temp_c=_call(src, "nvmlDeviceGetTemperature", i, 0),
                sm_mhz=_call(src, "nvmlDeviceGetClockInfo", i, 1),
                throttle=judge.clock_reasons_words(reasons),
            )
        )
    return rows


def nvml_ecc(calls: dict[str, Any], index: int) -> dict[str, int | None]:
    """Volatile ECC totals of one GPU (corrected, uncorrected) from NVML answers."""
    src = ReplayNvml(calls)
    out = {}
    for kind, code in (("corrected", 0), ("uncorrected", 1)):
        v = _call(src, "nvmlDeviceGetTotalEccErrors", index, code, 0)
        out[kind] = v if isinstance(v, int) else None
    return out


def _smi_number(text: str) -> float | None:
    text = text.strip()
    if text in SMI_NA:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_smi(csv_text: str) -> tuple[list[GpuRow], dict[int, dict[str, int | None]]]:
    """``nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits`` -> rows and ECC totals."""
    rows, ecc = [], {}
    mib = 1024 * 1024
    for line in csv_text.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 12 or not cols[0].isdigit():
            continue
        n = [_smi_number(c) for c in cols]
        reasons = int(cols[9], 16) if cols[9].lower().startswith("0x") else None
        index = int(cols[0])
        rows.append(
            GpuRow(
                index=index,
                name=cols[1],
                util_pct=n[2],
                mem_used=int(n[3] * mib) if n[3] is not None else None,
                mem_total=int(n[4] * mib) if n[4] is not None else None,
                power_w=n[5],
                power_limit_w=n[6],
                temp_c=n[7],
                sm_mhz=n[8],
                throttle=judge.clock_reasons_words(reasons),
            )
        )
        ecc[index] = {
            "corrected": None if n[10] is None else int(n[10]),
            "uncorrected": None if n[11] is None else int(n[11]),
        }
    return rows, ecc


def gpus_from_sample(
    gpu: dict[str, Any],
) -> tuple[list[GpuRow], dict[int, dict[str, int | None]], list[dict[str, Any]], str | None]:
    """(rows, ECC totals per GPU, new NVML events, a note for people) from the sample's ``gpu`` part."""
    source = gpu.get("source")
    if gpu.get("init_error"):
        return [], {}, [], describe_error(gpu["init_error"])
    if gpu.get("error"):
        return [], {}, [], f"{source}: {gpu['error']}"
    if source in ("nvml", "nvml-replay"):
        calls = gpu.get("calls") or {}
        rows = gpus_from_nvml(calls)
        return rows, {r.index: nvml_ecc(calls, r.index) for r in rows}, list(gpu.get("events") or []), None
    if source == "nvidia-smi":
        rows, ecc = parse_smi(gpu.get("csv") or "")
        return rows, ecc, [], None
    return [], {}, [], gpu.get("why") or "no GPUs"


# ----------------------------------------------------------------------------- folding samples


@dataclass
class JobSpec:
    """A job to follow on one node: where its files are."""

    name: str
    node: str
    state_dir: str
    log: str
    metrics: str
    watchdog: str = ""
    """The watchdog's ``state.json`` (on the job's first node, where its leader writes it), else empty."""

    def request(self) -> dict[str, str]:
        return {
            "name": self.name,
            "state_dir": self.state_dir,
            "log": self.log,
            "metrics": self.metrics,
            "watchdog": self.watchdog,
        }


@dataclass
class _NodeMemory:
    previous: dict[str, Any] | None = None
    ecc_baseline: dict[int, dict[str, int | None]] = field(default_factory=dict)
    events: dict[int, list[str]] = field(default_factory=dict)
    last: NodeRow | None = None


class TopState:
    """What the screen remembers between refreshes, per node."""

    def __init__(self) -> None:
        self._mem: dict[str, _NodeMemory] = {}

    def update(self, node: str, host: str, sample: dict[str, Any] | None, error: str | None = None) -> NodeRow:
        """Fold one node's reply (or its error) in; returns the node's row."""
        mem = self._mem.setdefault(node, _NodeMemory())
        if sample is None:
            row = NodeRow(node, host, reachable=False, error=error or "no answer")
            if mem.last is not None:  # keep the jobs' last known figures visible, marked by the node state
                row.jobs = [JobOnNode(j.job, j.node, "unknown", last_metric=j.last_metric) for j in mem.last.jobs]
            mem.previous = None  # rates restart from the next answer
            mem.last = row
            return row
        row = self._row(node, host, sample, mem)
        mem.previous, mem.last = sample, row
        return row

    def waiting(self, node: str, host: str, seconds: float) -> NodeRow:
        """The node's last row, marked as not answered for ``seconds`` (the request still runs)."""
        mem = self._mem.get(node)
        if mem is None or mem.last is None:
            return NodeRow(node, host, reachable=True, waiting_s=seconds)
        return NodeRow(**{**asdict_shallow(mem.last), "waiting_s": seconds})

    def _row(self, node: str, host: str, s: dict[str, Any], mem: _NodeMemory) -> NodeRow:
        prev = mem.previous
        dt = (s["mono"] - prev["mono"]) if prev else 0.0
        memory = s.get("memory") or {}
        total, avail = memory.get("total"), memory.get("available")
        row = NodeRow(
            node,
            host,
            reachable=True,
            sampled_at=s.get("t"),
            load1=s.get("load1"),
            ncpu=s.get("ncpu"),
            cpu_pct=judge.cpu_busy_percent(prev.get("cpu") if prev else None, s.get("cpu")),
            mem_total=total,
            mem_used=(total - avail) if total is not None and avail is not None else None,
            disks=[{k: d.get(k) for k in ("label", "path", "free", "total", "error")} for d in s.get("disks", [])],
            rx_bps=judge.net_rate(prev.get("net") if prev else None, s.get("net"), dt, 0),
            tx_bps=judge.net_rate(prev.get("net") if prev else None, s.get("net"), dt, 1),
        )
        gpu = s.get("gpu") or {}
        rows, ecc, events, note = gpus_from_sample(gpu)
        row.gpu_source, row.gpu_note = gpu.get("source"), note
        for e in events:
            mem.events.setdefault(int(e.get("gpu", -1)), []).append(judge.event_words(e))
        for g in rows:
            base = mem.ecc_baseline.setdefault(g.index, ecc.get(g.index, {}))
            now = ecc.get(g.index, {})
            g.ecc_new = {
                k: now[k] - base[k]
                for k in ("corrected", "uncorrected")
                if isinstance(now.get(k), int) and isinstance(base.get(k), int) and now[k] > base[k]
            }
            g.events = list(mem.events.get(g.index, []))
        row.gpus = rows
        for j in s.get("jobs", []):
            records = j.get("metrics") or []
            log_mtime = j.get("log_mtime")
            steps = judge.step_points(records)
            row.jobs.append(
                JobOnNode(
                    job=j["name"],
                    node=node,
                    state=j.get("state", "missing"),
                    exit_code=j.get("exit_code"),
                    steps_per_s=judge.step_rate(records) if j.get("state") == "running" else None,
                    step=steps[-1][1] if steps else None,
                    last_metric=judge.last_metric(records),
                    since_log_s=max(0.0, s["t"] - log_mtime) if isinstance(log_mtime, (int, float)) else None,
                    watchdog=watchdog_line(j.get("watchdog")),
                )
            )
        return row


def watchdog_line(state: Any) -> str | None:
    """``hung (dump): n2 rank 1: process 9 is stopped`` from the watchdog's state file, None while it watches."""
    if not isinstance(state, dict) or state.get("state") not in ("hung", "restarting"):
        return None
    evidence = "; ".join(state.get("evidence") or []) or "no rank stands out"
    how = state.get("action", "restart" if state.get("state") == "restarting" else "dump")
    return f"{state['state']} ({how}): {evidence}"


def asdict_shallow(row: NodeRow) -> dict[str, Any]:
    return {f: getattr(row, f) for f in row.__dataclass_fields__}


def mark_stragglers(nodes: list[NodeRow]) -> dict[str, str]:
    """Mark, per job running on several nodes, the node holding it back; returns job -> node."""
    by_job: dict[str, list[tuple[NodeRow, JobOnNode]]] = {}
    for n in nodes:
        for j in n.jobs:
            by_job.setdefault(j.job, []).append((n, j))
    marked = {}
    for n in nodes:
        for j in n.jobs:
            j.straggler = None  # a row carried over from an earlier frame starts unmarked
    for job, pairs in by_job.items():
        running = [(n, j) for n, j in pairs if j.state == "running"]
        rates = {n.node: j.steps_per_s for n, j in running}
        utils = {
            n.node: (
                statistics.fmean(g.util_pct for g in n.gpus if g.util_pct is not None)
                if any(g.util_pct is not None for g in n.gpus)
                else None
            )
            for n, _ in running
        }
        verdict = judge.straggler(rates, utils)
        if verdict:
            node, why = verdict
            for n, j in running:
                if n.node == node:
                    j.straggler = why
            marked[job] = node
    return marked


def drop_finished(nodes: list[NodeRow]) -> list[NodeRow]:
    """Leave out jobs that have ended on every node that answered (jobs found running, not named:
    a run record keeps saying "running" after its job ended)."""
    ended = {}
    for n in nodes:
        for j in n.jobs:
            if n.reachable:
                ended[j.job] = ended.get(j.job, True) and j.state in ("exited", "missing")
    out = []
    for n in nodes:
        kept = [j for j in n.jobs if not ended.get(j.job, False)]
        out.append(n if len(kept) == len(n.jobs) else NodeRow(**{**asdict_shallow(n), "jobs": kept}))
    return out

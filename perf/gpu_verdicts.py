"""Pure parts of the GPU acceptance run (``perf/gpu_check.py``): figures, bars, verdicts and the summary.

Every figure is a value with the baseline it is judged against and the bar; a step's status
follows from its figures and its exit code. Nothing here runs anything, so all of it is tested
on CPU (tests/test_gpu_check.py) against hand-made step outputs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.node.judge import SPEED_PASS_SHARE, SPEED_WARN_SHARE
from perf import overhead_stats as ost

PASS, FAIL, SKIP, INFO = "pass", "fail", "skip", "info"
RESULT_FORMAT = "corral-gpu-check/1"

ANCHORS = {
    # Measured on these machines (bf16 8192^3 matmul on random data, device copy counting bytes read
    # + written), see docs/GPU_CHECK.md; bench node must come within ANCHOR_BAR of them.
    "H100 80GB HBM3": {"gemm_bf16": 790.0, "device_copy": 3000.0},
    "H200": {"gemm_bf16": 788.0, "device_copy": 4300.0},
}
ANCHOR_BAR = 0.05
NODE_OVERHEAD_BAR = 0.05
ALLREDUCE_OVERHEAD_BAR = 0.03
CKPT_BLOCKED_BAR = 0.02
CKPT_STEP_BAR = 0.05
CKPT_SYNC_VS_RAW = 0.9
SPEC_BAR = f">= {SPEED_PASS_SHARE:g} x typical (warn below, fail below {SPEED_WARN_SHARE:g})"
SPEED_METRICS = ("gemm_bf16", "gemm_fp16", "gemm_tf32", "device_copy", "h2d", "d2h")
UNITS = {
    "gemm_bf16": "TFLOP/s",
    "gemm_fp16": "TFLOP/s",
    "gemm_tf32": "TFLOP/s",
    "device_copy": "GB/s",
    "h2d": "GB/s",
    "d2h": "GB/s",
}


@dataclass
class Figure:
    """One measured number, what it is compared with, and the verdict."""

    name: str
    value: Any
    unit: str = ""
    baseline: Any = None
    baseline_what: str = ""
    bar: str = ""
    verdict: str = INFO
    note: str = ""


@dataclass
class StepResult:
    name: str
    title: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    budget_s: float = 0.0
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def skipped(name: str, title: str, reason: str, budget_s: float = 0.0) -> StepResult:
    return StepResult(name, title, SKIP, reason=reason, budget_s=budget_s)


def at_least(
    name: str, value: Any, baseline: Any, ratio: float, *, unit: str = "", what: str = "", note: str = ""
) -> Figure:
    """Pass when ``value >= ratio * baseline`` (a missing or non-numeric value fails)."""
    ok = _num(value) and _num(baseline) and value >= ratio * baseline
    return Figure(name, value, unit, baseline, what, f">= {ratio:g} x baseline", PASS if ok else FAIL, note)


def at_most(
    name: str, value: Any, baseline: Any, ratio: float, *, unit: str = "", what: str = "", note: str = ""
) -> Figure:
    """Pass when ``value <= ratio * baseline``."""
    ok = _num(value) and _num(baseline) and value <= ratio * baseline
    return Figure(name, value, unit, baseline, what, f"<= {ratio:g} x baseline", PASS if ok else FAIL, note)


def equals(name: str, value: Any, expected: Any, *, note: str = "") -> Figure:
    return Figure(name, value, "", expected, "expected", "equal", PASS if value == expected else FAIL, note)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def step_status(figures: list[Figure], rc: int | None, timed_out: bool = False) -> tuple[str, str]:
    """(status, reason): fail on a timeout, a non-zero exit or any failed figure; else pass."""
    if timed_out:
        return FAIL, "ran past its time budget and was stopped"
    bad = [f.name for f in figures if f.verdict == FAIL]
    if rc not in (0, None):
        return FAIL, f"exit code {rc}" + (f"; failed: {', '.join(bad)}" if bad else "")
    if bad:
        return FAIL, "failed: " + ", ".join(bad)
    return PASS, ""


# ---- step judges ------------------------------------------------------------------


def judge_junit(xml_text: str) -> list[Figure]:
    """pytest's junit XML: on a GPU machine every gpu test must run and pass (a skip is a failure there)."""
    root = ET.fromstring(xml_text)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    skips = [
        f"{c.get('classname')}::{c.get('name')}: {s.get('message', '')}"
        for c in root.iter("testcase")
        for s in c.findall("skipped")
    ]
    return [
        at_least("gpu tests passed", passed, 1, 1.0, what="at least one"),
        equals("gpu tests failed or errored", n["failures"] + n["errors"], 0),
        equals("gpu tests skipped", n["skipped"], 0, note="; ".join(skips)[:500]),
    ]


def anchor_for(gpu_name: str | None) -> dict[str, float] | None:
    name = (gpu_name or "").removeprefix("NVIDIA ").strip()
    for key, anchor in ANCHORS.items():
        if name == key or name.startswith(key + " ") or (key == "H200" and name.startswith("H200")):
            return anchor
    return None


def judge_node_report(report: dict[str, Any]) -> list[Figure]:
    """bench node's JSON report: every figure judged against the spec table (the report's own checks),
    bf16 GEMM and device copy against the figures measured on this kind of machine, no failed check."""
    figures = []
    for node in report.get("nodes", []):
        for check in node.get("checks", []):
            if check.get("status") == "fail":
                figures.append(
                    Figure(
                        f"node check {check.get('name')}",
                        check.get("value"),
                        verdict=FAIL,
                        note=str(check.get("reason", "")),
                    )
                )
        for gpu in node.get("gpus", []):
            g = f"gpu{gpu.get('index')}"
            checks = {c.get("name"): c for c in gpu.get("checks", [])}
            speed = gpu.get("speed") or {}
            for metric in SPEED_METRICS:
                c = checks.get(metric, {})
                verdict = {"pass": PASS, "fail": FAIL, "warn": INFO}.get(c.get("status"), INFO)
                figures.append(
                    Figure(
                        f"{g} {metric}",
                        speed.get(metric),
                        UNITS[metric],
                        c.get("expected"),
                        "typical, spec table (bench node's own check)",
                        SPEC_BAR,
                        verdict,
                        ": ".join(str(x) for x in (c.get("status", "-"), c.get("reason")) if x),
                    )
                )
            anchor = anchor_for(gpu.get("name"))
            for metric, ref in (anchor or {}).items():
                figures.append(
                    at_least(
                        f"{g} {metric} vs anchor",
                        speed.get(metric),
                        ref,
                        1 - ANCHOR_BAR,
                        unit=UNITS[metric],
                        what=f"measured on {gpu.get('name')} (docs/GPU_CHECK.md)",
                    )
                )
            if anchor is None:
                figures.append(
                    Figure(
                        f"{g} anchor",
                        gpu.get("name"),
                        note="no anchor figures for this model: judged against the spec table only",
                    )
                )
            for name, c in checks.items():
                if name not in SPEED_METRICS and c.get("status") == "fail":
                    figures.append(
                        Figure(f"{g} check {name}", c.get("value"), verdict=FAIL, note=str(c.get("reason", "")))
                    )
    if not any(f.name.startswith("gpu") for f in figures):
        figures.append(Figure("gpus in report", 0, verdict=FAIL, note="bench node reported no GPU"))
    return figures


def judge_allreduce(result: dict[str, Any]) -> list[Figure]:
    """bench allreduce on one GPU: NCCL, CUDA-event timing, exact data, busbw 0 (one rank moves nothing)."""
    env, rows = result.get("env", {}), result.get("rows", [])
    world = result.get("world_size")
    figures = [
        equals("backend", env.get("backend"), "nccl"),
        equals("timing", env.get("timing"), "cuda-events"),
        equals("wrong elements (all rows)", sum(int(r.get("wrong", 0)) for r in rows), 0),
        at_least("rows", len(rows), 2, 1.0, what="at least two sizes"),
    ]
    times_ok = all(
        _num(r.get("time_us")) and r["time_us"] > 0 and r.get("min_us", 0) <= r.get("p50_us", 0) <= r.get("max_us", 0)
        for r in rows
    )
    figures.append(
        Figure("times positive and ordered (min <= p50 <= max)", times_ok, verdict=PASS if times_ok and rows else FAIL)
    )
    if world == 1:
        busbw = max((r.get("busbw_gbps", 0) for r in rows), default=0)
        figures.append(
            equals("busbw at world size 1", busbw, 0, note="2(n-1)/n = 0: one rank moves no data over any link")
        )
    big = [r for r in rows if r.get("size_bytes", 0) >= 64 << 20]
    for r in big[-2:]:
        figures.append(
            Figure(
                f"algbw {r['size_bytes'] >> 20} MiB {'in' if r.get('inplace') else 'out-of'}-place",
                r.get("algbw_gbps"),
                "GB/s",
                note="world size 1: NCCL's one-rank path, no network",
            )
        )
    return figures


def judge_checkpoint(result: dict[str, Any]) -> list[Figure]:
    """Async checkpoint of a CUDA state during training against a sync save and a raw write + fsync."""
    sync_s, raw_s = result.get("sync_s"), result.get("raw_s")
    figures = [
        at_least(
            "sync save throughput vs raw write+fsync",
            _ratio(raw_s, sync_s),
            1.0,
            CKPT_SYNC_VS_RAW,
            what="raw write + fsync of the same bytes (ratio raw_s / sync_s)",
        ),
    ]
    for mode in ("background", "now"):
        m = result.get("async", {}).get(mode)
        if not m:
            continue
        strict = mode == "background"  # the CUDA path the docs recommend; "now" is recorded alongside
        blocked = at_most(
            f"async[{mode}] blocked time",
            m.get("blocked_s"),
            sync_s,
            CKPT_BLOCKED_BAR,
            unit="s",
            what="synchronous save of the same state",
        )
        steps = at_most(
            f"async[{mode}] step time during the save",
            m.get("step_during_s"),
            m.get("step_without_s"),
            1 + CKPT_STEP_BAR,
            unit="s",
            what="step time without a save (same run, interleaved)",
        )
        exact = equals(f"async[{mode}] data round-trips bit-exactly", m.get("bit_exact"), True)
        for f in (blocked, steps):
            if not strict and f.verdict == FAIL:
                f.verdict, f.note = INFO, "recorded: the default snapshot orders the next step after the copy"
        figures += [blocked, steps, exact]
    return figures


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 4) if _num(a) and _num(b) and b > 0 else None


def judge_launch(record: dict[str, Any] | None, log_text: str, checkpoint_steps: list[int]) -> list[Figure]:
    backend = ((record or {}).get("plan") or {}).get("backend")
    return [
        equals("backend chosen by auto", backend, "nccl"),
        Figure(
            "trained on the GPU (log says 'ready on cuda:')",
            "ready on cuda:" in log_text,
            verdict=PASS if "ready on cuda:" in log_text else FAIL,
        ),
        at_least(
            "checkpoints written", len(checkpoint_steps), 1, 1.0, what="at least one", note=f"steps {checkpoint_steps}"
        ),
    ]


def judge_node_overhead(result: dict[str, Any]) -> list[Figure]:
    """bench node's GEMM and copy against plain loops timed with CUDA events in the same run."""
    out = []
    for metric, r in result.get("pairs", {}).items():
        out.append(
            at_least(
                f"bench node {metric} vs plain loop",
                r.get("harness"),
                r.get("plain"),
                1 - NODE_OVERHEAD_BAR,
                unit=r.get("unit", ""),
                what=r.get("plain_what", "plain loop, CUDA events"),
                note=f"medians of {r.get('rounds')} interleaved rounds",
            )
        )
        high = at_most(
            f"bench node {metric} not above plain loop",
            r.get("harness"),
            r.get("plain"),
            1 + NODE_OVERHEAD_BAR,
            unit=r.get("unit", ""),
            what="plain loop",
        )
        out.append(high)
    return out or [Figure("pairs", 0, verdict=FAIL, note="no figures")]


def judge_allreduce_overhead(result: dict[str, Any]) -> list[Figure]:
    """allreduce_overhead at >= 64 MiB: the harness's time within 3% of a bare dist.all_reduce loop."""
    out = []
    for row in result.get("rows", []):
        if row.get("size_bytes", 0) < 64 << 20:
            continue
        for name in ("inplace_vs_bare", "outofplace_vs_bare"):
            c = row.get("comparisons", {}).get(name)
            if c is None:
                continue
            lo, hi = c["ci95"]
            ok = c["verdict"] == ost.WITHIN
            out.append(
                Figure(
                    f"all-reduce {name} {row['size_bytes'] >> 20} MiB",
                    round(c["estimate"], 4),
                    "ratio",
                    1.0,
                    "bare dist.all_reduce loop",
                    f"95% CI in [{1 - ALLREDUCE_OVERHEAD_BAR:g}, {1 + ALLREDUCE_OVERHEAD_BAR:g}]",
                    PASS if ok else FAIL,
                    f"CI [{lo:.4f}, {hi:.4f}]: {c['verdict']}",
                )
            )
    return out or [Figure("rows at >= 64 MiB", 0, verdict=FAIL, note="no comparison at >= 64 MiB")]


# ---- summary ----------------------------------------------------------------------


INCOMPLETE = "incomplete"


def overall(steps: list[StepResult], *, gpu_expected: bool = True) -> str:
    """fail if any step failed; ``incomplete`` if a step was skipped where all should run (no GPU
    found without --cpu-only); else pass (the CPU path passes with its GPU steps skipped)."""
    if any(s.status == FAIL for s in steps):
        return FAIL
    if gpu_expected and any(s.status == SKIP for s in steps):
        return INCOMPLETE
    return PASS if any(s.status == PASS for s in steps) else SKIP


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.0f}"
    return "-" if x is None or x == "" else str(x).replace("|", "/").replace("\n", " ")


def render_markdown(doc: dict[str, Any]) -> str:
    """The short summary: machine and versions, one line per step, every figure with its baseline and verdict."""
    env = doc.get("environment", {})
    lines = [
        f"# GPU acceptance run {doc.get('started', '')}: {doc.get('status', '').upper()}",
        "",
        f"- GPU: {env.get('gpu_name') or 'none'} (driver {env.get('driver') or '-'}, {env.get('gpu_count', 0)} visible)",
        f"- torch {env.get('torch') or '-'}, CUDA {env.get('cuda') or '-'}, NCCL {env.get('nccl') or '-'}, Python {env.get('python') or '-'}",
        f"- checkpoint disk (runs/): {env.get('checkpoint_disk') or '-'}",
        f"- host {env.get('hostname', '-')}; command: `{doc.get('command', '')}`; {doc.get('seconds', 0):.0f} s of {doc.get('budget_s', 0):.0f} s",
        "",
        "| step | status | seconds (budget) | reason |",
        "|---|---|---|---|",
    ]
    steps = doc.get("steps", [])
    for s in steps:
        lines.append(
            f"| {s['name']} | {s['status']} | {s['seconds']:.1f} ({s['budget_s']:.0f}) | {_cell(s['reason'])} |"
        )
    for s in steps:
        if not s["figures"]:
            continue
        lines += [
            "",
            f"## {s['title']}",
            "",
            "| figure | value | unit | baseline | bar | verdict | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in s["figures"]:
            base = _cell(f["baseline"]) + (f" ({f['baseline_what']})" if f["baseline_what"] else "")
            lines.append(
                f"| {_cell(f['name'])} | {_cell(f['value'])} | {_cell(f['unit'])} | {base} | {_cell(f['bar'])} | "
                f"{f['verdict']} | {_cell(f['note'])[:200]} |"
            )
    lines += ["", ONE_GPU_NOTE]
    return "\n".join(lines) + "\n"


ONE_GPU_NOTE = (
    "What one GPU cannot show: all-reduce bandwidth (at world size 1 NCCL moves nothing over any link and busbw is "
    "0 by definition), NCCL's ring/tree algorithms, NVLink and the network, peer comparison between GPUs, and a "
    "multi-node rendezvous; see docs/GPU_CHECK.md."
)

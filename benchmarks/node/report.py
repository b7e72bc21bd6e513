"""The node report: one row per node and GPU for people, and the JSON document for machines."""

from __future__ import annotations

from typing import Any

from benchmarks.node.judge import FAIL, PASS, SEVERITY, SKIP, WARN, summarize

REPORT_FORMAT = "corral-bench-node/1"
STYLE = {PASS: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}


def build_report(nodes: list[dict[str, Any]], *, quick: bool, cluster: str | None = None) -> dict[str, Any]:
    """The ``--json`` document: ``{"format", "summary", "nodes": [{"host", "gpus": [{..., "checks"}], "checks", "speed"}]}``."""
    return {"format": REPORT_FORMAT, "cluster": cluster, "quick": quick, "summary": summarize(nodes), "nodes": nodes}


def _fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.{digits}f}"
    return "-"


def _problems(checks: list[dict[str, Any]]) -> str:
    bad = [c for c in checks if c["status"] in (FAIL, WARN)]
    bad.sort(key=lambda c: c["status"] != FAIL)
    return "\n".join(f"{c['status']}: {c['reason']}" for c in bad)


def _counts(checks: list[dict[str, Any]]) -> str:
    n = {s: sum(c["status"] == s for c in checks) for s in (FAIL, WARN, PASS)}
    return ", ".join(f"{v} {k}" for k, v in n.items() if v) or "-"


COLUMNS = {
    # key: (header, justify); GPU columns show when any node has GPUs, CPU columns when any node has none.
    "node": ("node", "left"),
    "gpu": ("gpu", "right"),
    "model": ("model", "left"),
    "status": ("status", "left"),
    "bf16": ("bf16 TFLOP/s", "right"),
    "copy": ("copy GB/s", "right"),
    "h2d": ("H2D GB/s", "right"),
    "cpu_gemm": ("CPU GEMM GFLOP/s", "right"),
    "cpu_copy": ("CPU copy GB/s", "right"),
    "counts": ("checks", "left"),
}
GPU_COLUMNS = ("gpu", "model", "bf16", "copy", "h2d")
CPU_COLUMNS = ("cpu_gemm", "cpu_copy")


def table_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Plain rows, one per node and GPU (a node without GPUs: one row): what the table shows, testable without rich."""
    rows = []
    for node in report["nodes"]:
        cpu = (node.get("speed") or {}).get("cpu") or {}
        node_problems = _problems(node["checks"])
        base = {
            "node": node["host"],
            "cpu_gemm": _fmt(cpu.get("gemm_fp32_gflops"), 1),
            "cpu_copy": _fmt(cpu.get("memcopy_gbps"), 1),
        }
        if not node["gpus"]:
            rows.append(
                {
                    **base,
                    "gpu": "-",
                    "model": "no GPU",
                    "status": node["status"],
                    "bf16": "-",
                    "copy": "-",
                    "h2d": "-",
                    "counts": _counts(node["checks"]),
                    "problems": node_problems,
                }
            )
        for i, gpu in enumerate(node["gpus"]):
            sp = gpu.get("speed") or {}
            rows.append(
                {
                    **base,
                    "gpu": str(gpu["index"]),
                    "model": str(gpu.get("name")).removeprefix("NVIDIA "),
                    "status": gpu["status"],
                    "bf16": _fmt(sp.get("gemm_bf16")),
                    "copy": _fmt(sp.get("device_copy")),
                    "h2d": _fmt(sp.get("h2d"), 1),
                    "counts": _counts(gpu["checks"] + (node["checks"] if i == 0 else [])),
                    "problems": "\n".join(p for p in (_problems(gpu["checks"]), node_problems if i == 0 else "") if p),
                }
            )
    return rows


def visible_columns(report: dict[str, Any]) -> list[str]:
    any_gpu = any(n["gpus"] for n in report["nodes"])
    any_cpu_only = any(not n["gpus"] for n in report["nodes"])
    return [k for k in COLUMNS if (k not in GPU_COLUMNS or any_gpu) and (k not in CPU_COLUMNS or any_cpu_only)]


def reason_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(line, status) for every failing or warning check, worst first; skip notes shared by nodes are said once."""
    lines: list[tuple[int, str, str]] = []
    skips: dict[tuple[str, str], list[str]] = {}
    for node in report["nodes"]:
        for c in node["checks"]:
            if c["status"] in (FAIL, WARN):
                lines.append((-SEVERITY[c["status"]], f"{node['host']}: {c['status']}: {c['reason']}", c["status"]))
            elif c["status"] == SKIP and c["reason"]:
                skips.setdefault((c["name"], c["reason"]), []).append(node["host"])
        for gpu in node["gpus"]:
            for c in gpu["checks"]:
                if c["status"] in (FAIL, WARN):
                    lines.append(
                        (
                            -SEVERITY[c["status"]],
                            f"{node['host']} GPU {gpu['index']}: {c['status']}: {c['reason']}",
                            c["status"],
                        )
                    )
    lines.sort(key=lambda x: x[0])  # stable: node order kept within a severity
    out = [(text, status) for _, text, status in lines]
    n = len(report["nodes"])
    for (_, reason), hosts in skips.items():
        who = ("every node" if n > 1 else hosts[0]) if len(hosts) == n else ", ".join(hosts)
        out.append((f"{who}: skip: {reason}", SKIP))
    return out


def render_table(report: dict[str, Any], console) -> None:
    from rich.table import Table

    if not console.is_terminal:
        console.width = max(console.width, 132)  # files and pipes: do not fold the table to 80 columns
    table = Table(
        title="corral bench node" + (" (--quick: no speed tests)" if report["quick"] else ""), show_lines=False
    )
    cols = visible_columns(report)
    for key in cols:
        header, justify = COLUMNS[key]
        table.add_column(header, justify=justify, overflow="fold")
    for r in table_rows(report):
        r = {**r, "status": f"[{STYLE[r['status']]}]{r['status']}[/]"}
        table.add_row(*(r[k] for k in cols))
    console.print(table)
    # Reasons go below the table, one per line, so that no terminal width cuts them.
    for line, status in reason_lines(report):
        console.print(f"[{STYLE[status]}]{line}[/]")
    s = report["summary"]
    console.print(
        f"{s['nodes']} node(s), {s['gpus']} GPU(s): [{STYLE[s['status']]}]{s['status']}[/]"
        + (f" (failed: {', '.join(s['failed_nodes'])})" if s["failed_nodes"] else "")
    )

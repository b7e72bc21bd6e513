"""The node report: one row per node and GPU for people, and the JSON document for machines."""

from __future__ import annotations

from typing import Any

from benchmarks.node.judge import FAIL, PASS, SKIP, WARN, summarize

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


def table_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Plain rows (node, gpu, model, status, figures, problems): what the table shows, testable without rich."""
    rows = []
    for node in report["nodes"]:
        cpu = (node.get("speed") or {}).get("cpu") or {}
        node_problems = _problems(node["checks"])
        if not node["gpus"]:
            rows.append({
                "node": node["host"], "gpu": "-", "model": "no GPU", "status": node["status"],
                "bf16": "-", "copy": "-", "h2d": "-",
                "cpu": f"{_fmt(cpu.get('gemm_fp32_gflops'), 1)} GFLOP/s, {_fmt(cpu.get('memcopy_gbps'), 1)} GB/s" if cpu else "-",
                "problems": node_problems,
            })
        for i, gpu in enumerate(node["gpus"]):
            sp = gpu.get("speed") or {}
            rows.append({
                "node": node["host"], "gpu": str(gpu["index"]), "model": str(gpu.get("name")), "status": gpu["status"],
                "bf16": _fmt(sp.get("gemm_bf16")), "copy": _fmt(sp.get("device_copy")), "h2d": _fmt(sp.get("h2d"), 1),
                "cpu": "-",
                "problems": "\n".join(p for p in (_problems(gpu["checks"]), node_problems if i == 0 else "") if p),
            })
    return rows


def render_table(report: dict[str, Any], console) -> None:
    from rich.table import Table

    table = Table(title="corral bench node" + (" (--quick: no speed tests)" if report["quick"] else ""), show_lines=True)
    for col, justify in (("node", "left"), ("gpu", "right"), ("model", "left"), ("status", "left"), ("bf16 TFLOP/s", "right"),
                         ("copy GB/s", "right"), ("H2D GB/s", "right"), ("CPU", "right"), ("problems", "left")):
        table.add_column(col, justify=justify)
    for r in table_rows(report):
        status = f"[{STYLE[r['status']]}]{r['status']}[/]"
        table.add_row(r["node"], r["gpu"], r["model"], status, r["bf16"], r["copy"], r["h2d"], r["cpu"], r["problems"] or "")
    console.print(table)
    for node in report["nodes"]:
        notes = [c for c in node["checks"] if c["status"] == SKIP and c["reason"]]
        for c in notes:
            console.print(f"[dim]{node['host']}: {c['name']}: {c['reason']}[/]")
    s = report["summary"]
    console.print(f"{s['nodes']} node(s), {s['gpus']} GPU(s): [{STYLE[s['status']]}]{s['status']}[/]"
                  + (f" (failed: {', '.join(s['failed_nodes'])})" if s["failed_nodes"] else ""))

"""report.html: one self-contained file that opens offline: the verdict, a bar chart per figure (every node,
the peers' median and the outlier floor drawn), the node x node network heat map, all-reduce bus bandwidth
against message size. Pure: a function of report.json; plots are inline SVG, no script, no stylesheet or
font from anywhere else (tests load it in headless chromium and check that nothing is fetched)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from benchmarks.cluster.judge import FIGURES, fmt, peer_stats

COLOURS = {"pass": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828"}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1.pass{color:#2e7d32}h1.fail{color:#c62828}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
.pass{color:#2e7d32}.warn{color:#ef6c00}.fail{color:#c62828}
svg text{font-size:11px;font-family:system-ui,sans-serif}
.chart{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
"""


def _bars(key: str, values: dict[str, float], verdicts: dict[str, str], threshold: float, z: float) -> str:
    label, unit = FIGURES[key]
    width, row, left = 420, 18, 110
    height = row * len(values) + 40
    top = max(values.values()) or 1.0
    # network figures are judged per pair (localize.py), not against a per-node floor: draw none for them
    stats = None if key.startswith("net_") else peer_stats(list(values.values()), threshold, z)

    def x(v: float) -> float:
        return left + (width - left - 50) * v / top  # room for the value printed after the longest bar

    out = [f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{escape(label)}">']
    out.append(f'<text x="0" y="12" font-weight="bold">{escape(label)} ({escape(unit)})</text>')
    for i, (node, v) in enumerate(values.items()):
        y = 22 + i * row
        colour = COLOURS.get(verdicts.get(node, "pass"), "#555")
        out.append(f'<text x="0" y="{y + 12}">{escape(node)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{x(v) - left:.1f}" height="{row - 4}" fill="{colour}"/>')
        out.append(f'<text x="{x(v) + 3:.1f}" y="{y + 12}">{escape(fmt(v))}</text>')
    if stats is not None:
        bottom = 22 + len(values) * row
        for name, v, dash in (("median", stats.median, ""), ("floor", stats.floor, ' stroke-dasharray="4 3"')):
            out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="18" y2="{bottom}" stroke="#000"{dash}/>')
            out.append(f'<text x="{x(v) + 2:.1f}" y="{bottom + 12}">{name} {escape(fmt(v))}</text>')
    out.append("</svg>")
    return "".join(out)


def _heat(matrix: dict[str, dict[str, float | None]], order: list[str]) -> str:
    cell, left, top_pad = 44, 110, 110
    size = cell * len(order)
    vals = [v for a in order for b in order if a != b and isinstance(v := matrix.get(a, {}).get(b), (int, float))]
    hi = max(vals) if vals else 1.0
    out = [f'<svg width="{left + size + 10}" height="{top_pad + size + 10}" role="img" aria-label="network matrix">']
    for j, b in enumerate(order):
        x = left + j * cell + cell / 2
        out.append(f'<text transform="translate({x:.0f},{top_pad - 6}) rotate(-60)">{escape(b)}</text>')
    for i, a in enumerate(order):
        y = top_pad + i * cell
        out.append(f'<text x="0" y="{y + cell / 2 + 4:.0f}">{escape(a)}</text>')
        for j, b in enumerate(order):
            x = left + j * cell
            v = matrix.get(a, {}).get(b)
            if a == b:
                fill, text = "#eee", ""
            elif not isinstance(v, (int, float)):
                fill, text = "#fff", "-"
            else:
                share = v / hi if hi else 0
                fill = f"rgb({int(255 * (1 - share))},{int(90 + 120 * share)},{int(80 + 40 * share)})"
                text = fmt(v)
            out.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{fill}"><title>')
            out.append(f"{escape(a)} -> {escape(b)}: {escape(text)} Gbit/s</title></rect>")
            out.append(f'<text x="{x + 3}" y="{y + cell / 2 + 4:.0f}">{escape(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def _allreduce(rows: list[dict[str, Any]]) -> str:
    pts = sorted({(r["size_bytes"], r["busbw_gbps"]) for r in rows if not r.get("inplace")})
    if not pts:
        pts = sorted({(r["size_bytes"], r["busbw_gbps"]) for r in rows})
    width, height, left, bottom = 520, 260, 60, 40
    xs = [math.log2(s) for s, _ in pts]
    top = max((b for _, b in pts), default=1.0) or 1.0
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1

    def px(s: float) -> float:
        return left + (width - left - 20) * (math.log2(s) - x0) / (x1 - x0)

    def py(b: float) -> float:
        return height - bottom - (height - bottom - 20) * b / top

    out = [f'<svg width="{width}" height="{height}" role="img" aria-label="all-reduce bus bandwidth">']
    out.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#000"/>')
    out.append(f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="#000"/>')
    out.append(f'<text x="{left}" y="{height - 8}">message size (bytes, log scale)</text>')
    out.append(f'<text x="2" y="14">busbw GB/s (max {escape(fmt(top))})</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{px(s):.1f},{py(b):.1f}" for i, (s, b) in enumerate(pts))
    out.append(f'<path d="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>')
    for s, b in pts:
        out.append(
            f'<circle cx="{px(s):.1f}" cy="{py(b):.1f}" r="3" fill="#1565c0"><title>{s} B: {fmt(b)} GB/s</title></circle>'
        )
    for s, _ in pts[:: max(1, len(pts) // 6)]:
        out.append(f'<text x="{px(s) - 10:.1f}" y="{height - bottom + 14}">{escape(_size(s))}</text>')
    out.append("</svg>")
    return "".join(out)


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def render_html(report: dict[str, Any]) -> str:
    r = report
    verdict = r["verdict"]
    node_verdict = {n["name"]: n["verdict"] for n in r["nodes"]}
    th = r.get("thresholds") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>corral bench cluster: {escape(verdict)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f'<h1 class="{escape(verdict)}" id="verdict">Cluster acceptance: {escape(verdict.upper())}</h1>',
        f"<p>level {escape(r['level'])}, {len(r['nodes'])} node(s), started {escape(r['started_at'])}, "
        f"{escape(str(r['duration_s']))} s."
        + (f" Failed: <b>{escape(', '.join(r['exclude']))}</b>." if r["exclude"] else " Every node passed.")
        + "</p>",
        '<h2>Nodes</h2><table id="nodes"><tr><th>node</th><th>verdict</th><th>findings</th></tr>',
    ]
    for n in r["nodes"]:
        items = "".join(
            f'<li class="{escape(f["severity"])}"><b>{escape(f["check"])}</b> [{escape(f["reference"])}]: '
            f"{escape(f['message'])}"
            + (f"<br><i>what to do:</i> {escape(f['remediation'])}" if f.get("remediation") else "")
            + "</li>"
            for f in n["findings"]
        )
        parts.append(
            f'<tr data-node="{escape(n["name"])}"><td>{escape(n["name"])}</td>'
            f'<td class="{escape(n["verdict"])}">{escape(n["verdict"])}</td><td><ul>{items}</ul></td></tr>'
        )
    parts.append("</table>")
    figs = r.get("figures") or {}
    keys = [k for k in FIGURES if any(k in (figs.get(n) or {}) for n in figs)]
    if keys:
        parts.append(
            "<h2>Figures by node</h2><p>Bars: each node (colour: its verdict); solid line: the peers' median; "
            "dashed: the outlier floor.</p>"
        )
        for k in keys:
            values = {n: figs[n][k] for n in node_verdict if k in (figs.get(n) or {})}
            if values:
                parts.append(_bars(k, values, node_verdict, th.get("peer", 0.15), th.get("peer_mad_z", 3.0)))
    net = (r.get("measurements") or {}).get("net") or {}
    if net.get("matrix_gbps"):
        order = [n for n in r["cluster"]["nodes"] if n in net["matrix_gbps"]] or list(net["matrix_gbps"])
        parts.append("<h2>Network: sender (row) to receiver (column), Gbit/s</h2>")
        parts.append(_heat(net["matrix_gbps"], order))
    ar = (r.get("measurements") or {}).get("allreduce") or {}
    if ar.get("rows"):
        parts.append("<h2>All-reduce across all nodes: bus bandwidth against message size</h2>")
        parts.append(_allreduce(ar["rows"]))
    parts.append(
        "<h2>Steps</h2><table><tr><th>step</th><th>budget (s)</th><th>took (s)</th><th>complete</th><th>note</th></tr>"
    )
    for s in r["steps"]:
        parts.append(
            f"<tr><td>{escape(s['name'])}</td><td>{s['budget_s']:.0f}</td><td>{escape(str(s['duration_s']))}</td>"
            f"<td>{'yes' if s['complete'] else 'NO'}</td><td>{escape(s.get('note') or '')}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "\n".join(parts)

"""The report of ``corral bench cluster``: report.json (the contract), report.md (for a ticket), junit.xml (for CI).

Pure: ``build_report`` assembles the JSON from what the run recorded; ``render_markdown`` and
``render_junit`` are functions of that JSON alone, so a recorded report.json renders the same files
again (golden-tested in tests/golden/cluster/).

report.json (schema ``corral.bench.cluster/1``):
- ``verdict``: ``pass`` | ``fail`` (fail when any node failed);
- ``nodes``: ``[{name, verdict: pass|warn|fail, findings: [...], checks: [...]}]``: ``findings`` are the
  warn/fail checks, ``checks`` every check (each ``{check, severity, message, value, expected, reference,
  remediation, unit}``; ``reference`` is spec | cloud | peers | baseline | run);
- ``exclude``: the failed nodes' names (what ``--exclude-from`` reads);
- ``steps``: ``[{name, what, budget_s, duration_s, complete, note}]``;
- ``figures``: per node, the figures judged (what ``--baseline`` compares with);
- ``measurements``: the steps' own documents (pairs and re-tests, all-reduce rows and bisection, volume);
- ``level``, ``started_at``, ``duration_s``, ``versions``, ``cluster`` (file and node list), ``thresholds``,
  ``baseline`` (the file compared with, or null).
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from benchmarks.cluster.judge import FAIL, FIGURES, PASS, WARN, NodeVerdict, fmt

SCHEMA = "corral.bench.cluster/1"
BASELINE_SCHEMA = "corral.bench.cluster.baseline/1"


def build_report(
    *,
    level: str,
    started_at: str,
    duration_s: float,
    versions: dict[str, str],
    cluster_file: str | None,
    cluster_nodes: list[str],
    left_out: list[dict[str, str]],
    steps: list[dict[str, Any]],
    verdicts: list[NodeVerdict],
    figures: dict[str, dict[str, float]],
    measurements: dict[str, Any],
    thresholds: dict[str, Any],
    baseline: str | None,
) -> dict[str, Any]:
    nodes = [
        {
            "name": v.name,
            "verdict": v.verdict,
            "findings": [f.to_dict() for f in v.findings],
            "checks": [f.to_dict() for f in v.checks],
        }
        for v in verdicts
    ]
    exclude = [n["name"] for n in nodes if n["verdict"] == FAIL]
    return {
        "schema": SCHEMA,
        "verdict": FAIL if exclude else PASS,
        "level": level,
        "started_at": started_at,
        "duration_s": round(duration_s, 1),
        "versions": versions,
        "cluster": {"file": cluster_file, "nodes": cluster_nodes, "left_out": left_out},
        "exclude": exclude,
        "steps": steps,
        "nodes": nodes,
        "figures": figures,
        "thresholds": thresholds,
        "baseline": baseline,
        "measurements": measurements,
    }


def baseline_doc(report: dict[str, Any]) -> dict[str, Any]:
    """What ``--save-baseline`` writes: the figures of a passing run, with when and where they were taken."""
    return {
        "schema": BASELINE_SCHEMA,
        "level": report["level"],
        "taken_at": report["started_at"],
        "cluster": report["cluster"],
        "figures": report["figures"],
        "allreduce_busbw_gbps": (report["measurements"].get("allreduce") or {}).get("busbw_gbps"),
    }


def exit_line(report: dict[str, Any], report_path: str) -> str:
    """The last line a failing run prints: who failed and how to leave them out."""
    bad = report["exclude"]
    return (
        f"failed: {', '.join(bad)}; leave {'it' if len(bad) == 1 else 'them'} out with "
        f"`corral launch JOB.yaml -c CLUSTER --exclude-from {report_path}`"
    )


def incomplete_line(steps: list[dict[str, Any]]) -> str:
    """The last line of a run where no node failed but some step did not finish: which, why, what to do."""
    parts = [f"{s['name']} ({s['note'] or 'did not finish'})" for s in steps]
    return (
        f"incomplete: {'; '.join(parts)}; no node failed, but these steps judged nobody: rerun them "
        "(--skip the others), with more time where a budget was spent (--step-budget STEP=SECONDS)"
    )


# ---------------------------------------------------------------------------- markdown


def _cell(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return fmt(x)
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    """For a ticket to the cloud provider: the verdict first, then per node what failed with the numbers, then
    the tables."""
    r = report
    lines = [f"# Cluster acceptance: {r['verdict'].upper()}", ""]
    names = r["cluster"]["nodes"]
    lines.append(
        f"`corral bench cluster --level {r['level']}` on {len(r['nodes'])} node(s), started {r['started_at']}, "
        f"{r['duration_s']:g} s."
    )
    if r["exclude"]:
        lines.append(f"Failed: **{', '.join(r['exclude'])}** (the report's `exclude` list).")
    else:
        lines.append("Every node passed.")
    for item in r["cluster"].get("left_out") or []:
        lines.append(f"Left out before the run: {item['node']} ({item['reason']}).")
    if r.get("baseline"):
        lines.append(f"Compared with the baseline {r['baseline']}.")
    lines.append("")
    flagged = [n for n in r["nodes"] if n["findings"]]
    if flagged:
        lines += ["## Findings", ""]
        for n in flagged:
            lines.append(f"### {n['name']}: {n['verdict']}")
            lines.append("")
            for f in n["findings"]:
                unit = f" {f['unit']}" if f.get("unit") else ""
                figure = (
                    f" (value {_cell(f['value'])}{unit}, expected {_cell(f['expected'])}{unit})"
                    if f["value"] is not None
                    else ""
                )
                lines.append(f"- **{f['severity']}** `{f['check']}` [{f['reference']}]: {f['message']}{figure}")
                if f.get("remediation"):
                    lines.append(f"  - what to do: {f['remediation']}")
            lines.append("")
    lines += ["## Nodes", "", "| node | verdict | failed | warnings |", "|---|---|---|---|"]
    for n in r["nodes"]:
        fails = sum(f["severity"] == FAIL for f in n["findings"])
        warns = sum(f["severity"] == WARN for f in n["findings"])
        lines.append(f"| {n['name']} | {n['verdict']} | {fails} | {warns} |")
    keys = [k for k in FIGURES if any(k in (r["figures"].get(n) or {}) for n in r["figures"])]
    if keys:
        lines += ["", "## Figures", ""]
        lines.append("| node | " + " | ".join(f"{FIGURES[k][0]} ({FIGURES[k][1]})" for k in keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for n in [x["name"] for x in r["nodes"]]:
            f = r["figures"].get(n) or {}
            lines.append(f"| {n} | " + " | ".join(_cell(f.get(k)) for k in keys) + " |")
    net = r["measurements"].get("net") or {}
    matrix = net.get("matrix_gbps")
    if matrix:
        order = [n for n in names if n in matrix] or list(matrix)
        lines += ["", "## Network (Gbit/s, sender row -> receiver column)", ""]
        lines.append("| from \\ to | " + " | ".join(order) + " |")
        lines.append("|---" * (len(order) + 1) + "|")
        for a in order:
            lines.append(f"| {a} | " + " | ".join(_cell(matrix[a].get(b)) if a != b else "" for b in order) + " |")
        if net.get("retests"):
            lines += [
                "",
                "Second pass (suspects with a node that passed): "
                + "; ".join(f"{p['src']}->{p['dst']} {_cell(p.get('gbps'))}" for p in net["retests"]),
            ]
    ar = r["measurements"].get("allreduce") or {}
    if ar.get("rows"):
        backend = (ar.get("env") or {}).get("backend", "?")
        lines += ["", f"## All-reduce across all nodes ({backend}, {ar.get('world_size', '?')} ranks)", ""]
        lines += ["| size (B) | busbw out-of-place (GB/s) | busbw in-place (GB/s) |", "|---|---|---|"]
        by_size: dict[int, dict[bool, float]] = {}
        for row in ar["rows"]:
            by_size.setdefault(row["size_bytes"], {})[bool(row.get("inplace"))] = row["busbw_gbps"]
        for size, got in sorted(by_size.items()):
            lines.append(f"| {size} | {_cell(got.get(False))} | {_cell(got.get(True))} |")
        if ar.get("bisection"):
            b = ar["bisection"]
            lines.append("")
            lines.append(f"Bisection: {b['note']}; culprits: {', '.join(b['culprits']) or 'none'}.")
    lines += ["", "## Steps", "", "| step | budget (s) | took (s) | complete | note |", "|---|---|---|---|---|"]
    for s in r["steps"]:
        lines.append(
            f"| {s['name']} | {s['budget_s']:.0f} | {_cell(s['duration_s'])} | {'yes' if s['complete'] else 'NO'} | "
            f"{_cell(s.get('note') or '')} |"
        )
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(r["versions"].items())), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- junit


def render_junit(report: dict[str, Any]) -> str:
    """One test suite per node, one test case per check (a failure per failed check, a warning as system-out),
    as Jenkins and GitLab read JUnit XML."""
    suites = []
    total = fails = 0
    for n in report["nodes"]:
        cases = []
        for f in n["checks"]:
            total += 1
            body = ""
            text = f"{f['message']} [reference: {f['reference']}]"
            if f.get("remediation"):
                text += f"\nwhat to do: {f['remediation']}"
            if f["severity"] == FAIL:
                fails += 1
                body = f"<failure message={quoteattr(f['message'])} type={quoteattr(f['reference'])}>{escape(text)}</failure>"
            elif f["severity"] == WARN:
                body = f"<system-out>{escape('warning: ' + text)}</system-out>"
            cases.append(
                f"    <testcase classname={quoteattr('cluster.' + n['name'])} name={quoteattr(f['check'])}>{body}</testcase>"
            )
        n_fail = sum(f["severity"] == FAIL for f in n["checks"])
        suites.append(
            f'  <testsuite name={quoteattr(n["name"])} tests="{len(n["checks"])}" failures="{n_fail}" errors="0">\n'
            + "\n".join(cases)
            + "\n  </testsuite>"
        )
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuites name="corral bench cluster ({report["level"]})" tests="{total}" failures="{fails}" errors="0">'
    )
    return head + "\n" + "\n".join(suites) + "\n</testsuites>\n"

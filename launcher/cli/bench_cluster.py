"""The body of ``corral bench cluster``: plan, run the steps with a progress line each, judge, write the report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from launcher.errors import UserError

EXIT_FAILED_NODES = 1
EXIT_COULD_NOT_RUN = 2


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _versions() -> dict[str, str]:
    import platform

    import launcher

    out = {"corral": launcher.__version__, "python": platform.python_version()}
    try:
        from importlib.metadata import version

        out["torch"] = version("torch")
    except Exception:  # noqa: BLE001 - a missing torch is not a reason to lose the report
        out["torch"] = "not installed"
    return out


def _read_baseline(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--baseline {path}: file not found; give a report.json or a --save-baseline file") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--baseline {path}: not readable as JSON ({exc})") from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("corral.bench.cluster"):
        raise UserError(
            f"--baseline {path}: not a `corral bench cluster` report or baseline (no corral.bench.cluster schema)"
        )
    return doc


def run_command(
    *,
    cluster_file: Path | None,
    level: str,
    out_dir: Path | None,
    baseline: Path | None,
    save_baseline: Path | None,
    duration: float | None,
    net_duration: float | None,
    threshold: float,
    baseline_threshold: float,
    volume_path: str | None,
    volume_cap: float | None,
    min_busbw: float | None,
    skip: list[str],
    step_budget: list[str],
    exclude: list[str],
    exclude_from: Path | None,
    json_target: Path | None,
    dry_run: bool,
) -> int:
    from benchmarks.cluster import judge as J
    from benchmarks.cluster import levels, report
    from benchmarks.cluster import run as runner
    from benchmarks.cluster.html import render_html
    from launcher import api
    from launcher.cli.clusters import cluster_excluding, say_left_out
    from launcher.cli.output import write_json

    if not 0 < threshold < 1:
        raise UserError(f"--threshold is a share below the peers' median, between 0 and 1 (got {threshold:g})")
    if not 0 < baseline_threshold < 1:
        raise UserError(f"--baseline-threshold is a share between 0 and 1 (got {baseline_threshold:g})")
    cluster, left_out = cluster_excluding(cluster_file, exclude, exclude_from)
    base_doc = _read_baseline(baseline) if baseline is not None else None
    names = [n.label for n in cluster.nodes]
    runs = api.runs_dir(cluster)
    vol = None if "volume" in skip else (volume_path or runs)
    plan = levels.build_plan(
        level,
        names,
        gpus=any(n.gpus for n in cluster.nodes),
        volume_path=vol,
        duration_s=duration,
        net_duration_s=net_duration,
        skip=tuple(skip),
        budgets=levels.parse_step_budgets(step_budget),
    )
    if dry_run:
        sys.stdout.write(levels.describe(plan, [i.line() for i in left_out]) + "\n")
        return 0
    say_left_out(left_out)
    th = J.Thresholds(threshold, J.PEER_MAD_Z, baseline_threshold, volume_cap, min_busbw)
    out = Path(out_dir) if out_dir is not None else Path(runs) / time.strftime("bench-cluster-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    total = len(plan.steps)

    def on_step(i: int, step, record) -> None:
        if record is None:
            left = sum(s.budget_s for s in plan.steps[i:])
            eta = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
            _err(
                f"[{i + 1}/{total}] {step.name}: {step.what} (budget {step.budget_s:.0f}s; "
                f"whole run done by {eta} at the latest)"
            )
        else:
            state = "complete" if record.complete else "INCOMPLETE"
            _err(
                f"[{i + 1}/{total}] {step.name}: {state} in {record.duration_s:.1f}s"
                + (f" ({record.note})" if record.note else "")
            )

    base_busbw = (base_doc or {}).get("allreduce_busbw_gbps") or (
        ((base_doc or {}).get("measurements") or {}).get("allreduce") or {}
    ).get("busbw_gbps")
    interrupted = False
    try:
        rec = runner.run_plan(
            plan, cluster, th=th, baseline_busbw=base_busbw, say=lambda s: _err("    " + s), on_step=on_step
        )
    except runner.Interrupted as exc:
        rec, interrupted = exc.recorded, True
    verdicts, figures = runner.assess(cluster, rec, th, J.baseline_figures(base_doc) if base_doc else None)
    measurements = {
        "node": rec.node_reports,
        "net": rec.net,
        "allreduce": rec.allreduce,
        "node_allreduce": rec.node_allreduce,
        "volume": rec.volume,
        "burn_rounds": len(rec.burn),
    }
    doc = report.build_report(
        level=level,
        started_at=started_at,
        duration_s=time.monotonic() - t0,
        versions=_versions(),
        cluster_file=str(cluster_file) if cluster_file else None,
        cluster_nodes=names,
        left_out=[{"node": i.node, "reason": i.reason} for i in left_out],
        steps=[s.to_dict() for s in rec.steps],
        verdicts=verdicts,
        figures=figures,
        measurements=measurements,
        thresholds=th.to_dict(),
        baseline=str(baseline) if baseline else None,
    )
    if interrupted:
        doc["interrupted"] = True
    report_path = out / "report.json"
    write_json(doc, report_path)
    (out / "report.md").write_text(report.render_markdown(doc), encoding="utf-8")
    (out / "report.html").write_text(render_html(doc), encoding="utf-8")
    (out / "junit.xml").write_text(report.render_junit(doc), encoding="utf-8")
    if json_target is not None:
        write_json(doc, json_target)
    if str(json_target) != "-":
        sys.stdout.write(_summary(doc))
    _err(f"report: {report_path} (and report.md, report.html, junit.xml beside it)")
    if interrupted:
        _err("interrupted: the current step was stopped on every node; the report holds what ran before")
        return 130
    if save_baseline is not None:
        if doc["verdict"] != "pass" or any(not s["complete"] for s in doc["steps"]):
            _err(f"not saving a baseline to {save_baseline}: the run did not pass with every step complete")
        else:
            write_json(report.baseline_doc(doc), save_baseline)
            _err(f"baseline saved to {save_baseline}")
    if doc["verdict"] == "fail":
        _err(report.exit_line(doc, str(report_path)))
        return EXIT_FAILED_NODES
    incomplete = [s for s in doc["steps"] if not s["complete"]]
    if incomplete:
        # no node failed, but not everything was measured: not a pass to build on
        _err(report.incomplete_line(incomplete))
        return EXIT_COULD_NOT_RUN
    return 0


def _summary(doc: dict[str, Any]) -> str:
    lines = [f"cluster acceptance ({doc['level']}): {doc['verdict'].upper()}"]
    width = max((len(n["name"]) for n in doc["nodes"]), default=4)
    for n in doc["nodes"]:
        lines.append(f"  {n['name']:<{width}}  {n['verdict']:<4}")
        for f in n["findings"]:
            lines.append(f"      {f['severity']}: {f['check']} [{f['reference']}]: {f['message']}")
    incomplete = [s["name"] for s in doc["steps"] if not s["complete"]]
    if incomplete:
        lines.append(f"  incomplete steps: {', '.join(incomplete)}")
    return "\n".join(lines) + "\n"

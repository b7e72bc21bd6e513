"""Reading what trials reported with ``launcher.report.report`` (JSON lines in their run dirs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from launcher.report import METRICS_FILE


def read_reports(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record; a half-written last line (the trial is still writing) is skipped."""
    try:
        text = (Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def best_value(records: list[dict[str, Any]], name: str, goal: str) -> Optional[float]:
    """The best reported value of ``name`` (lowest for minimize), or None if it was never reported as a number."""
    values = [
        float(r[name])
        for r in records
        if isinstance(r.get(name), (int, float)) and not isinstance(r.get(name), bool) and math.isfinite(r[name])
    ]
    if not values:
        return None
    return min(values) if goal == "minimize" else max(values)


def never_reported(name: str) -> str:
    return (
        f"metric {name!r} was never reported: the script must call "
        f"`from launcher.report import report; report({name}=...)`"
    )


def metric_series(records: list[dict[str, Any]], name: str) -> list[tuple[int, float]]:
    """(step, value) of every report of ``name``, in order; a record without an integer ``step`` counts as the next step.

    A step reported twice keeps its first value (what the pruner saw first).
    """
    out: list[tuple[int, float]] = []
    seen: set[int] = set()
    last = 0
    for r in records:
        v = r.get(name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            continue
        step = r.get("step")
        step = step if isinstance(step, int) and not isinstance(step, bool) else last + 1
        last = step
        if step not in seen:
            seen.add(step)
            out.append((step, float(v)))
    return out

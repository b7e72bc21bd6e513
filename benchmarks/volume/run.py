"""Run a plan on this machine: check PATH, make a private work directory, run each mode
(and fio beside it), and return the node's result document. Files are removed on every exit.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from benchmarks.volume import engine, fio, report, target
from benchmarks.volume.plan import DATA_FILE, ModeSpec, VolumePlan, fio_argv

log = logging.getLogger(__name__)

NO_DIRECT_NOTICE = (
    "{path}: the filesystem does not support O_DIRECT (ramfs, or tmpfs before Linux 6.6); running buffered instead"
)
NO_FIO_NOTICE = "fio is not installed: --compare-fio skipped (install fio to compare)"

Say = Callable[[str], None]


def _prepare_spec(plan: VolumePlan, spec: ModeSpec) -> ModeSpec:
    """The untimed pass that fills the file before a read mode when seqwrite did not."""
    bs = max((m.bs for m in plan.modes if not m.is_random), default=1 << 20)
    if plan.size % bs:
        bs = spec.bs
    return ModeSpec(mode="seqwrite", bs=bs, jobs=1, iodepth=4, size=plan.size, direct=spec.direct)


def run_plan(plan: VolumePlan, *, node: str | None = None, say: Say = lambda s: None, tick_s: float = 1.0) -> dict:
    """Run every mode of ``plan`` on this machine and return the result document (see report)."""
    node = node or socket.gethostname()
    path = target.check_target(plan.path)
    space_notice = target.check_free_space(path, plan.required_bytes)
    if space_notice:
        say(space_notice)
        plan = replace(plan, notices=plan.notices + (space_notice,))
    fio_status = None
    if plan.compare_fio and fio.fio_path() is None:
        fio_status = NO_FIO_NOTICE
        say(NO_FIO_NOTICE)
    results: list[dict] = []
    fio_rows: list[dict] = []
    with target.signals_raise(), target.private_workdir(path) as wd:
        if plan.direct and not target.supports_direct(wd):
            notice = NO_DIRECT_NOTICE.format(path=path)
            say(notice)
            plan = plan.with_buffered(notice)
        file = wd / DATA_FILE
        filled = False
        for spec in plan.modes:
            if spec.mode == "seqwrite":
                engine.create_file(file, spec.size)
            elif not filled:
                say(f"{spec.mode}: filling the {spec.size} byte test file first (untimed)")
                engine.create_file(file, spec.size)
                engine.run_mode(_prepare_spec(plan, spec), file, tick_s=3600)
                filled = True
            say(f"{spec.mode}: start")
            run = engine.run_mode(
                spec, file, tick_s=tick_s, on_tick=lambda t, r, m=spec.mode: say(f"{m}: {t:5.1f}s {r:9.1f} MiB/s")
            )
            if spec.mode == "seqwrite" and run.bytes >= spec.size:
                filled = True
            rec = report.mode_record(run, node=node, limit_mibps=plan.limit_mibps, tick_s=tick_s)
            results.append(rec)
            say(f"{spec.mode}: {rec['mib_per_s']:.1f} MiB/s, {rec['iops']:.0f} IOPS")
            if plan.compare_fio and fio_status is None:
                fio_rows.append(_run_fio_beside(spec, file, node, rec, say))
                if spec.mode == "seqwrite":
                    filled = filled or fio_rows[-1]["bytes"] >= spec.size
    doc = {
        "schema": report.SCHEMA_VERSION,
        "path": str(plan.path),
        "nodes": [node],
        "limit_mibps": plan.limit_mibps,
        "read_method": plan.read_method(),
        "notices": list(plan.notices) + ([fio_status] if fio_status else []),
        "units": report.UNITS,
        "results": results,
    }
    if plan.compare_fio:
        doc["fio"] = fio_rows
        doc["fio_status"] = fio_status or "ran"
    return doc


def _run_fio_beside(spec: ModeSpec, file: Path, node: str, rec: dict, say: Say) -> dict:
    """fio on the same file right after corral's run of the mode; a write mode starts from a fresh file as corral's did."""
    if spec.mode == "seqwrite":
        file.unlink()
    argv = fio_argv(spec, str(file))
    say(f"{spec.mode}: fio")
    out = fio.run_fio(argv)
    res = fio.parse_fio_json(out, spec.mode)
    row = report.fio_record(res, node=node, argv=argv, corral_mib_per_s=rec["mib_per_s"])
    say(f"{spec.mode}: fio {res.mib_per_s:.1f} MiB/s, corral ÷ fio {row['corral_over_fio']:.2f}")
    return row

"""The fio choke point and a pure parser of its JSON output.

fio is the yardstick people trust; ``--compare-fio`` runs it with the plan's parameters
(:func:`benchmarks.volume.plan.fio_argv`) on the same file, right after corral's own run of
the mode, and reports corral ÷ fio.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass

from launcher.errors import ToolError, ToolNotFound
from launcher.units import MIB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FioResult:
    """One fio job group's figures, in corral's units."""

    mode: str
    bytes: int
    runtime_s: float
    mib_per_s: float
    iops: float
    lat_p50_us: float | None
    lat_p99_us: float | None

    @property
    def mb_per_s(self) -> float:
        return self.mib_per_s * MIB / 1e6

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mb_per_s"] = self.mb_per_s
        return d


def fio_path() -> str | None:
    return shutil.which("fio")


def _percentile_us(section: dict, q: str) -> float | None:
    for key in ("lat_ns", "clat_ns"):
        pct = section.get(key, {}).get("percentile")
        if pct and q in pct:
            return pct[q] / 1000
    return None


def parse_fio_json(text: str, mode: str) -> FioResult:
    """The figures of fio's ``--output-format=json --group_reporting`` output for ``mode``.

    fio may print warnings before the JSON document; they are skipped. Writes are read from
    the ``write`` section, reads from ``read``. Latency percentiles are total latency
    (``lat_ns``, present with ``--lat_percentiles=1``), else completion latency (``clat_ns``).
    """
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON document in fio's output")
    doc = json.loads(text[start:])
    jobs = doc.get("jobs") or []
    if not jobs:
        raise ValueError("fio's JSON has no jobs")
    job = jobs[0]
    if job.get("error"):
        raise ValueError(f"fio reported error {job['error']}")
    section = job["write" if mode.endswith("write") else "read"]
    runtime_s = section["runtime"] / 1000
    return FioResult(
        mode=mode,
        bytes=int(section["io_bytes"]),
        runtime_s=runtime_s,
        mib_per_s=section["bw_bytes"] / MIB,
        iops=float(section["iops"]),
        lat_p50_us=_percentile_us(section, "50.000000"),
        lat_p99_us=_percentile_us(section, "99.000000"),
    )


def run_fio(argv: list[str], *, timeout: float | None = None) -> str:
    """Run fio (argv list, never a shell string) and return its stdout; a typed error on failure."""
    if shutil.which(argv[0]) is None:
        raise ToolNotFound("fio")
    log.debug("running %s", shlex.join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ToolError("fio", argv, proc.returncode, proc.stderr or proc.stdout)
    return proc.stdout

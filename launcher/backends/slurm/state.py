"""Slurm's job states read as corral's: pure functions of recorded ``scontrol``/``sinfo`` output.

corral's per-node states on Slurm: ``pending`` (the job waits for nodes; Slurm's reason, e.g.
``Resources`` or ``PartitionDown``, goes in the detail), ``running``, ``exited N`` (the node
wrapper wrote its exit status), ``failed`` (Slurm ended the job before the node's command did:
cancelled, time limit, node failure...), ``missing`` (no trace of the node's command).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PENDING = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD", "SUSPENDED", "RESIZING"}
)
RUNNING = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED"})
ENDED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "CANCELLED",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)

_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9/:_.]*)=")


@dataclass(frozen=True)
class SlurmJob:
    """The fields of ``scontrol show job -o`` corral uses."""

    job_id: str
    state: str
    reason: str | None
    nodelist: str | None
    exit_code: int | None
    signal: int | None
    restarts: int

    @property
    def corral_state(self) -> str:
        return corral_state(self.state)


def parse_show_job(line: str) -> dict[str, str]:
    """``KEY=VALUE KEY=VALUE ...`` (values may hold spaces, e.g. Command) into a dict."""
    matches = list(_KEY.finditer(line))
    out: dict[str, str] = {}
    for m, nxt in zip(matches, matches[1:] + [None]):
        end = nxt.start() if nxt else len(line)
        out[m.group(1)] = line[m.end() : end].strip()
    return out


def _none(value: str | None) -> str | None:
    return None if value in (None, "", "None", "(null)") else value


def slurm_job(line: str) -> SlurmJob:
    f = parse_show_job(line)
    code, sig = None, None
    if m := re.match(r"^(\d+):(\d+)$", f.get("ExitCode", "")):
        code, sig = int(m.group(1)), int(m.group(2))
    state = f.get("JobState", "UNKNOWN").split()[0]
    return SlurmJob(
        job_id=f.get("JobId", ""),
        state=state,
        reason=_none(f.get("Reason")),
        nodelist=_none(f.get("NodeList")),
        exit_code=code,
        signal=sig,
        restarts=int(f.get("Restarts", "0") or 0),
    )


def corral_state(slurm_state: str) -> str:
    """pending | running | ended | unknown."""
    base = slurm_state.split("+")[0]
    if base in PENDING:
        return "pending"
    if base in RUNNING:
        return "running"
    if base in ENDED:
        return "ended"
    return "unknown"


def job_detail(job: SlurmJob) -> str:
    reason = f" ({job.reason})" if job.reason else ""
    code = f", exit code {job.exit_code}" if job.exit_code is not None and job.state not in PENDING | RUNNING else ""
    restarts = f", requeued {job.restarts}x" if job.restarts else ""
    return f"Slurm job {job.job_id}: {job.state}{reason}{code}{restarts}"


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    up: bool
    nodes: int
    nodelist: str


def parse_partition(text: str, name: str) -> PartitionInfo | None:
    """``sinfo -h -p P -o '%a|%D|%N|%t'`` (one line per node state) into one summary; None: no such partition."""
    lines = [ln.split("|") for ln in text.splitlines() if ln.count("|") >= 3]
    if not lines:
        return None
    up = any(parts[0].strip() == "up" for parts in lines)
    nodes = sum(int(parts[1]) for parts in lines if parts[1].strip().isdigit())
    return PartitionInfo(name, up, nodes, ",".join(parts[2] for parts in lines))


__all__ = ["PartitionInfo", "SlurmJob", "corral_state", "job_detail", "parse_partition", "parse_show_job", "slurm_job"]

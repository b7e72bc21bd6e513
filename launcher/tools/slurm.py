"""The one choke point for the Slurm clients: sbatch, squeue, scontrol, scancel, srun, sinfo.

Every call is an argv list, logged with ``shlex.join`` at debug level. With ``slurm.login`` set,
the same argv runs on that host through ``tools.ssh`` (quoted once there). A missing client
becomes ``ToolNotFound`` (exit 2), a failing one ``ToolError`` carrying its stderr. The clients
find their configuration the usual way (``SLURM_CONF`` or the default path).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import NoReturn

from launcher.config import ClusterConfig
from launcher.errors import ToolError, ToolNotFound

log = logging.getLogger(__name__)

CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SlurmResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def full_argv(cluster: ClusterConfig, argv: list[str], *, tty: bool = False) -> list[str]:
    """``argv`` as run here, or wrapped in ssh to ``slurm.login``."""
    assert cluster.slurm is not None
    if cluster.slurm.login is None:
        return list(argv)
    from launcher.tools import ssh

    return ssh.ssh_argv(cluster.ssh, cluster.slurm.login, list(argv), tty=tty)


def missing_clients(cluster: ClusterConfig, clients: tuple[str, ...] = CLIENTS) -> list[str]:
    """The clients not on PATH here (with a login host, ssh is the one needed here)."""
    assert cluster.slurm is not None
    if cluster.slurm.login is not None:
        return [] if shutil.which("ssh") else ["ssh"]
    return [c for c in clients if shutil.which(c) is None]


def run(
    cluster: ClusterConfig,
    argv: list[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    input: str | None = None,
) -> SlurmResult:
    """Run one Slurm client; ``check`` turns a non-zero exit into ToolError."""
    cmd = full_argv(cluster, argv)
    log.debug("slurm: %s", shlex.join(cmd))
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, input=input if input is not None else ""
        )
    except FileNotFoundError:
        raise ToolNotFound(
            cmd[0], hint="install the Slurm clients (Debian: slurm-client) or set slurm.login to a host that has them"
        ) from None
    except subprocess.TimeoutExpired:
        raise ToolError(argv[0], cmd, None, f"no answer after {timeout:g}s (is slurmctld up?)") from None
    result = SlurmResult(cmd, proc.returncode, proc.stdout, proc.stderr)
    if check and not result.ok:
        raise ToolError(argv[0], cmd, proc.returncode, proc.stderr or proc.stdout)
    return result


def sbatch(cluster: ClusterConfig, script_path: str, *, workdir: str) -> str:
    """Submit a script; returns the job id (``--parsable`` prints ``ID[;cluster]``)."""
    out = run(cluster, ["sbatch", "--parsable", f"--chdir={workdir}", script_path]).stdout.strip()
    return out.split(";", 1)[0]


def show_job(cluster: ClusterConfig, job_id: str) -> str | None:
    """``scontrol show job -o ID`` (one line of KEY=VALUE), or None once slurmctld forgot it."""
    r = run(cluster, ["scontrol", "show", "job", "-o", job_id], check=False)
    if not r.ok:
        if "Invalid job id" in r.stderr:
            return None
        raise ToolError("scontrol", r.argv, r.returncode, r.stderr)
    return r.stdout.strip() or None


def find_job(cluster: ClusterConfig, job_name: str, comment: str) -> str | None:
    """The id of the job with this name and comment that slurmctld still knows (any state), or None."""
    out = run(cluster, ["squeue", "-h", "-t", "all", f"--name={job_name}", "-o", "%i|%k"]).stdout
    ids = [line.split("|", 1)[0] for line in out.splitlines() if line.split("|", 1)[-1].strip() == comment]
    return ids[-1] if ids else None


def hostnames(cluster: ClusterConfig, nodelist: str) -> list[str]:
    """Expand a Slurm host list (``sn[1-3]``)."""
    if not nodelist or nodelist in ("(null)", "None"):
        return []
    return run(cluster, ["scontrol", "show", "hostnames", nodelist]).stdout.split()


def scancel(cluster: ClusterConfig, job_id: str, *, signal: str | None = None, full: bool = False) -> SlurmResult:
    """Without ``signal``: end the job. With it: only send it (``full``: the batch shell too, not only the steps)."""
    argv = ["scancel"]
    if signal:
        argv.append(f"--signal={signal}")
    if full:
        argv.append("--full")
    return run(cluster, [*argv, job_id], check=False)


def requeue(cluster: ClusterConfig, job_id: str) -> None:
    run(cluster, ["scontrol", "requeue", job_id])


def partition_info(cluster: ClusterConfig, partition: str) -> str:
    """``sinfo`` for one partition: ``AVAIL|NODES|NODELIST`` lines (empty: no such partition)."""
    return run(cluster, ["sinfo", "-h", "-p", partition, "-o", "%a|%D|%N|%t"]).stdout


def exec_interactive(argv: list[str]) -> NoReturn:
    """Replace this process with an interactive client (``attach``): ``argv`` from ``full_argv``."""
    log.debug("slurm: exec %s", shlex.join(argv))
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise ToolNotFound(argv[0], hint="install the Slurm clients (Debian: slurm-client)") from None


def srun_argv(
    job_id: str | None,
    command: list[str],
    *,
    nodelist: str | None = None,
    pty: bool = False,
    partition: str | None = None,
    time: str | None = None,
) -> list[str]:
    """srun inside an existing allocation (``--jobid --overlap``) or as a short job of its own."""
    argv = ["srun"]
    if job_id:
        argv += [f"--jobid={job_id}", "--overlap"]
    else:
        argv += ["--nodes=1", "--ntasks=1"]
        if partition:
            argv.append(f"--partition={partition}")
        if time:
            argv.append(f"--time={time}")
    if nodelist:
        argv += [f"--nodelist={nodelist}", "--nodes=1", "--ntasks=1"] if job_id else [f"--nodelist={nodelist}"]
    if pty:
        argv.append("--pty")
    return [*argv, *command]


__all__ = [
    "CLIENTS",
    "SlurmResult",
    "exec_interactive",
    "find_job",
    "full_argv",
    "hostnames",
    "missing_clients",
    "partition_info",
    "requeue",
    "run",
    "sbatch",
    "scancel",
    "show_job",
    "srun_argv",
]

"""How a launch is asked for, the same for every backend: the options, the run's name, where its paths start.

``LaunchOptions`` is what the CLI, ``launcher.api.launch`` and a sweep hand to a backend; the
helpers here (name check, ``--set`` overrides, secrets file, the cluster's base directory) are
the parts of "prepare a launch" that do not depend on where the job runs.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from launcher.config import ClusterConfig, JobConfig, apply_overrides, validate
from launcher.config.job import JOB_NAME
from launcher.errors import UserError
from launcher.plan import parse_env_file, resolve_path

TMUX_SOCKET_ENV = "CORRAL_TMUX_SOCKET"
"""tmux ``-L`` socket name for every node (default: the user's default server). Tests set it."""


def cluster_base(cluster: ClusterConfig, base_dir: str | None = None) -> str:
    """Where the cluster's relative paths (workdir, storage) start: ``base_dir`` when a caller
    gives one, else the cluster file's directory (the project directory for the embedded
    default, see ``config.loading.load_cluster``), else the current directory."""
    return base_dir or cluster.base_dir or os.getcwd()


def runs_dir(cluster: ClusterConfig, base_dir: str | None = None) -> str:
    return resolve_path(cluster_base(cluster, base_dir), cluster.storage.runs)


def apply_job_overrides(job: JobConfig, set_: list[str] | tuple[str, ...]) -> JobConfig:
    if not set_:
        return job
    data = apply_overrides(job.model_dump(mode="json", exclude_none=True), list(set_))
    return validate(JobConfig, data, "--set")


def check_name(name: str) -> str:
    if not re.match(JOB_NAME, name):
        raise UserError(f"--name {name!r}: use 1-63 letters, digits, '-' or '_', starting with a letter or digit")
    return name


def read_secrets(job: JobConfig, base_dir: str) -> dict[str, str]:
    """``env_file``: relative to the job file's directory (``base_dir`` for a job not read from a file)."""
    if not job.env_file:
        return {}
    path = Path(resolve_path(job.base_dir or base_dir, job.env_file))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"env_file: cannot read {path} ({exc.strerror})", hint="fix env_file in the job file") from None
    return parse_env_file(text, str(path))


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch a job, as the caller asks for it (the CLI, ``launcher.api.launch``, a sweep)."""

    name: str | None = None
    """Run name (default: the job's name)."""
    nodes: tuple[str, ...] | None = None
    """Node names or hosts to run on (default: the job's or the cluster's nodes)."""
    set_: tuple[str, ...] = ()
    """``--set`` overrides of job fields."""
    preflight: bool = True
    """Refuse to launch on a failed check (False: still probe, but go on)."""
    plain: bool = False
    """``python3 SCRIPT ARGS`` once per node instead of torchrun."""
    dry_run: bool = False
    """Plan from the cluster file alone; ask no node."""
    base_dir: str | None = None
    """Relative cluster paths are resolved against this directory (default: the cluster file's
    directory, the project directory for the embedded cluster; see ``cluster_base``)."""
    tmux_socket: str | None = None
    """tmux ``-L`` socket (default: ``$CORRAL_TMUX_SOCKET``, else the user's default server)."""
    run_id: str | None = None
    """The run's id (default: ``<name>-<8 hex>``)."""

    @classmethod
    def of(cls, options: LaunchOptions | None = None, **kwargs: Any) -> LaunchOptions:
        """``options`` as given, or built from ``prepare``'s keyword arguments."""
        if options is not None:
            if kwargs:
                raise TypeError(f"give LaunchOptions or keyword arguments, not both (got {sorted(kwargs)})")
            return options
        for key in ("nodes", "set_"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def resolved(self, job: JobConfig, cluster: ClusterConfig | None = None) -> LaunchOptions:
        """Every default filled in, once: the name checked, the base dir (``cluster_base``), socket and run id decided."""
        name = check_name(self.name or job.name)
        socket = self.tmux_socket if self.tmux_socket is not None else os.environ.get(TMUX_SOCKET_ENV) or None
        base = cluster_base(cluster, self.base_dir) if cluster is not None else self.base_dir or os.getcwd()
        return replace(
            self, name=name, base_dir=base, tmux_socket=socket, run_id=self.run_id or f"{name}-{uuid.uuid4().hex[:8]}"
        )


__all__ = [
    "TMUX_SOCKET_ENV",
    "LaunchOptions",
    "apply_job_overrides",
    "check_name",
    "cluster_base",
    "read_secrets",
    "runs_dir",
]

"""The seam between corral's commands and where jobs run, and the one table that picks a backend.

Everything above this module (``launcher.jobs``, ``launcher.api``, the CLI, sweeps, benchmarks)
holds a ``Backend`` and never asks which one: the cluster file picks the backend that launches a
job (``backend_for``), the run record names the one that answers for it afterwards
(``backend_of``), as torchx's app handle names its scheduler. What a caller must know about a
backend is a ``Capabilities`` field, not a test of its name.

Adding a backend is its own package plus one ``register`` line: the built-in ones are the
``BUILTIN`` table below; a plugin (or a test) calls ``register`` itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TextIO

from launcher.errors import UserError

if TYPE_CHECKING:
    from launcher.config import ClusterConfig, JobConfig
    from launcher.runs.options import LaunchOptions
    from launcher.runs.record import RunRecord
    from launcher.runs.state import JobStatus, StopResult

TailLines = list[tuple[str, list[str] | None, str | None]]
"""Per node: (name, its last lines or None, why not)."""


@dataclass(frozen=True)
class Capabilities:
    """What callers may need to know about a backend, as facts rather than its name."""

    places_nodes: bool
    """The scheduler picks the nodes at run time: corral keeps no node list (``--node`` is refused, a
    sweep's "nodes" are submission slots, a job's node count is its ``nnodes``)."""


@dataclass(frozen=True)
class Description:
    """``--dry-run``: what a launch would do, as text for people and data for ``--json``; nothing touched."""

    text: str
    data: dict[str, Any]
    run_dir: str
    nodes: list[str]
    """The nodes the job would run on; empty where the scheduler places it (``Capabilities.places_nodes``)."""
    note: str = ""
    """The line printed after the text (what the dry run did not do)."""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PreflightView:
    """``corral preflight``'s answer: JSON, an optional table, lines, and the failure sentence (None: passed)."""

    data: Any
    header: list[str] | None
    rows: list[list[str]]
    lines: list[str]
    failure: str | None


@dataclass(frozen=True)
class AttachPlan:
    """``corral attach``: the argv that gives the user a terminal on the job's node, printed, then run."""

    argv: list[str]
    leave_hint: str
    """How the user gets out again (printed beside the argv)."""
    run: Callable[[], NoReturn]
    """Replace this process with ``argv`` (through the tool's choke point)."""


class Backend(Protocol):
    """What every backend does. Async where a caller asks many runs at once (``ps`` gathers statuses)."""

    name: str
    capabilities: Capabilities

    def describe(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> Description:
        """``--dry-run``: the plan as text and as JSON; asks no node."""

    def warnings(self, job: JobConfig, cluster: ClusterConfig) -> list[str]:
        """What is wrong with the job on this cluster that can be seen without asking a node (``config check``)."""

    def launch(self, job: JobConfig, cluster: ClusterConfig, options: LaunchOptions) -> RunRecord:
        """Check, plan and submit/start; returns the saved run record (nothing left behind on failure)."""

    def launching_text(self, name: str, cluster: ClusterConfig) -> str:
        """What the CLI shows while ``launch`` runs."""

    def launched_text(self, record: RunRecord, cluster: ClusterConfig) -> str:
        """One line saying where the job now runs and where its logs are."""

    async def status(self, record: RunRecord, cluster: ClusterConfig) -> JobStatus:
        """Per node: pending | running | exited N | failed | missing | unknown, with details."""

    async def tail(self, record: RunRecord, cluster: ClusterConfig, node: str | None, lines: int) -> TailLines:
        """Per node: (name, last lines prefixed with node and rank, or None, error)."""

    async def follow(
        self,
        record: RunRecord,
        cluster: ClusterConfig,
        node: str | None,
        lines: int,
        *,
        until_done: bool,
        out: TextIO | None = None,
        poll_s: float = 2.0,
    ) -> JobStatus | None:
        """Print the last lines, then new ones; with ``until_done`` return the final status once the job ended."""

    def job_env(self, record: RunRecord) -> dict[str, str]:
        """The environment every rank of the run got, as recorded (per-node values only where the
        launcher decided them): what a caller reads to learn e.g. which sweep a run belongs to."""

    def stop(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> list[StopResult]:
        """SIGTERM, SIGKILL after ``timeout``; verified: no process of the job left."""

    def stopped_text(self, name: str) -> str:
        """What is gone once ``stop`` succeeded (the end of ``corral stop``'s last line)."""

    def attach(self, record: RunRecord, cluster: ClusterConfig, node: str | None) -> AttachPlan:
        """A terminal on the job's node (or UserError saying in a sentence why not)."""

    def read_files(
        self, record: RunRecord, cluster: ClusterConfig, relpaths: list[str]
    ) -> dict[str, dict[str, str | None]]:
        """Per node, each of ``relpaths`` (relative to the run dir, ``{node}`` replaced) or None."""

    def clean_up(self, record: RunRecord, cluster: ClusterConfig, timeout: float) -> None:
        """Remove what is left of a finished job on its nodes (sessions, containers); the record stays."""

    def forget(self, record: RunRecord, cluster: ClusterConfig) -> list[str]:
        """``corral rm``: remove the run's files that live on the nodes only; returns the problems, per node."""

    def checking_text(self, cluster: ClusterConfig) -> str:
        """What the CLI shows while ``preflight`` runs."""

    def preflight(self, job: JobConfig | None, cluster: ClusterConfig) -> PreflightView:
        """``corral preflight``: every check this backend makes before a launch, none of it launched."""


# ---------------------------------------------------------------------------- the registry

BUILTIN: dict[str, str] = {
    "ssh": "launcher.backends.ssh.backend:SshBackend",
    "slurm": "launcher.backends.slurm.backend:SlurmBackend",
}
"""name -> ``module:class``, imported on first use (``corral --help`` stays fast)."""
_registered: dict[str, str | Callable[[], Backend]] = dict(BUILTIN)
_made: dict[str, Backend] = {}


def register(name: str, factory: str | Callable[[], Backend]) -> None:
    """Make ``name`` a backend a cluster file can ask for (``backend: NAME``); ``factory`` is a
    ``module:class`` string or a callable returning the backend. Registering a name again replaces it."""
    _registered[name] = factory
    _made.pop(name, None)


def unregister(name: str) -> None:
    """Forget a registered backend (the built-in ones come back with their defaults)."""
    _made.pop(name, None)
    if name in BUILTIN:
        _registered[name] = BUILTIN[name]
    else:
        _registered.pop(name, None)


def registered() -> list[str]:
    return sorted(_registered)


def backend_named(name: str, *, where: str = "backend") -> Backend:
    if name not in _made:
        factory = _registered.get(name)
        if factory is None:
            raise UserError(
                f"{where}: no backend named {name!r} (known: {', '.join(registered())})",
                hint="fix the name, or register the backend with launcher.backends.register",
            )
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        _made[name] = factory()
    return _made[name]


def backend_name(cluster: ClusterConfig) -> str:
    """The cluster file's backend: ``backend:`` when given, else ``slurm`` with a ``slurm:`` section, else ``ssh``."""
    return cluster.backend or ("slurm" if cluster.slurm is not None else "ssh")


def backend_for(cluster: ClusterConfig) -> Backend:
    """The backend that launches jobs on this cluster."""
    return backend_named(backend_name(cluster))


def backend_of(record: RunRecord) -> Backend:
    """The backend that launched this run (named in its record), which alone answers for it."""
    return backend_named(record.backend, where=f"run {record.name}")


__all__ = [
    "BUILTIN",
    "AttachPlan",
    "Backend",
    "Capabilities",
    "Description",
    "PreflightView",
    "TailLines",
    "backend_for",
    "backend_name",
    "backend_named",
    "backend_of",
    "register",
    "registered",
    "unregister",
]

"""The job file: what to run, on how many nodes and processes, with which environment."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from launcher.config.base import EnvValue, FileModel, StrictModel, check_env_names

Env = Annotated[dict[str, EnvValue], AfterValidator(check_env_names)]

JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
"""tmux session names cannot hold '.' or ':'; the name is also a directory name."""

NNODES_RANGE = re.compile(r"^(\d+):(\d+)$")


def _size_or_unlimited(value: Any) -> Any:
    """``64M``/``8MiB``/bytes -> int bytes; ``unlimited``/-1 stay ``'unlimited'`` (docker's -1)."""
    if value in ("unlimited", -1, "-1"):
        return "unlimited"
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64M, a number of bytes, or 'unlimited'")
    if isinstance(value, int):
        return value
    from launcher.errors import UserError
    from launcher.units import parse_size

    try:
        return parse_size(str(value), what="size")
    except UserError:
        raise ValueError("expected a size such as 64M, 8MiB, a number of bytes, or 'unlimited'") from None


SizeOrUnlimited = Annotated[
    Union[Annotated[int, Field(ge=0)], Literal["unlimited"]], BeforeValidator(_size_or_unlimited)
]
"""A ulimit value in bytes, written as a size (``64M``) or ``unlimited``."""

CONTAINER_PATH = r"^/"


class ContainerMount(StrictModel):
    """An extra bind mount from the node into the container."""

    source: str = Field(
        min_length=1,
        pattern=CONTAINER_PATH,
        description="Absolute path on the node; must exist (checked before anything starts).",
    )
    target: str | None = Field(
        default=None,
        min_length=1,
        pattern=CONTAINER_PATH,
        description="Absolute path inside the container; default: the same path as on the node.",
    )
    read_only: bool = Field(default=False, description="Mount read-only (e.g. datasets, configuration).")


class ContainerUlimits(StrictModel):
    """Resource limits set inside the container (soft = hard)."""

    memlock: SizeOrUnlimited = Field(
        default="unlimited",
        description="Locked-memory limit: RDMA (NCCL over InfiniBand) registers memory and needs 'unlimited'; "
        "a host whose hard limit is lower refuses it (checked before start).",
    )
    stack: SizeOrUnlimited = Field(
        default=64 * 1024 * 1024, description="Stack size limit (NVIDIA recommends 64M for NCCL/PyTorch)."
    )


class ContainerConfig(StrictModel):
    """Run each node's torchrun inside a container, with the node's InfiniBand devices and NCCL configuration."""

    image: str = Field(
        min_length=1, description="Image to run, present on every node (built locally or pulled beforehand)."
    )
    pull: Literal["missing", "never"] = Field(
        default="missing",
        description="'missing': try `docker pull` when the image is not on the node; 'never': fail instead.",
    )
    mounts: list[ContainerMount] = Field(
        default_factory=list,
        description="Extra bind mounts. The workdir, the venv, the runs and checkpoint directories are always mounted at the same paths.",
    )
    devices: list[Annotated[str, Field(pattern=CONTAINER_PATH)]] = Field(
        default_factory=list,
        description="Extra device nodes to pass through (e.g. /dev/fuse); each must be a device on the node.",
    )
    env: Env = Field(
        default_factory=dict, description="Environment variables set inside the container (override the job's env)."
    )
    gpus: Union[Literal["all", "none"], Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]] = Field(
        default="all",
        description="GPUs given to the container: 'all' (none on a CPU-only node), 'none', or a list of GPU indices. "
        "Needs the NVIDIA container toolkit on GPU nodes.",
    )
    infiniband: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="InfiniBand devices and NCCL mounts: 'auto' adds those the node has and reports the missing ones, "
        "'required' fails when any is missing, 'off' adds none.",
    )
    network: str = Field(
        default="host",
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Docker network: 'host' (default: NCCL sees the node's interfaces) or the name of an existing network.",
    )
    ipc: Literal["host", "private", "shareable"] = Field(
        default="host",
        description="IPC namespace: 'host' shares the node's /dev/shm (what NCCL and DataLoader workers need).",
    )
    shm_size: str | None = Field(
        default=None,
        min_length=1,
        description="Size of /dev/shm (e.g. 16G); only meaningful with ipc other than 'host'.",
    )
    ulimits: ContainerUlimits = Field(default_factory=ContainerUlimits, description="memlock and stack limits.")
    cap_add: list[Annotated[str, Field(pattern=r"^[A-Z_]+$")]] = Field(
        default_factory=list, description="Extra Linux capabilities (IPC_LOCK is always added)."
    )
    privileged: bool = Field(
        default=False, description="Run privileged (all devices, all capabilities); off unless you need it."
    )
    user: str | None = Field(
        default=None,
        min_length=1,
        description="User inside the container (NAME, UID or UID:GID); default: the image's.",
    )
    labels: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")], EnvValue] = Field(
        default_factory=dict, description="Extra container labels (corral.job and corral.node are always set)."
    )
    extra_args: list[EnvValue] = Field(
        default_factory=list,
        description="Extra `docker run` arguments, passed literally before the image (not representable as SDK keyword arguments).",
    )

    @field_validator("shm_size")
    @classmethod
    def _shm_is_size(cls, v: str | None) -> str | None:
        if v is not None:
            _size_or_unlimited(v)
        return v

    @model_validator(mode="after")
    def _shm_needs_private_ipc(self) -> ContainerConfig:
        if self.shm_size is not None and self.ipc == "host":
            raise ValueError(
                "shm_size has no effect with ipc: host (the container uses the node's /dev/shm); drop shm_size or set ipc: private"
            )
        return self


class CheckpointPolicy(StrictModel):
    """Checkpoint retention and pacing, passed to the training script's Checkpointer."""

    keep_last: int | None = Field(default=None, ge=1, description="Keep this many most recent checkpoints.")
    keep_every: int | None = Field(
        default=None, ge=1, description="Also keep every checkpoint whose step is a multiple of this."
    )
    max_write_mibps: float | None = Field(
        default=None, gt=0, description="Cap checkpoint write throughput (MiB/s) to spare a capped volume."
    )


def _duration(value: Any) -> Any:
    """``'30m'``/``'1h30m'``/``'90s'``/seconds -> float seconds (``launcher.units.parse_duration``)."""
    from launcher.errors import UserError
    from launcher.units import parse_duration

    try:
        return parse_duration(value)
    except UserError:
        raise ValueError("expected a duration such as 30s, 10m or 1h30m (a bare number is seconds)") from None


Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
"""A time span written as ``30s``, ``10m``, ``1h30m`` or a number of seconds; stored as seconds."""


class WatchdogConfig(StrictModel):
    """The hang watchdog: a process beside the job on every node that notices when no rank advances (docs/WATCHDOG.md)."""

    enabled: bool = Field(
        default=True, description="Run the watchdog beside a torchrun job (off: no watchdog process, no hang events)."
    )
    hang_after: Duration = Field(
        default=1800.0,
        description="No rank reported a step (or, for a job that never calls report(), wrote a log line) for this long = a hang.",
    )
    first_step_grace: Duration = Field(
        default=3600.0,
        description="The first step of every attempt (compiling, loading data) may take this long (at least hang_after).",
    )
    on_hang: Literal["dump", "stop", "restart"] = Field(
        default="dump",
        description="'dump': stack dumps of every rank and an event, nothing killed; 'stop': also end the job (state hung); "
        "'restart': also end the workers so torchrun restarts the group (needs max_restarts >= 1; after the last restart the job stops as hung).",
    )
    check_every: Duration | None = Field(
        default=None,
        description="How often each node samples its ranks; default: hang_after / 20, between 1 s and 30 s.",
    )
    straggler_after: Duration | None = Field(
        default=600.0,
        description="A node whose ranks stay behind the others' step for this long becomes a 'straggler' event; null: no straggler events.",
    )
    flight_recorder: bool = Field(
        default=True,
        description="Set PyTorch's NCCL Flight Recorder environment (buffer, dump on timeout, trace files in the run directory) unless the job sets it.",
    )

    def interval_s(self) -> float:
        """Seconds between two samples on a node."""
        if self.check_every is not None:
            return self.check_every
        return min(30.0, max(1.0, self.hang_after / 20))

    def grace_s(self) -> float:
        """The first step's allowance: never shorter than a later step's."""
        return max(self.first_step_grace, self.hang_after)

    def start_after_s(self) -> float:
        """When the watchdog starts, counted from the job's start: a quarter of the soonest it could report
        anything (a hang after ``hang_after``, a straggler after ``straggler_after``), at least one interval.

        Its verdicts read ages the job itself records (progress marks, the processes' start, the log's
        modification time), so a later start delays none of them; until then its interpreter would only
        compete with the ranks' own start (importing torch, the rendezvous) for the node's CPUs."""
        soonest = min(self.hang_after, self.straggler_after or self.hang_after)
        return max(self.interval_s(), soonest / 4)


class JobConfig(FileModel):
    """A distributed training job started with torchrun on each node."""

    name: str = Field(description="Job name: letters, digits, '-' and '_' (the tmux session is corral-<name>).")
    script: str | None = Field(
        default=None, min_length=1, description="Python script to run (relative to the cluster workdir)."
    )
    module: str | None = Field(
        default=None, min_length=1, description="Python module to run with -m, instead of a script."
    )
    args: list[EnvValue] = Field(default_factory=list, description="Arguments passed to the script, literally.")
    nproc_per_node: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = Field(
        default="auto",
        description="Processes per node, or 'auto': the node's GPU count (a CPU fallback count without GPUs).",
    )
    nnodes: Union[Annotated[int, Field(ge=1)], Literal["all"], Annotated[str, Field(pattern=NNODES_RANGE.pattern)]] = (
        Field(default="all", description="How many nodes: 'all', a number, or 'MIN:MAX' for an elastic job.")
    )
    backend: Literal["auto", "nccl", "gloo"] = Field(
        default="auto", description="torch.distributed backend; 'auto' = nccl with GPUs, gloo otherwise."
    )
    max_restarts: int = Field(
        default=0,
        ge=0,
        le=100,
        description="torchrun --max-restarts: restarts of the whole worker group after a failure.",
    )
    env: Env = Field(
        default_factory=dict, description="Environment variables for the job (override cluster and node env)."
    )
    env_file: str | None = Field(
        default=None,
        min_length=1,
        description="File of KEY=VALUE secrets (relative: to the job file), delivered to the nodes in a 0600 file, never on a command line.",
    )
    container: ContainerConfig | None = Field(default=None, description="Run inside a container on each node.")
    checkpoint: CheckpointPolicy | None = Field(default=None, description="Checkpoint policy for the training script.")
    watchdog: WatchdogConfig = Field(
        default_factory=WatchdogConfig, description="The hang watchdog beside the job on every node (docs/WATCHDOG.md)."
    )

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not re.match(JOB_NAME, v):
            raise ValueError("job name must be 1-63 letters, digits, '-' or '_', starting with a letter or digit")
        return v

    @field_validator("nnodes")
    @classmethod
    def _range_ordered(cls, v: int | str) -> int | str:
        if isinstance(v, str) and (m := NNODES_RANGE.match(v)):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo < 1 or lo > hi:
                raise ValueError("nnodes range must be MIN:MAX with 1 <= MIN <= MAX")
        return v

    @model_validator(mode="after")
    def _script_xor_module(self) -> JobConfig:
        if (self.script is None) == (self.module is None):
            raise ValueError("give exactly one of 'script' or 'module'")
        return self

    @model_validator(mode="after")
    def _restart_needs_restarts(self) -> JobConfig:
        if self.watchdog.enabled and self.watchdog.on_hang == "restart" and self.max_restarts < 1:
            raise ValueError(
                "watchdog.on_hang: restart needs max_restarts >= 1 (torchrun restarts the group); set max_restarts or use on_hang: stop"
            )
        return self

    def nnodes_bounds(self, available: int) -> tuple[int, int]:
        """(min, max) node counts for torchrun, given the cluster's node count."""
        if self.nnodes == "all":
            return available, available
        if isinstance(self.nnodes, int):
            return self.nnodes, self.nnodes
        lo, hi = (int(x) for x in self.nnodes.split(":"))
        return lo, hi

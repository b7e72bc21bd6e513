"""The job file: what to run, on how many nodes and processes, with which environment."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, field_validator, model_validator

from launcher.config.base import EnvValue, StrictModel, check_env_names

Env = Annotated[dict[str, EnvValue], AfterValidator(check_env_names)]

JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
"""tmux session names cannot hold '.' or ':'; the name is also a directory name."""

NNODES_RANGE = re.compile(r"^(\d+):(\d+)$")


class ContainerConfig(StrictModel):
    """Run each node's processes inside a container (filled in by the container support)."""

    image: str = Field(min_length=1, description="Image to run, present on every node (e.g. built locally or pulled beforehand).")


class CheckpointPolicy(StrictModel):
    """Checkpoint retention and pacing, passed to the training script's Checkpointer."""

    keep_last: int | None = Field(default=None, ge=1, description="Keep this many most recent checkpoints.")
    keep_every: int | None = Field(default=None, ge=1, description="Also keep every checkpoint whose step is a multiple of this.")
    max_write_mibps: float | None = Field(default=None, gt=0, description="Cap checkpoint write throughput (MiB/s) to spare a capped volume.")


class JobConfig(StrictModel):
    """A distributed training job started with torchrun on each node."""

    name: str = Field(description="Job name: letters, digits, '-' and '_' (the tmux session is corral-<name>).")
    script: str | None = Field(default=None, min_length=1, description="Python script to run (relative to the cluster workdir).")
    module: str | None = Field(default=None, min_length=1, description="Python module to run with -m, instead of a script.")
    args: list[EnvValue] = Field(default_factory=list, description="Arguments passed to the script, literally.")
    nproc_per_node: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = Field(
        default="auto", description="Processes per node, or 'auto': the node's GPU count (a CPU fallback count without GPUs)."
    )
    nnodes: Union[Annotated[int, Field(ge=1)], Literal["all"], Annotated[str, Field(pattern=NNODES_RANGE.pattern)]] = Field(
        default="all", description="How many nodes: 'all', a number, or 'MIN:MAX' for an elastic job."
    )
    backend: Literal["auto", "nccl", "gloo"] = Field(
        default="auto", description="torch.distributed backend; 'auto' = nccl with GPUs, gloo otherwise."
    )
    max_restarts: int = Field(default=0, ge=0, le=100, description="torchrun --max-restarts: restarts of the whole worker group after a failure.")
    env: Env = Field(default_factory=dict, description="Environment variables for the job (override cluster and node env).")
    env_file: str | None = Field(
        default=None, min_length=1, description="File of KEY=VALUE secrets, delivered to the nodes in a 0600 file, never on a command line."
    )
    container: ContainerConfig | None = Field(default=None, description="Run inside a container on each node.")
    checkpoint: CheckpointPolicy | None = Field(default=None, description="Checkpoint policy for the training script.")

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
    def _script_xor_module(self) -> "JobConfig":
        if (self.script is None) == (self.module is None):
            raise ValueError("give exactly one of 'script' or 'module'")
        return self

    def nnodes_bounds(self, available: int) -> tuple[int, int]:
        """(min, max) node counts for torchrun, given the cluster's node count."""
        if self.nnodes == "all":
            return available, available
        if isinstance(self.nnodes, int):
            return self.nnodes, self.nnodes
        lo, hi = (int(x) for x in self.nnodes.split(":"))
        return lo, hi

"""The cluster file: which machines, how to reach them, where things live on them."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from launcher.config.base import EnvValue, FileModel, StrictModel, check_env_names

LOCALHOST_NAMES = frozenset({"localhost", "127.0.0.1"})

Port = Annotated[int, Field(ge=1, le=65535)]
Env = Annotated[dict[str, EnvValue], AfterValidator(check_env_names)]


class NodeConfig(StrictModel):
    """One machine of the cluster."""

    host: str = Field(
        min_length=1,
        description="ssh destination (a name from ~/.ssh/config, a hostname or an address), or 'localhost' to run here without ssh.",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="Short name used in logs, tables and --node; defaults to the host.",
    )
    gpus: int | None = Field(
        default=None, ge=0, description="GPU count; leave unset to detect it on the node (0 for a CPU-only node)."
    )
    env: Env = Field(default_factory=dict, description="Environment variables for processes on this node only.")
    addr: str | None = Field(
        default=None,
        description="The node's private-network IPv4 address, used for rendezvous and torchrun --local-addr.",
    )

    @field_validator("host")
    @classmethod
    def _host_is_one_word(cls, v: str) -> str:
        if any(c.isspace() for c in v) or v.startswith("-"):
            raise ValueError(
                "host must be one word and must not start with '-' (an ssh destination such as 'user@gpu1' or 'gpu1')"
            )
        return v

    @field_validator("addr")
    @classmethod
    def _addr_is_ipv4(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ipaddress.IPv4Address(v)
        except ValueError:
            raise ValueError("addr must be an IPv4 address such as 10.0.0.2 (the target clouds have no IPv6)") from None
        return v

    @property
    def label(self) -> str:
        """The name people see for this node."""
        return self.name or self.host

    @property
    def is_local(self) -> bool:
        return self.host in LOCALHOST_NAMES


class SSHConfig(StrictModel):
    """How the system OpenSSH client reaches the nodes (~/.ssh/config is honoured too)."""

    user: str | None = Field(
        default=None,
        min_length=1,
        description="Remote user; default: ssh's own choice (~/.ssh/config or the local user).",
    )
    port: Port = Field(default=22, description="sshd port on every node.")
    identity_file: str | None = Field(default=None, min_length=1, description="Private key passed as ssh -i.")
    options: dict[str, EnvValue] = Field(
        default_factory=dict, description="Extra ssh -o options, e.g. {StrictHostKeyChecking: accept-new}."
    )
    connect_timeout: int = Field(
        default=10, ge=1, le=600, description="Seconds before an unreachable node is reported."
    )

    @field_validator("options")
    @classmethod
    def _option_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not k.isalnum()]
        if bad:
            raise ValueError(f"ssh option names are single words such as ServerAliveInterval; got {bad}")
        return v


class RendezvousConfig(StrictModel):
    """torchrun's c10d rendezvous on the first node."""

    port: Port = Field(
        default=29400,
        description="Preferred rendezvous port on the first node; a free one near it is probed at launch.",
    )


class StorageConfig(StrictModel):
    """Where runs (logs, records) and checkpoints go; relative paths are taken from the cluster file's directory
    (the embedded default's from the project directory: the nearest one holding runs/ or .git)."""

    runs: str = Field(
        default="./runs", min_length=1, description="Directory for run records and logs (shared by all nodes ideally)."
    )
    checkpoints: str = Field(
        default="./checkpoints",
        min_length=1,
        description="Checkpoint root; each job writes under <checkpoints>/<job name>.",
    )


SLURM_WORD = r"^[A-Za-z0-9][A-Za-z0-9_.,:+=@-]*$"
"""Partition, account, QOS and constraint names: one word, no leading '-' (they go on sbatch's argv)."""


class SlurmConfig(StrictModel):
    """A Slurm cluster: each job is one batch job (``sbatch``) whose allocation size is the job's ``nnodes``."""

    partition: str = Field(min_length=1, pattern=SLURM_WORD, description="Partition to submit to (sbatch --partition).")
    account: str | None = Field(default=None, min_length=1, pattern=SLURM_WORD, description="sbatch --account.")
    qos: str | None = Field(default=None, min_length=1, pattern=SLURM_WORD, description="sbatch --qos.")
    time: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[0-9:-]+$",
        description="Time limit, sbatch --time (e.g. 1-00:00:00 or 90 for minutes).",
    )
    constraint: str | None = Field(
        default=None, min_length=1, description="sbatch --constraint (node features, e.g. 'a100&ib')."
    )
    gpus_per_node: int | None = Field(
        default=None,
        ge=0,
        description="GPUs per node (sbatch --gpus-per-node); also the processes per node for nproc_per_node: auto.",
    )
    exclusive: bool = Field(default=False, description="sbatch --exclusive: no other job shares the nodes.")
    signal_before_s: int = Field(
        default=120,
        ge=1,
        le=86400,
        description="Seconds before the time limit at which Slurm sends SIGUSR1 (sbatch --signal=B:USR1@S); the workers get it and can checkpoint.",
    )
    requeue: bool = Field(
        default=True,
        description="sbatch --requeue: a preempted job, or one that asks after SIGUSR1, goes back to the queue.",
    )
    sbatch_args: list[EnvValue] = Field(
        default_factory=list, description="More sbatch options, passed literally as '#SBATCH' lines (e.g. ['--mem=0'])."
    )
    login: str | None = Field(
        default=None,
        min_length=1,
        description="A host to run sbatch/squeue/scancel on over ssh; null = run them on this machine (the clients find slurm.conf as usual: SLURM_CONF or the default path).",
    )

    @field_validator("sbatch_args")
    @classmethod
    def _options_only(cls, v: list[str]) -> list[str]:
        for i, arg in enumerate(v):
            if not arg.startswith("-") or "\n" in arg:
                raise ValueError(
                    f"item {i}: each item is one sbatch option starting with '-' on one line (got {arg!r})"
                )
        return v


class ClusterConfig(FileModel):
    """Where jobs run: a set of machines reached over ssh (``nodes:``), or a Slurm cluster (``slurm:``)."""

    nodes: list[NodeConfig] = Field(
        default_factory=list,
        min_length=1,
        description="The machines (ssh + tmux); the first one hosts the rendezvous. Give this or 'slurm', not both.",
    )
    slurm: SlurmConfig | None = Field(
        default=None,
        description="Run jobs as Slurm batch jobs on this partition instead of over ssh. Give this or 'nodes', not both.",
    )
    backend: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="Which backend runs the jobs, by its registered name (default: 'slurm' with a slurm section, else 'ssh'); another name is a backend a plugin registered with launcher.backends.register.",
    )
    ssh: SSHConfig = Field(default_factory=SSHConfig, description="ssh client settings.")
    workdir: str = Field(
        default=".",
        min_length=1,
        description="Directory the job runs in on every node (the code's checkout); relative: to the cluster file's directory.",
    )
    venv: str | None = Field(
        default=None,
        min_length=1,
        description="Python virtual environment activated inside each tmux pane (its directory; relative: to workdir).",
    )
    rendezvous: RendezvousConfig = Field(default_factory=RendezvousConfig, description="Rendezvous settings.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Run and checkpoint directories.")
    env: Env = Field(default_factory=dict, description="Environment variables for every node.")

    @model_validator(mode="after")
    def _nodes_xor_slurm(self) -> ClusterConfig:
        if self.slurm is not None and "nodes" in self.model_fields_set:
            raise ValueError("give either 'nodes' (machines reached over ssh) or 'slurm' (a Slurm partition), not both")
        if self.slurm is None and not self.nodes:
            raise ValueError(
                "give 'nodes' (a list of machines reached over ssh) or 'slurm' (a Slurm partition); the cluster has neither"
            )
        return self

    @model_validator(mode="after")
    def _unique_nodes(self) -> ClusterConfig:
        for attr, what in (("host", "host"), ("label", "name")):
            seen: dict[str, int] = {}
            for i, node in enumerate(self.nodes):
                key = getattr(node, attr)
                if key in seen:
                    raise ValueError(
                        f"nodes.{i}: duplicate {what} '{key}' (also nodes.{seen[key]}); every node must be a different machine"
                    )
                seen[key] = i
        return self

    def node(self, key: str) -> NodeConfig:
        """Find a node by name or host; raises KeyError listing the known ones."""
        for node in self.nodes:
            if key in (node.label, node.host):
                return node
        raise KeyError(key)

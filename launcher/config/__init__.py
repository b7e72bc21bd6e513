"""Typed, strict configuration: the cluster file and the job file."""

from launcher.config.cluster import ClusterConfig, NodeConfig, SlurmConfig, SSHConfig, StorageConfig
from launcher.config.job import CheckpointPolicy, ContainerConfig, JobConfig, WatchdogConfig
from launcher.config.loading import apply_overrides, load_cluster, load_job, parse_yaml, read_yaml, validate

__all__ = [
    "CheckpointPolicy",
    "ClusterConfig",
    "ContainerConfig",
    "JobConfig",
    "NodeConfig",
    "SSHConfig",
    "SlurmConfig",
    "StorageConfig",
    "WatchdogConfig",
    "apply_overrides",
    "load_cluster",
    "load_job",
    "parse_yaml",
    "read_yaml",
    "validate",
]

"""Execution backends behind one small interface (``base.Backend``): ssh + tmux, and Slurm.

The cluster file alone chooses: ``nodes:`` is the ssh + tmux backend, ``slurm:`` the Slurm one.
"""

from __future__ import annotations

from launcher.backends.base import Backend
from launcher.config import ClusterConfig


def backend_for(cluster: ClusterConfig) -> Backend:
    if cluster.slurm is not None:
        from launcher.backends.slurm.backend import SlurmBackend

        return SlurmBackend()
    from launcher.backends.ssh.backend import SshTmuxBackend

    return SshTmuxBackend()


def is_slurm_record(record: object) -> bool:
    return getattr(record, "slurm", None) is not None


__all__ = ["Backend", "backend_for", "is_slurm_record"]

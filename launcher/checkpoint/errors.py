"""Errors a training script may catch around checkpoint saves and loads.

They derive from corral's CLI errors so ``corral ckpt`` prints them as one line with the
right exit code, but importing them pulls in nothing heavier than the standard library.
"""

from __future__ import annotations

from launcher.errors import RunFailed, UserError


class CheckpointError(RunFailed):
    """A save or load failed (disk full, I/O error, a rank failed); the previous checkpoints are intact."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file is missing, truncated or does not match its manifest's checksum."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class WorldSizeMismatch(CheckpointError):
    """The checkpoint was written by a different number of ranks than the job now has."""


class CheckpointPathError(UserError):
    """The checkpoint root is somewhere that does not survive (tmpfs, a container layer, /tmp)."""

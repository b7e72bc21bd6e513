"""Snapshot-friendly checkpoints for training scripts (no CLI dependency).

    from launcher.checkpoint import Checkpointer
    ckpt = Checkpointer.from_env()                  # root = $CORRAL_CKPT_DIR under `corral launch`
    found = ckpt.load_latest()                      # (step, state) or None
    ckpt.save(step, state, blocking=False)          # async: copied to CPU, written in the background
    ckpt.wait()

See docs/CHECKPOINTS.md for the on-disk layout and the guarantees. ``Checkpointer`` is
imported lazily so that ``corral ckpt verify`` (which only reads files) does not import torch.
"""

from launcher.checkpoint.errors import CheckpointError, CheckpointPathError, CorruptCheckpoint, WorldSizeMismatch

__all__ = ["Checkpointer", "CheckpointError", "CheckpointPathError", "CorruptCheckpoint", "WorldSizeMismatch"]


def __getattr__(name: str):
    if name == "Checkpointer":
        from launcher.checkpoint.checkpointer import Checkpointer

        return Checkpointer
    raise AttributeError(f"module 'launcher.checkpoint' has no attribute {name!r}")

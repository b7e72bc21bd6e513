"""How ranks agree during a save: a single process, or a torch.distributed job.

The checkpointer only needs four collectives. In a distributed job they run on a separate
gloo group created for checkpoints, so an async save's background thread never interleaves
with the training loop's own collectives (NCCL or gloo) on the default group.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any


class SoloGroup:
    """One process: every collective is trivial."""

    rank = 0
    world_size = 1

    def __init__(self) -> None:
        self.local_world_size = 1

    def barrier(self) -> None:
        pass

    def gather(self, obj: Any) -> list[Any] | None:
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        return obj

    def all_true(self, flag: bool) -> bool:
        return flag


class TorchGroup:
    """Collectives over a dedicated gloo group (creating it is itself collective: every rank must)."""

    def __init__(self, timeout_s: float | None = None) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
        self.group = dist.new_group(backend="gloo", **kwargs)

    def barrier(self) -> None:
        self._dist.barrier(group=self.group)

    def gather(self, obj: Any) -> list[Any] | None:
        out = [None] * self.world_size if self.rank == 0 else None
        self._dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        self._dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def all_true(self, flag: bool) -> bool:
        import torch

        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        self._dist.all_reduce(t, op=self._dist.ReduceOp.MIN, group=self.group)
        return bool(t.item())


def default_group(distributed: bool | None, timeout_s: float | None = None):
    """TorchGroup inside an initialised process group (unless ``distributed`` is False), else SoloGroup."""
    if distributed is False:
        return SoloGroup()
    import torch.distributed as dist

    active = dist.is_available() and dist.is_initialized()
    if distributed and not active:
        raise RuntimeError("distributed=True but torch.distributed is not initialised: call init_process_group first")
    return TorchGroup(timeout_s) if active else SoloGroup()

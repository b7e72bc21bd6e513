"""How ranks agree during a save: a single process, or a torch.distributed job.

The checkpointer only needs four collectives. In a distributed job they run on a separate
gloo process group created for checkpoints, so an async save's background thread never interleaves
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
    """Collectives over a dedicated gloo process group (creating it is itself collective: every rank must).

    Not ``dist.new_group``: torch 2.13's torchrun can share one TCPStore server across restart
    attempts and give it to the workers without a per-attempt prefix, so keys of a dead
    attempt's groups stay readable by the next one (restarted workers then connect to dead
    addresses). This group lives under a store prefix naming the round's store address
    (MASTER_ADDR:MASTER_PORT, the same on every rank of a round). TORCHELASTIC_RESTART_COUNT
    cannot serve: after a failure on one node, the other nodes' agents restart their workers
    for the membership change without counting a restart, so ranks of one round disagree on it
    and the group would never form. corral's launcher gives each attempt its own store
    (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``) when the job has restarts, which makes the prefix
    unique per attempt (a job without restarts has one attempt); see docs/CHECKPOINTS.md.
    """

    _created = 0

    def __init__(self, timeout_s: float | None = None) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        round_store = f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
        TorchGroup._created += 1
        prefix = f"corral-ckpt/{round_store}/{TorchGroup._created}"
        store = dist.PrefixStore(prefix, dist.distributed_c10d._get_default_store())
        self.pg = dist.ProcessGroupGloo(store, self.rank, self.world_size, timedelta(seconds=timeout_s or 1800))

    def barrier(self) -> None:
        self.pg.barrier().wait()

    def _bytes_tensor(self, obj: Any):
        import pickle

        import torch

        return torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's object on rank 0 (an all-gather underneath: the records are tiny)."""
        import pickle

        import torch

        mine = self._bytes_tensor(obj)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        self.pg.allgather([sizes], [torch.tensor([mine.numel()], dtype=torch.int64)]).wait()
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: mine.numel()] = mine
        out = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        self.pg.allgather([out], [padded]).wait()
        if self.rank != 0:
            return None
        return [pickle.loads(t[: int(n.item())].numpy().tobytes()) for t, n in zip(out, sizes)]

    def broadcast(self, obj: Any) -> Any:
        import pickle

        import torch

        data = self._bytes_tensor(obj) if self.rank == 0 else torch.zeros(0, dtype=torch.uint8)
        size = torch.tensor([data.numel()], dtype=torch.int64)
        self.pg.broadcast([size], self._root()).wait()
        if self.rank != 0:
            data = torch.zeros(int(size.item()), dtype=torch.uint8)
        self.pg.broadcast([data], self._root()).wait()
        return pickle.loads(data.numpy().tobytes())

    def all_true(self, flag: bool) -> bool:
        import torch

        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        opts = self._dist.AllreduceOptions()
        opts.reduceOp = self._dist.ReduceOp.MIN
        self.pg.allreduce([t], opts).wait()
        return bool(t.item())

    def _root(self):
        opts = self._dist.BroadcastOptions()
        opts.rootRank = 0
        opts.rootTensor = 0
        return opts


def default_group(distributed: bool | None, timeout_s: float | None = None):
    """TorchGroup inside an initialised process group (unless ``distributed`` is False), else SoloGroup."""
    if distributed is False:
        return SoloGroup()
    import torch.distributed as dist

    active = dist.is_available() and dist.is_initialized()
    if distributed and not active:
        raise RuntimeError("distributed=True but torch.distributed is not initialised: call init_process_group first")
    return TorchGroup(timeout_s) if active else SoloGroup()

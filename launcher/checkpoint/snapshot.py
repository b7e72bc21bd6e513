"""The async save's snapshot: one kept host buffer, the copies into it, and when they are complete.

The training loop is blocked for as long as it takes to *start* the snapshot, so:

- CPU tensors are copied synchronously (a memcpy into the kept buffer; torch splits each copy
  over its intra-op threads). That memcpy is the floor of a snapshot taken at call time.
- CUDA tensors are copied with ``non_blocking=True`` into the pinned buffer: the copies are
  enqueued on each device's current stream and an event is recorded after them. The caller is
  not blocked at all; stream order keeps every later kernel on that stream (the optimizer step)
  behind the copy. The background writer waits on the event (:meth:`CopyFence.wait`) before it
  reads the buffer, and the source tensors stay referenced until then so the caching allocator
  cannot hand their memory to someone else while a copy still reads it.
  (Before, the caller ran ``torch.cuda.synchronize()``: the whole device drained while the
  training thread waited.) A tensor changed by work on *another* stream is not ordered by this;
  such code must synchronise that stream before calling save().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from launcher.checkpoint.shardfile import ShardPlan


@dataclass
class CopyFence:
    """Completion of one snapshot's copies: empty (already complete) for a CPU-only state."""

    events: list = field(default_factory=list)
    """One recorded CUDA event per device that had source tensors (anything with ``synchronize()``)."""
    keep_alive: list = field(default_factory=list)
    """The device tensors the enqueued copies read; released once every event has completed."""

    def wait(self) -> None:
        """Block until every copy has landed in the host buffer (call it off the training thread)."""
        for event in self.events:
            event.synchronize()
        self.events = []
        self.keep_alive = []


def allocate_buffer(nbytes: int) -> torch.Tensor:
    """A host buffer for snapshots: pinned when CUDA exists, so device-to-host copies are true DMA.

    Its pages are faulted in by the first copy into it; the Checkpointer keeps it between saves,
    because faulting in 1 GiB of fresh pages costs more than the copy itself.
    """
    return torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=torch.cuda.is_available())


def cuda_devices(plan: ShardPlan) -> list[torch.device]:
    """Devices of the plan's CUDA tensors, in first-seen order (each needs its own event)."""
    seen: dict[torch.device, None] = {}
    for e in plan.tensors:
        if e.nbytes and e.source is not None and e.source.device.type == "cuda":
            seen.setdefault(e.source.device, None)
    return list(seen)


def _record_event(device: torch.device) -> Any:  # pragma: no cover - needs a CUDA device
    with torch.cuda.device(device):
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
    return event


def copy_to_buffer(plan: ShardPlan, buffer: torch.Tensor) -> CopyFence:
    """Snapshot every tensor into ``buffer`` (uint8, at least data_len bytes) at its file offset.

    Returns once CPU tensors are copied and device copies are enqueued; the fence says when the
    device copies are done. The plan lets go of the caller's tensors (the buffer is the source now).
    """
    devices = cuda_devices(plan)
    keep: list[torch.Tensor] = []
    for e in plan.tensors:
        if e.nbytes:
            src = e.source.detach().resolve_conj().resolve_neg()
            dst = buffer[e.offset : e.offset + e.nbytes].view(src.dtype).view(src.shape)
            on_cuda = src.device.type == "cuda"  # other devices: a plain (blocking) copy
            dst.copy_(src, non_blocking=on_cuda)
            if on_cuda:
                keep.append(src)
        e.source = None
    return CopyFence([_record_event(d) for d in devices], keep)

"""The async save's snapshot: one kept host buffer, the copies into it, and when they are complete.

The training loop is blocked for as long as it takes to *start* the snapshot, so:

- CPU tensors are copied synchronously (a memcpy into the kept buffer; torch splits each copy
  over its intra-op threads). That memcpy is the floor of a snapshot taken at call time.
- CUDA tensors are copied with ``non_blocking=True`` into the pinned buffer on a copy stream of
  their own (one per device), which first waits for the work already queued on the caller's
  current stream, so the copy sees the state as of the call; an event is recorded after the
  copies. The caller is not blocked at all, and the device-to-host DMA runs on the copy engine
  beside the compute stream instead of inside it. The background writer waits on the event
  (:meth:`CopyFence.wait`) before it reads the buffer, and the source tensors stay referenced until
  then so the caching allocator cannot hand their memory to someone else while a copy still reads it.
- Ordering of later writes to the state: with ``snapshot="now"`` the caller's current stream waits
  for the copy event at once (a device-side wait: every later kernel on it, the optimizer step
  too, runs after the copy; the host never waits). With ``snapshot="background"`` it does not:
  the next forward/backward overlaps the copy, and :meth:`CopyFence.order_current_streams`, called
  by ``wait_snapshot()`` (the optimizer guard), makes the current stream wait before the step.
  (Before, the copies ran on the current stream, so the next step's kernels queued behind the whole
  device-to-host copy, and background snapshots copied from the writer thread.) A tensor changed
  by work on *another* stream is not ordered by this; such code must synchronise that stream
  before calling save().
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
    devices: list = field(default_factory=list)
    """The device of each event, for :meth:`order_current_streams` (empty where nothing orders on them)."""

    def wait(self) -> None:
        """Block until every copy has landed in the host buffer (call it off the training thread)."""
        for event in self.events:
            event.synchronize()
        self.events = []
        self.devices = []
        self.keep_alive = []

    def order_current_streams(self) -> None:
        """Make this thread's current stream of each device wait for the copies (on the device, not the host).

        Safe while :meth:`wait` runs in another thread: a fence already waited on has nothing left to order.
        """
        for device, event in list(zip(self.devices, self.events)):
            torch.cuda.current_stream(device).wait_event(event)


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


_COPY_STREAMS: dict = {}


def _copy_stream(device: torch.device) -> Any:  # pragma: no cover - needs a CUDA device
    """The snapshot copy stream of ``device``, made once per process."""
    if device not in _COPY_STREAMS:
        _COPY_STREAMS[device] = torch.cuda.Stream(device=device)
    return _COPY_STREAMS[device]


def _resolved(src: torch.Tensor) -> torch.Tensor:
    return src.detach().resolve_conj().resolve_neg()


def _target(buffer: torch.Tensor, e, src: torch.Tensor) -> torch.Tensor:
    return buffer[e.offset : e.offset + e.nbytes].view(src.dtype).view(src.shape)


def enqueue_device_copies(plan: ShardPlan, buffer: torch.Tensor, *, order_current: bool) -> CopyFence:
    """Enqueue the copies of the plan's CUDA tensors into ``buffer`` on each device's copy stream.

    ``order_current``: the caller's current streams wait for the copies right away (every later
    kernel on them runs after the copy). The copied entries let go of their tensors.
    """
    fence = CopyFence()
    for device in cuda_devices(plan):  # pragma: no cover - needs a CUDA device
        current, side = torch.cuda.current_stream(device), _copy_stream(device)
        side.wait_stream(current)  # the copy sees everything queued before save()
        with torch.cuda.stream(side):
            for e in plan.tensors:
                if e.nbytes and e.source is not None and e.source.device == device:
                    src = _resolved(e.source)  # a conj/neg view is resolved on the copy stream too
                    _target(buffer, e, src).copy_(src, non_blocking=True)
                    fence.keep_alive.append(src)
                    e.source = None
            event = torch.cuda.Event()
            event.record(side)
        if order_current:
            current.wait_event(event)
        fence.events.append(event)
        fence.devices.append(device)
    return fence


def copy_host_tensors(plan: ShardPlan, buffer: torch.Tensor) -> None:
    """Copy every remaining (non-CUDA) tensor into ``buffer`` synchronously; the plan lets go of them."""
    for e in plan.tensors:
        if e.nbytes and e.source is not None:
            src = _resolved(e.source)
            _target(buffer, e, src).copy_(src)
        e.source = None


def copy_to_buffer(plan: ShardPlan, buffer: torch.Tensor) -> CopyFence:
    """Snapshot every tensor into ``buffer`` (uint8, at least data_len bytes) at its file offset.

    Returns once CPU tensors are copied and device copies are enqueued (later kernels on the
    caller's current streams are ordered after them); the fence says when the device copies are
    done. The plan lets go of the caller's tensors (the buffer is the source now).
    """
    fence = enqueue_device_copies(plan, buffer, order_current=True)
    copy_host_tensors(plan, buffer)
    return fence

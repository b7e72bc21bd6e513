"""The async snapshot's logic on CPU: copies, the fence the background writer waits on, wait_snapshot.

The CUDA path (non_blocking copies into pinned memory, one event per device) cannot run here;
what can: a CPU-only state never touches CUDA even when CUDA is present, the writer waits on the
fence before it reads the buffer, and the fence keeps the sources alive until its events complete.
"""

from __future__ import annotations

import os
import threading

import pytest
import torch

from launcher.checkpoint import Checkpointer
from launcher.checkpoint import checkpointer as checkpointer_mod
from launcher.checkpoint.shardfile import plan_shard
from launcher.checkpoint.snapshot import CopyFence, allocate_buffer, copy_to_buffer, cuda_devices
from tests.ckpt_helpers import assert_same, make_state, remove_dir, unique_dir


@pytest.fixture
def root():
    path = unique_dir("cksnap")
    yield os.path.join(path, "job")
    remove_dir(path)


def _no_cuda_calls(monkeypatch):
    """Pretend CUDA exists, and fail on any CUDA call a CPU-only snapshot must not make."""

    def forbidden(*_a, **_k):
        raise AssertionError("a CPU-only snapshot made a CUDA call")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("synchronize", "Event", "current_stream", "device"):
        monkeypatch.setattr(torch.cuda, name, forbidden)


def test_cpu_copy_is_complete_on_return_and_never_waits_on_cuda(monkeypatch):
    state = make_state(3)
    plan = plan_shard(state)
    assert cuda_devices(plan) == []
    buffer = torch.empty(plan.data_len, dtype=torch.uint8)
    _no_cuda_calls(monkeypatch)
    fence = copy_to_buffer(plan, buffer)
    assert fence.events == [] and fence.keep_alive == []
    assert all(e.source is None for e in plan.tensors), "the plan lets go of the caller's tensors"
    w = state["model"]["w"]
    entry = next(e for e in plan.tensors if e.shape == list(w.shape))
    assert torch.equal(buffer[entry.offset : entry.offset + entry.nbytes].view(torch.float32).view(w.shape), w)
    fence.wait()  # nothing to wait for


class _Event:
    """Stands in for a CUDA event: records when it was waited on and what was still kept alive."""

    def __init__(self, log: list, name: str, fence_ref: list) -> None:
        self.log, self.name, self.fence_ref = log, name, fence_ref

    def synchronize(self) -> None:
        self.log.append((self.name, len(self.fence_ref[0].keep_alive)))


def test_fence_waits_every_event_before_releasing_the_sources():
    log: list = []
    ref: list = [None]
    kept = [torch.ones(3), torch.zeros(2)]
    fence = CopyFence([_Event(log, "cuda:0", ref), _Event(log, "cuda:1", ref)], kept)
    ref[0] = fence
    fence.wait()
    assert log == [("cuda:0", 2), ("cuda:1", 2)], "sources stay referenced while any copy may still read them"
    assert fence.keep_alive == [] and fence.events == []
    fence.wait()
    assert len(log) == 2, "a completed fence is not waited on again"


def test_background_writer_waits_on_the_fence_before_reading_the_buffer(root, monkeypatch):
    """Copies that land late (as a device-to-host DMA does) still end up in the file."""
    real_copy = checkpointer_mod.copy_to_buffer

    class LateCopy:
        def __init__(self, buffer, saved):
            self.buffer, self.saved = buffer, saved

        def synchronize(self):
            self.buffer.copy_(self.saved)

    def copy_landing_late(plan, buffer):
        real_copy(plan, buffer)
        saved = buffer.clone()
        buffer.zero_()  # nothing has landed when save() returns
        return CopyFence([LateCopy(buffer, saved)], [])

    monkeypatch.setattr(checkpointer_mod, "copy_to_buffer", copy_landing_late)
    state = make_state(5)
    ckpt = Checkpointer(root)
    ckpt.save(5, state, blocking=False)
    ckpt.wait()
    assert_same(state, Checkpointer(root).load(5))


@pytest.mark.timeout(60)
def test_default_async_save_never_makes_wait_snapshot_or_a_guarded_step_wait(root, monkeypatch):
    """The snapshot is taken when save() returns: a guarded optimizer steps at once, and the file has the pre-step values."""
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ckpt = Checkpointer(root)
    handle = ckpt.guard(opt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    release = threading.Event()
    real_write = checkpointer_mod.Checkpointer._save_now

    def held_write(self, *args):
        release.wait()  # the write is still in flight while the loop goes on
        return real_write(self, *args)

    monkeypatch.setattr(checkpointer_mod.Checkpointer, "_save_now", held_write)
    try:
        ckpt.save(1, {"model": model.state_dict()}, blocking=False)
        model(torch.randn(4, 64)).sum().backward()
        opt.step()  # must not wait for the write (it used to wait forever)
        ckpt.wait_snapshot()
    finally:
        release.set()
    ckpt.wait()
    handle.remove()
    assert not torch.equal(model.weight, before["weight"])
    assert_same(before, ckpt.load(1)["model"])


def test_allocated_buffer_is_plain_host_memory_without_cuda():
    buf = allocate_buffer(0)
    assert buf.numel() == 1 and buf.dtype == torch.uint8 and buf.device.type == "cpu"


def test_reserve_allocates_the_buffer_that_async_saves_then_reuse(root):
    state = make_state(7)
    ckpt = Checkpointer(root)
    ckpt.reserve(state)
    ptr = ckpt._buffer.data_ptr()
    assert ckpt._buffer.numel() >= plan_shard(state).data_len
    for step in (1, 2):
        ckpt.save(step, state, blocking=False)
        assert ckpt._buffer.data_ptr() == ptr, "no new allocation inside save()"
    ckpt.close()
    assert_same(state, Checkpointer(root).load(2))


def test_background_fence_orders_the_callers_stream_not_the_host(monkeypatch):
    """wait_snapshot() on CUDA copies: the current stream of each device waits for its event; nothing blocks."""
    waited: list = []

    class Stream:
        def __init__(self, device):
            self.device = device

        def wait_event(self, event):
            waited.append((self.device, event))

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: Stream(device))
    fence = CopyFence(["ev0", "ev1"], [torch.ones(1)], ["cuda:0", "cuda:1"])
    fence.order_current_streams()
    assert waited == [("cuda:0", "ev0"), ("cuda:1", "ev1")]
    assert fence.events == ["ev0", "ev1"] and fence.keep_alive, "ordering neither waits on nor releases anything"

"""Multi-rank checkpoints with real gloo processes on CPU (3 ranks, file:// rendezvous: no ports)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from launcher.checkpoint import Checkpointer, WorldSizeMismatch
from launcher.checkpoint.inspect import scan
from tests.ckpt_helpers import assert_same, make_state, remove_dir, unique_dir

WORLD = 3


def rank_state(step: int, rank: int) -> dict:
    state = make_state(step * 100 + rank)
    state["rank"] = rank
    return state


def _worker(rank: int, root: str, init_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        ckpt = Checkpointer(root, keep_last=2)
        assert ckpt.world_size == WORLD and ckpt.rank == rank
        assert ckpt.load_latest() is None
        ckpt.save(1, rank_state(1, rank))
        ckpt.save(2, rank_state(2, rank), blocking=False)
        dist.all_reduce(torch.ones(4))  # the training loop's own collectives go on meanwhile
        ckpt.save(3, rank_state(3, rank), blocking=False)
        ckpt.wait()
        step, state = ckpt.load_latest()
        assert step == 3
        assert_same(rank_state(3, rank), state)
        dist.barrier()
        if rank == 0:  # damage rank 2's file of step 3: every rank must fall back to step 2 together
            path = os.path.join(root, "step-00000003", "rank-00002-of-00003.bin")
            with open(path, "r+b") as f:
                f.seek(-100, os.SEEK_END)
                f.write(b"\xff" * 8)
        dist.barrier()
        step, state = ckpt.load_latest()
        assert step == 2, f"rank {rank} loaded step {step}"
        assert_same(rank_state(2, rank), state)
        ckpt.close()
    finally:
        dist.destroy_process_group()


@pytest.fixture
def base():
    path = unique_dir("ckdist")
    yield path
    remove_dir(path)


@pytest.mark.slow
def test_three_gloo_ranks_save_publish_once_and_resume_together(base):
    root = os.path.join(base, "job")
    mp.spawn(_worker, args=(root, os.path.join(base, "rendezvous")), nprocs=WORLD, join=True)
    found = scan(root, full=True)
    assert [c.step for c in found.checkpoints] == [2, 3], "keep_last=2 removed step 1"
    assert found.leftovers == []
    step2 = found.checkpoints[0]
    assert step2.valid and step2.manifest.world_size == WORLD
    assert sorted(f.name for f in step2.manifest.files) == [f"rank-0000{r}-of-00003.bin" for r in range(WORLD)]
    assert any("rank-00002-of-00003.bin" in p for p in found.checkpoints[1].problems)
    with pytest.raises(WorldSizeMismatch, match="written by 3 rank"):
        Checkpointer(root).load_latest()  # a single process cannot resume a 3-rank checkpoint

"""Every GPU path of corral against real figures and real data; each test skips cleanly without a GPU.

Run on a GPU machine by ``make gpu-check`` (its gpu_tests step), or ``pytest -m gpu tests/test_gpu_paths.py``.
No timing bars here (they are the acceptance run's verdicts, as ratios in one run): these tests
check that the figures are physically possible and that the data is exactly right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.ckpt_helpers import assert_same, remove_dir, unique_dir

pytestmark = pytest.mark.gpu
# A GPU machine's disk may be an overlay, which the checkpointer refuses by default: these tests
# check the GPU paths, not durability across reboots.
ALLOW_VOLATILE = True
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def torch():
    import torch

    return torch


class _NoDist:
    """The timer's barrier on one process (no process group needed to time on one GPU)."""

    def barrier(self) -> None:
        pass


def test_cuda_event_timer_agrees_with_the_host_clock_and_leaves_out_the_prepare_step(torch):
    from benchmarks.allreduce.worker import CudaEventTimer

    n, iters = 4096, 50
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    out = torch.empty_like(a)
    big = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    big2 = torch.empty_like(big)
    timer = CudaEventTimer(_NoDist(), torch)
    timer.time(None, lambda: torch.matmul(a, b, out=out), 3)  # warm-up (cuBLAS heuristics, clocks)
    t0 = time.perf_counter()
    times = timer.time(None, lambda: torch.matmul(a, b, out=out), iters)
    wall = time.perf_counter() - t0
    assert len(times) == iters and all(t > 0 for t in times)
    assert sum(times) <= wall * 1.02, "events cannot see more time than the host waited"
    assert sum(times) >= 0.5 * wall, f"events {sum(times):.4f} s of {wall:.4f} s: the events miss the work"
    tflops = 2 * n**3 / min(times) / 1e12
    assert 1 < tflops < 2500, f"{tflops:.0f} TFLOP/s is not a bf16 matmul on one GPU"
    with_prepare = timer.time(lambda: big2.copy_(big), lambda: torch.matmul(a, b, out=out), iters)
    # A 1 GiB copy takes ~0.7 ms at 3 TB/s; a 4096^3 bf16 matmul ~0.2 ms: the copy must not be in the times.
    assert sorted(with_prepare)[iters // 2] < 2 * sorted(times)[iters // 2]


def test_nccl_allreduce_on_one_gpu_checks_its_data_and_times_with_cuda_events(tmp_path):
    out = tmp_path / "ar.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "1",
            "-m",
            "benchmarks.allreduce.worker",
            "--backend",
            "nccl",
            "-b",
            "1M",
            "-e",
            "256M",
            "-f",
            "16",
            "-n",
            "10",
            "-w",
            "3",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    env = result["env"]
    assert env["backend"] == "nccl" and env["timing"] == "cuda-events" and env["nccl"] and env["world_size"] == 1
    assert env["ranks"][0]["device"].startswith("cuda:0 ")
    assert [r["size_bytes"] for r in result["rows"]] == [s for s in (1 << 20, 16 << 20, 256 << 20) for _ in (0, 1)]
    for r in result["rows"]:
        assert r["wrong"] == 0, r
        assert r["busbw_gbps"] == 0, "one rank: the bus factor 2(n-1)/n is 0"
        assert 0 < r["min_us"] <= r["p50_us"] <= r["p99_us"] <= r["max_us"] < 1e6, r
    assert "# Avg bus bandwidth" in proc.stdout or "Avg bus bandwidth" in proc.stdout


def test_bench_node_gemm_and_copies_are_plausible_shares_of_the_spec(torch):
    from benchmarks.node import speed
    from benchmarks.node.specs import find_spec

    name = torch.cuda.get_device_name(0)
    tf32_flag = torch.backends.cuda.matmul.allow_tf32
    bf16 = speed.gpu_gemm(torch, "bf16", sizes=(8192,))
    tf32 = speed.gpu_gemm(torch, "tf32", sizes=(8192,))
    assert torch.backends.cuda.matmul.allow_tf32 == tf32_flag, "the tf32 setting is left as it was found"
    copy = speed.gpu_device_copy(torch)
    h2d, d2h = speed.gpu_host_copy(torch, "h2d"), speed.gpu_host_copy(torch, "d2h")
    assert bf16["n"] == 8192 and tf32["n"] == 8192
    spec = find_spec(name)
    if spec is None:
        pytest.skip(f"{name} is not in the spec table (benchmarks/node/specs.py): no share to check")
    for metric, value in (
        ("gemm_bf16", bf16["tflops"]),
        ("gemm_tf32", tf32["tflops"]),
        ("device_copy", copy),
        ("h2d", h2d),
        ("d2h", d2h),
    ):
        share = value / spec.spec(metric)
        assert 0.3 < share <= 1.0, f"{metric} {value} is {share:.0%} of the {spec.spec(metric)} spec of {spec.label}"
    assert bf16["tflops"] > 1.5 * tf32["tflops"], "bf16 tensor cores run about twice tf32"


def _cuda_state(torch) -> dict:
    g = torch.Generator(device="cuda").manual_seed(7)
    w = torch.randn(4096, 4096, device="cuda", generator=g)
    return {
        "model": {
            "w": w,
            "w_t": w[:1000, :300].t(),  # non-contiguous view
            "bf16": torch.randn(3_000_001, device="cuda", generator=g).to(torch.bfloat16),
            "fp16": torch.randn(777, 3, device="cuda", generator=g).half(),
            "ints": torch.randint(-(1 << 40), 1 << 40, (100_000,), device="cuda", generator=g, dtype=torch.int64),
            "mask": torch.rand(5000, device="cuda", generator=g) > 0.5,
            "empty": torch.empty(0, 16, device="cuda"),
        },
        "cpu": {"step": torch.tensor(12), "lr": 3e-4},
    }


def _snapshot(torch, state: dict) -> dict:
    return {
        "model": {k: v.detach().cpu().clone() for k, v in state["model"].items()},
        "cpu": {"step": state["cpu"]["step"].clone(), "lr": state["cpu"]["lr"]},
    }


@pytest.mark.parametrize("mode", ["now", "background"])
def test_cuda_snapshot_of_an_async_save_round_trips_bit_exactly_while_the_state_changes(torch, mode):
    """The copy reads the state as of save(); kernels that change it right after (on the same stream) do not leak in."""
    from launcher.checkpoint import Checkpointer

    root = unique_dir(f"gpu-snap-{mode}")
    try:
        state = _cuda_state(torch)
        ckpt = Checkpointer(root, distributed=False, allow_volatile=ALLOW_VOLATILE)
        for step in (1, 2):
            expected = _snapshot(torch, state)
            ckpt.save(step, state, blocking=False, snapshot=mode)
            if mode == "background":
                ckpt.wait_snapshot()  # what the optimizer guard does; orders the stream, does not block
            for t in state["model"].values():  # the optimizer step, queued at once
                if t.dtype == torch.bool:
                    t.logical_not_()
                elif t.is_floating_point():
                    t.mul_(-2.0).add_(1.0)
                else:
                    t.add_(1)
            state["cpu"]["step"].add_(1)
            ckpt.wait()
            loaded = Checkpointer(root, distributed=False, allow_volatile=ALLOW_VOLATILE).load(step)
            assert_same(expected, loaded)
        ckpt.close()
    finally:
        remove_dir(root)


def test_synchronous_save_of_a_cuda_state_round_trips_bit_exactly(torch):
    """The blocking save copies CUDA tensors into pinned memory one tensor ahead of the write."""
    from launcher.checkpoint import Checkpointer

    root = unique_dir("gpu-sync")
    try:
        state = _cuda_state(torch)
        expected = _snapshot(torch, state)
        Checkpointer(root, distributed=False, allow_volatile=ALLOW_VOLATILE).save(3, state)
        assert_same(expected, Checkpointer(root, distributed=False, allow_volatile=ALLOW_VOLATILE).load(3))
    finally:
        remove_dir(root)


def test_nccl_launch_of_the_demo_picks_nccl_trains_on_the_gpu_and_checkpoints(torch):
    name = f"gputest-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launcher.cli",
            "launch",
            "configs/demo.yaml",
            "--name",
            name,
            "--set",
            "nproc_per_node=auto",
            "--set",
            "args.1=120",
            "--set",
            "args.3=0.01",
            "--set",
            "env.CORRAL_CKPT_ALLOW_VOLATILE=1",
            "--follow",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        from launcher.checkpoint.layout import parse_step_dirname
        from launcher.runs.record import RECORD_FILE

        record = json.loads((REPO / "runs" / name / RECORD_FILE).read_text())
        assert record["plan"]["backend"] == "nccl"
        assert record["plan"]["nodes"][0]["nproc_per_node"] == torch.cuda.device_count(), "auto: one process per GPU"
        assert "ready on cuda:0" in proc.stdout
        ckpt_dir = Path(record["plan"]["ckpt_dir"])
        steps = sorted(s for s in (parse_step_dirname(p.name) for p in ckpt_dir.iterdir()) if s is not None)
        assert steps and steps[-1] == 119, steps
    finally:
        import shutil

        shutil.rmtree(REPO / "runs" / name, ignore_errors=True)
        shutil.rmtree(REPO / "checkpoints" / name, ignore_errors=True)

"""The all-reduce worker under a real torchrun on this machine (gloo on CPU; NCCL where a GPU exists)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER_MODULE = "benchmarks.allreduce.worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        "-m",
        WORKER_MODULE,
        *args,
    ]
    env = {**os.environ, "CORRAL_RUN_DIR": str(tmp_path), "CORRAL_NODE": "local", "PYTHONPATH": str(REPO)}
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_worker_gloo_two_ranks(tmp_path):
    proc = torchrun(2, ["-b", "8", "-e", "256K", "-f", "8", "-n", "4", "-w", "1", "--backend", "auto"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "allreduce.json").read_text())
    sizes = [8, 64, 512, 4096, 32768, 262144]
    assert [r["size_bytes"] for r in result["rows"]] == [s for s in sizes for _ in (0, 1)]
    assert [r["inplace"] for r in result["rows"]] == [False, True] * len(sizes)
    assert all(r["wrong"] == 0 and r["time_us"] > 0 for r in result["rows"])
    assert result["world_size"] == 2 and result["env"]["ranks_per_node"] == 2
    if result["env"]["backend"] == "gloo":
        assert "falling back to gloo" in (result["env"]["backend_note"] or "")  # announced, not silent
        assert "# NOTE: falling back to gloo" in proc.stdout
    assert "# Avg bus bandwidth" in proc.stdout and "#wrong" in proc.stdout


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64", "half", "bfloat16", "float", "double"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max", "avg"])
def test_fill_and_check_in_torch(op, dtype):
    """The worker's torch fill and check, with the reduction over simulated ranks done by torch itself."""
    import torch

    from benchmarks.allreduce import maths as cm
    from benchmarks.allreduce.worker import count_wrong, fill

    d = cm.resolve_dtype(dtype)
    if op == "avg" and not d.floating:
        pytest.skip("avg is floating-point only")
    world, count = 6, 1000
    rule = cm.fill_rule(op, world)
    bufs = []
    for r in range(world):
        b = torch.empty(count, dtype=getattr(torch, d.torch_name))
        fill(torch, b, rule, r)
        bufs.append(b)
    stack = torch.stack(bufs).to(torch.float64)
    reduced = {
        "sum": stack.sum(0),
        "avg": stack.mean(0),
        "prod": stack.prod(0),
        "min": stack.amin(0),
        "max": stack.amax(0),
    }[op]
    out = reduced.to(getattr(torch, d.torch_name))
    expected, tol = cm.expected_values(op, d, world), cm.check_tolerance(op, d, world)
    assert count_wrong(torch, out, expected, rule.modulus, tol) == 0
    out[17] += 1
    assert count_wrong(torch, out, expected, rule.modulus, tol) == 1


def test_worker_refuses_nccl_without_gpus(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from benchmarks.allreduce.worker import main

    assert main(["--backend", "nccl", "--out", str(tmp_path / "r.json")]) == 2


@pytest.mark.gpu
@pytest.mark.slow
def test_worker_nccl_cuda_events(tmp_path):
    """The NCCL path: CUDA-event timing, exact check on the GPU (skips cleanly without CUDA)."""
    import torch

    nproc = min(2, torch.cuda.device_count())
    proc = torchrun(
        nproc, ["-b", "8", "-e", "64M", "-f", "8", "-n", "10", "-w", "2", "--backend", "nccl"], tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "allreduce.json").read_text())
    assert result["env"]["backend"] == "nccl" and result["env"]["timing"] == "cuda-events"
    assert result["env"]["nccl"] and result["env"]["cuda"]
    assert all(r["wrong"] == 0 and r["time_us"] > 0 for r in result["rows"])


def test_fill_and_check_work_in_chunks(monkeypatch):
    """Large buffers are filled and checked chunk by chunk; chunk edges must not shift the pattern."""
    import torch

    import benchmarks.allreduce.worker as worker
    from benchmarks.allreduce import maths as cm

    monkeypatch.setattr(worker, "CHECK_CHUNK", 7)
    rule = cm.fill_rule("max", 3)
    bufs = []
    for r in range(3):
        b = torch.empty(50)
        worker.fill(torch, b, rule, r)
        bufs.append(b)
    out = torch.stack(bufs).amax(0)
    expected = cm.expected_values("max", cm.DTYPES["float"], 3)
    assert worker.count_wrong(torch, out, expected, rule.modulus, 0.0) == 0
    out[6], out[7] = 0.0, float("nan")  # both sides of a chunk edge
    assert worker.count_wrong(torch, out, expected, rule.modulus, 0.0) == 2


def test_backend_choice_is_announced_and_follows_the_launcher():
    from benchmarks.allreduce.worker import choose_backend
    from launcher.errors import UserError

    assert choose_backend("auto", True, 8, 8) == ("nccl", None)
    backend, note = choose_backend("auto", False, 2, 0)
    assert backend == "gloo" and "falling back to gloo" in note
    backend, note = choose_backend("auto", True, 8, 8, launcher_choice="gloo")  # another node has no GPU
    assert backend == "gloo" and "not every node has GPUs" in note
    with pytest.raises(UserError, match="only 4 GPU"):
        choose_backend("auto", True, 8, 4, launcher_choice="nccl")
    with pytest.raises(UserError, match="no CUDA GPU"):
        choose_backend("nccl", False, 1, 0)
    assert choose_backend("gloo", True, 8, 8) == ("gloo", None)  # asked for: no note


def test_cuda_event_timer_orders_and_converts():
    """The CUDA-event timer's bookkeeping (no GPU here): the copy goes before the start event,
    the collective between the events, and elapsed_time's milliseconds become seconds."""
    from types import SimpleNamespace

    from benchmarks.allreduce.worker import CudaEventTimer

    log: list[str] = []
    clock = [0.0]

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.t = None

        def record(self) -> None:
            log.append("record")
            self.t = clock[0]

        def elapsed_time(self, end: Event) -> float:  # milliseconds, like torch.cuda.Event
            return end.t - self.t

    cuda = SimpleNamespace(Event=Event, synchronize=lambda: log.append("sync"))
    dist = SimpleNamespace(barrier=lambda: log.append("barrier"))

    def collective() -> None:
        log.append("allreduce")
        clock[0] += 2.5

    times = CudaEventTimer(dist, SimpleNamespace(cuda=cuda)).time(lambda: log.append("copy"), collective, 2)
    assert times == [0.0025, 0.0025]
    assert log == ["barrier", "sync"] + ["copy", "record", "allreduce", "record"] * 2 + ["sync"]

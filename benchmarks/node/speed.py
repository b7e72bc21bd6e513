"""Speed figures measured with torch: GEMM TFLOP/s, device copy and pinned host<->device GB/s, and CPU figures.

Conventions (so figures compare with vendors' and nvbandwidth's):
- GEMM: 2*n^3 floating-point operations per n x n matmul; best over a few sizes, each timed with CUDA events.
- device copy: bytes read plus bytes written (2 x buffer) per copy, like a STREAM copy.
- host->device / device->host: bytes moved once, from/to pinned host memory.
- CPU: fp32 GEMM GFLOP/s and a memory copy GB/s (read + write), each timed for a fraction of a second.
A failing measurement is recorded as ``{"error": "..."}`` for that figure; nothing here raises to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

GEMM_SIZES = (4096, 8192, 16384)
GEMM_DTYPES = ("bf16", "fp16", "tf32")
COPY_BYTES = 1 << 30
HOST_COPY_BYTES = 256 << 20
CPU_GEMM_N = 1024
CPU_COPY_BYTES = 128 << 20
CPU_SECONDS = 0.4


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one figure failing must not lose the others
        log.debug("speed test failed", exc_info=True)
        return {"error": f"{type(exc).__name__}: {exc}".strip()[:300]}


def _cuda_time(
    torch, fn: Callable[[], Any], iters: int, warmup: int = 2, while_running: Callable[[], Any] | None = None
) -> float:
    """Seconds per call, measured with CUDA events after ``warmup`` untimed calls.

    ``while_running`` is called once the timed calls are queued, i.e. while the GPU executes them.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    if while_running is not None:
        while_running()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0 / iters


def gpu_gemm(torch, dtype_name: str, sizes=GEMM_SIZES, iters: int = 10) -> dict[str, Any]:
    """Best TFLOP/s of square matmuls over ``sizes`` in one dtype (tf32 = fp32 inputs with TF32 tensor cores)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32}[dtype_name]
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype_name == "tf32"
    best: dict[str, Any] = {"tflops": 0.0, "n": None}
    try:
        for n in sizes:
            a = torch.randn(n, n, device="cuda", dtype=dtype)
            b = torch.randn(n, n, device="cuda", dtype=dtype)
            seconds = _cuda_time(torch, lambda a=a, b=b: torch.matmul(a, b), iters)
            tflops = 2 * n**3 / seconds / 1e12
            if tflops > best["tflops"]:
                best = {"tflops": round(tflops, 1), "n": n}
            a = b = None  # drop this size's matrices before the next size allocates
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
        torch.cuda.empty_cache()
    return best


def gpu_device_copy(torch, nbytes: int = COPY_BYTES, iters: int = 20) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    seconds = _cuda_time(torch, lambda: dst.copy_(src), iters)
    src = dst = None  # free the buffers before emptying the cache
    torch.cuda.empty_cache()
    return round(2 * nbytes / seconds / 1e9, 1)


def gpu_host_copy(
    torch,
    direction: str,
    nbytes: int = HOST_COPY_BYTES,
    iters: int = 10,
    while_running: Callable[[], Any] | None = None,
) -> float:
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    if direction == "h2d":
        seconds = _cuda_time(torch, lambda: dev.copy_(host, non_blocking=True), iters, while_running=while_running)
    else:
        seconds = _cuda_time(torch, lambda: host.copy_(dev, non_blocking=True), iters)
    host = dev = None  # free the buffers before emptying the cache
    torch.cuda.empty_cache()
    return round(nbytes / seconds / 1e9, 1)


def gpu_speed(torch, index: int, during: Callable[[int], Any] | None = None) -> dict[str, Any]:
    with torch.cuda.device(index):
        props = torch.cuda.get_device_properties(index)
        return {
            "index": index,
            "name": props.name,
            "uuid": str(getattr(props, "uuid", "")) or None,
            "gemm_tflops": {d: _guard(lambda d=d: gpu_gemm(torch, d)) for d in GEMM_DTYPES},
            "device_copy_gbps": _guard(lambda: gpu_device_copy(torch)),
            "h2d_gbps": _guard(
                lambda: gpu_host_copy(torch, "h2d", while_running=(lambda: during(index)) if during else None)
            ),
            "d2h_gbps": _guard(lambda: gpu_host_copy(torch, "d2h")),
        }


def _timed_rate(fn: Callable[[], Any], work: float, seconds: float) -> float:
    """Best work/second over repeated calls for about ``seconds`` (best, not mean: the cores are shared)."""
    fn()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = max(best, work / dt)
        if time.perf_counter() > deadline:
            return best


def cpu_speed(torch, seconds: float = CPU_SECONDS) -> dict[str, Any]:
    """fp32 GEMM GFLOP/s and memory copy GB/s on the CPU: the node's own figures when it has no GPU."""
    n = CPU_GEMM_N
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm = _timed_rate(lambda: torch.matmul(a, b), 2 * n**3 / 1e9, seconds)
    src = torch.empty(CPU_COPY_BYTES, dtype=torch.uint8)
    src.fill_(1)
    dst = torch.empty_like(src)
    copy = _timed_rate(lambda: dst.copy_(src), 2 * CPU_COPY_BYTES / 1e9, seconds)
    return {
        "gemm_fp32_gflops": round(gemm, 1),
        "memcopy_gbps": round(copy, 2),
        "threads": torch.get_num_threads(),
        "gemm_n": n,
    }


def measure(gpu_indices: list[int], during: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """All speed figures of this node: per GPU when CUDA works, and the CPU's in any case.

    ``during(index)`` is called while GPU ``index``'s host->device copies run (the probe reads the PCIe link then).
    """
    t0 = time.perf_counter()
    try:
        import torch
    except ImportError:
        return {"error": "torch is not installed: no speed figures", "gpus": [], "cpu": None}
    out: dict[str, Any] = {"gpus": [], "cuda": torch.cuda.is_available(), "cpu": _guard(lambda: cpu_speed(torch))}
    if gpu_indices and not torch.cuda.is_available():
        out["error"] = (
            "NVML sees GPUs but torch cannot use CUDA (torch.cuda.is_available() is False): no GPU speed figures"
        )
    elif torch.cuda.is_available():
        for i in gpu_indices:
            out["gpus"].append(_guard(lambda i=i: gpu_speed(torch, i, during)) | {"index": i})
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out

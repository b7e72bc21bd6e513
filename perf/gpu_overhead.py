"""Does ``bench node`` measure what a plain loop measures? Its bf16 GEMM and device copy against
a plain ``torch.matmul`` / ``copy_`` loop timed with CUDA events, interleaved in one process.

    python -m perf.gpu_overhead --out overhead.json [--rounds 5]

Each round runs, in alternating order, the harness's own functions (``benchmarks.node.speed``:
``gpu_gemm(torch, "bf16", sizes=(8192,))`` and ``gpu_device_copy``) and the plain loop with the
same sizes and iteration counts: warm-up calls, one synchronize, a CUDA event pair around the
timed calls. The figures are medians over rounds, in the harness's units (TFLOP/s, GB/s counting
bytes read + written).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

GEMM_N = 8192


def plain_gemm(torch, n: int = GEMM_N, iters: int = 10, warmup: int = 2) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(warmup):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        torch.matmul(a, b)
    end.record()
    end.synchronize()
    return 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12


def plain_copy(torch, nbytes: int, iters: int = 20, warmup: int = 2) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(warmup):
        dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    end.synchronize()
    return 2 * nbytes * iters / (start.elapsed_time(end) / 1e3) / 1e9


def measure(rounds: int) -> dict:
    import torch

    from benchmarks.node import speed

    sides = {
        "gemm_bf16": (
            lambda: speed.gpu_gemm(torch, "bf16", sizes=(GEMM_N,))["tflops"],
            lambda: plain_gemm(torch),
            "TFLOP/s",
        ),
        "device_copy": (lambda: speed.gpu_device_copy(torch), lambda: plain_copy(torch, speed.COPY_BYTES), "GB/s"),
    }
    samples = {m: {"harness": [], "plain": []} for m in sides}
    for r in range(rounds):
        for metric, (harness, plain, _) in sides.items():
            order = (("harness", harness), ("plain", plain))
            for side, fn in order if r % 2 == 0 else order[::-1]:
                samples[metric][side].append(float(fn()))
            torch.cuda.empty_cache()
    return {
        "schema": "corral.perf.gpu-overhead/1",
        "gpu": torch.cuda.get_device_name(0),
        "pairs": {
            m: {
                "harness": statistics.median(s["harness"]),
                "plain": statistics.median(s["plain"]),
                "unit": sides[m][2],
                "rounds": rounds,
                "samples": s,
                "plain_what": f"plain {'torch.matmul' if m.startswith('gemm') else 'copy_'} loop, CUDA events",
            }
            for m, s in samples.items()
        },
        "method": __doc__.split("\n\n", 2)[1],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    result = measure(args.rounds)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for m, r in result["pairs"].items():
        print(
            f"{m}: bench node {r['harness']:.1f} vs plain {r['plain']:.1f} {r['unit']} (ratio {r['harness'] / r['plain']:.4f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

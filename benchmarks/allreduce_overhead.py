"""Does the harness add overhead? Its busbw against a bare ``dist.all_reduce`` loop, same processes, same sizes.

A torchrun worker: for each size (>= 1 MiB by default) and each of ``--reps`` rounds it times
(a) a bare loop — barrier, start clock, ``iters`` back-to-back ``dist.all_reduce``, stop clock —
and (b) the harness's own measurement (``benchmarks.allreduce.Bench.run_one``, in-place and
out-of-place, including its per-iteration clocks, gathering and data check). The order of
(a) and (b) alternates between rounds to cancel drift. Each round gives a paired ratio
busbw(harness) / busbw(bare) measured seconds apart; the figure is the median of those
ratios (on a shared, busy machine a paired ratio is far steadier than a ratio of medians). Rank 0 prints a table and writes JSON (``--out``).

    torchrun --standalone --nproc-per-node 2 benchmarks/allreduce_overhead.py --out /var/tmp/o.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import collective_math as cm  # noqa: E402
from benchmarks.allreduce import Bench, CudaEventTimer, WallClockTimer, choose_backend  # noqa: E402
from benchmarks.units import format_size, parse_size  # noqa: E402


def bare_loop_seconds(torch, dist, buf, iters: int, cuda: bool) -> float:
    """Mean seconds per all-reduce of a plain loop: what anyone would write to time it."""
    dist.barrier()
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iters):
            dist.all_reduce(buf)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(buf)
    return (time.perf_counter() - t0) / iters


def rank_mean(torch, dist, value: float, device) -> float:
    """Mean over ranks (nccl-tests' and the harness's convention for the reported time)."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def _iqr(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], q[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1M,4M,16M")
    p.add_argument("-n", "--iters", type=int, default=10)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]

    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda_ok = torch.cuda.is_available()
    backend, note = choose_backend(args.backend, cuda_ok, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count() if cuda_ok else 0)
    cuda = backend == "nccl"
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", device_id=device)
        timer = CudaEventTimer(dist, torch)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
        timer = WallClockTimer(dist)
    world = dist.get_world_size()
    if world < 2:
        print("allreduce_overhead: needs at least 2 ranks (busbw is 0 for one)", file=sys.stderr)
        return 2
    f = cm.DTYPES["float"]
    bench = Bench(torch, dist, device=device, dtype=f, op="sum", timer=timer, iters=args.iters, warmup=2)
    # What the harness puts inside each timed interval besides dist.all_reduce: its clock
    # (perf_counter pair, or a CUDA event pair) and a Python call. Timed around a no-op.
    probe = timer.time(None, lambda: None, 2000)
    timer_overhead_s = statistics.median(probe)
    samples: dict[int, dict[str, list[float]]] = {s: {"bare": [], "bare_s": [], "harness_inplace": [], "harness_outofplace": []} for s in sizes}
    for s in sizes:
        bench.warm_up(s)
    for rep in range(args.reps):
        for s in sizes:
            buf = torch.ones(s // 4, dtype=torch.float32, device=device)

            def bare() -> None:
                t = rank_mean(torch, dist, bare_loop_seconds(torch, dist, buf, args.iters, cuda), device)
                samples[s]["bare"].append(cm.busbw_gbps(cm.algbw_gbps(s, t), world))
                samples[s]["bare_s"].append(t)

            def harness() -> None:
                for inplace, key in ((True, "harness_inplace"), (False, "harness_outofplace")):
                    times, _ = bench.run_one(s, inplace)
                    summary = cm.summarize_times(bench.gather_times(times))
                    samples[s][key].append(cm.busbw_gbps(cm.algbw_gbps(s, summary.time_s), world))

            for step in ((bare, harness) if rep % 2 == 0 else (harness, bare)):
                step()
    if dist.get_rank() == 0:
        rows = []
        for s in sizes:
            med = {k: statistics.median(v) for k, v in samples[s].items()}
            bare_s = samples[s]["bare"]
            ratio = {k: [h / b for h, b in zip(samples[s][k], bare_s)] for k in ("harness_inplace", "harness_outofplace")}
            rows.append({
                "size_bytes": s,
                "bare_busbw_gbps": med["bare"],
                "harness_inplace_busbw_gbps": med["harness_inplace"],
                "harness_outofplace_busbw_gbps": med["harness_outofplace"],
                "bare_time_us": med["bare_s"] * 1e6,
                "timer_overhead_fraction": timer_overhead_s / med["bare_s"],
                "inplace_ratio": statistics.median(ratio["harness_inplace"]),
                "inplace_ratio_iqr": _iqr(ratio["harness_inplace"]),
                "outofplace_ratio_iqr": _iqr(ratio["harness_outofplace"]),
                "outofplace_ratio": statistics.median(ratio["harness_outofplace"]),
                "inplace_ratios": ratio["harness_inplace"],
                "outofplace_ratios": ratio["harness_outofplace"],
                "samples": samples[s],
            })  # fmt: skip
        result = {"timer_overhead_us": timer_overhead_s * 1e6, "world_size": world, "backend": backend, "backend_note": note, "iters": args.iters, "reps": args.reps, "rows": rows}
        print(f"# world {world}, backend {backend}, {args.iters} iters, {args.reps} rounds: median busbw (GB/s), median paired ratio")
        print(f"# harness clock inside each timed interval: {timer_overhead_s * 1e6:.3f} us per iteration")
        print(f"{'size':>6}  {'bare':>8}  {'in-place':>8}  {'ratio':>6}  {'IQR':>13}  {'out-of-place':>12}  {'ratio':>6}  "
              f"{'IQR':>13}  {'clock/bare':>10}")  # fmt: skip
        for r in rows:
            iq, oq = r["inplace_ratio_iqr"], r["outofplace_ratio_iqr"]
            print(f"{format_size(r['size_bytes']):>6}  {r['bare_busbw_gbps']:8.4f}  {r['harness_inplace_busbw_gbps']:8.4f}  "
                  f"{r['inplace_ratio']:6.3f}  {iq[0]:6.3f}-{iq[1]:6.3f}  {r['harness_outofplace_busbw_gbps']:12.4f}  "
                  f"{r['outofplace_ratio']:6.3f}  {oq[0]:6.3f}-{oq[1]:6.3f}  {r['timer_overhead_fraction']:10.2e}")  # fmt: skip
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

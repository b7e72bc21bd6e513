"""Does the harness add overhead? Its busbw against a bare ``dist.all_reduce`` loop, same processes, same sizes.

A torchrun worker. For every size it runs ``--blocks`` short blocks; a block holds, in an order
drawn at random (the same on every rank), ``k`` = ``--iters`` all-reduces of each of:

* ``bare``: barrier, start clock, ``k`` back-to-back ``dist.all_reduce`` on one buffer, stop clock;
  what anyone would write to time it (the baseline).
* ``bare_barrier``: ``k`` times (barrier, clock, ``dist.all_reduce``, clock): the bare loop with the
  per-iteration start synchronisation the harness uses for out-of-place on CPU, without the copy.
* ``harness_inplace`` / ``harness_outofplace``: the harness's own measurement, exactly what
  ``corral bench allreduce`` runs for a row — ``benchmarks.allreduce.worker.Bench.run_one`` with the
  worker's timer (buffers, per-iteration clocks, data check) — with ``k`` iterations.

Each side of a block is the rank-mean of its summed seconds. Blocks last tens of milliseconds
and the sides of one block run back to back, so drift on a shared machine hits both alike. The
estimate of busbw(harness) / busbw(other) is sum(other) / sum(harness) over the blocks, with a
bootstrap 95% CI over blocks (``perf/overhead_stats.py``) and a verdict against the 3% bar.

    torchrun --standalone --nproc-per-node 2 -m perf.allreduce_overhead --blocks 80 --out docs/results/harness-overhead-local.json

``--out FILE`` appends the run, dated, to that measurement file (perf/results_log.py); ``perf/overhead_stats.py``
pools runs named ``FILE@ID``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.allreduce import maths as cm
from benchmarks.allreduce.worker import Bench, init_backend
from launcher.units import format_size, parse_size
from perf import overhead_stats as ost
from perf import results_log

MEASUREMENT = "bench allreduce's harness (in-place and out-of-place) against a bare torch all-reduce loop: paired, interleaved blocks"
KINDS = ("bare", "bare_barrier", "harness_inplace", "harness_outofplace")
COMPARISONS = (
    # (name, harness side, baseline side): what the ratio says
    ("inplace_vs_bare", "harness_inplace", "bare"),
    ("outofplace_vs_bare", "harness_outofplace", "bare"),
    ("outofplace_vs_bare_barrier", "harness_outofplace", "bare_barrier"),
    ("bare_barrier_vs_bare", "bare_barrier", "bare"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1M,4M,16M")
    p.add_argument("-n", "--iters", type=int, default=10, help="All-reduces per side of a block (k).")
    p.add_argument(
        "--blocks",
        default="60",
        help="Paired blocks per size: one number, or one per size (1000,200,100): "
        "small messages are noisier and cheaper, so they get more.",
    )
    p.add_argument("--warmup-blocks", type=int, default=2, help="Blocks run first and discarded.")
    p.add_argument(
        "--kinds", default=",".join(KINDS), help="Sides to run in each block (comparisons need both of theirs)."
    )
    p.add_argument("--pin", action="store_true", help="Pin each rank to one CPU (LOCAL_RANK modulo the CPUs allowed).")
    p.add_argument("--seed", type=int, default=1, help="Block order and bootstrap seed.")
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto")
    p.add_argument(
        "--one-rank",
        action="store_true",
        help="Allow world size 1 (one GPU): busbw is 0 there, so compare "
        "the times (the ratios are of summed block times anyway) and read algbw.",
    )
    p.add_argument("--out", type=Path, default=None, help="measurement file to append this run to (rank 0)")
    results_log.add_conditions_argument(p)
    return p.parse_args(argv)


def pin_to_one_cpu() -> int:
    """Pin this process (and the threads gloo starts later) to one CPU; returns it.

    Before the process group starts, so gloo's threads inherit the mask. Applied to the whole
    process, so the bare loop and the harness run under the same pinning.
    """
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[int(os.environ.get("LOCAL_RANK", "0")) % len(allowed)]
    os.sched_setaffinity(0, {cpu})
    return cpu


class Blocks:
    """Runs one side of a block and returns this rank's summed seconds for it."""

    def __init__(self, torch, dist, bench: Bench, cuda: bool) -> None:
        self.torch, self.dist, self.bench, self.cuda = torch, dist, bench, cuda

    def _clock(self, body) -> float:
        if self.cuda:
            cuda = self.torch.cuda
            start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
            cuda.synchronize()
            start.record()
            body()
            end.record()
            cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        body()
        return time.perf_counter() - t0

    def bare(self, buf, k: int) -> float:
        buf.fill_(1)  # untimed; keeps the doubling values finite over hundreds of blocks
        self.dist.barrier()

        def loop() -> None:
            for _ in range(k):
                self.dist.all_reduce(buf)

        return self._clock(loop)

    def bare_barrier(self, buf, k: int) -> float:
        buf.fill_(1)
        total = 0.0
        for _ in range(k):
            self.dist.barrier()
            total += self._clock(lambda: self.dist.all_reduce(buf))
        return total

    def harness(self, size: int, inplace: bool) -> float:
        times, wrong = self.bench.run_one(size, inplace)
        if wrong:
            raise RuntimeError(f"data check failed at {size} B: {wrong} wrong elements on this rank")
        return sum(times)

    def run(self, kind: str, size: int, buf, k: int) -> float:
        sides = {
            "bare": lambda: self.bare(buf, k),
            "bare_barrier": lambda: self.bare_barrier(buf, k),
            "harness_inplace": lambda: self.harness(size, True),
            "harness_outofplace": lambda: self.harness(size, False),
        }
        return sides[kind]()


def rank_means(torch, dist, values: list[float], device) -> list[float]:
    """Mean over ranks of each value (nccl-tests' and the harness's convention for the reported time)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(x) / dist.get_world_size() for x in t.tolist()]


def summarise(samples: dict[int, dict[str, list[float]]], k: int, world: int, seed: int) -> list[dict]:
    """Per size: busbw of each side over all blocks, and the four comparisons with CIs and verdicts."""
    rows = []
    for size, by_kind in samples.items():
        busbw = {kind: cm.busbw_gbps(cm.algbw_gbps(size, sum(v) / (k * len(v))), world) for kind, v in by_kind.items()}
        comps = {
            name: ost.compare(by_kind[base], by_kind[side], seed=seed).as_dict()
            for name, side, base in COMPARISONS
            if side in by_kind and base in by_kind
        }
        algbw = {kind: cm.algbw_gbps(size, sum(v) / (k * len(v))) for kind, v in by_kind.items()}
        rows.append(
            {
                "size_bytes": size,
                "busbw_gbps": busbw,
                "algbw_gbps": algbw,
                "comparisons": comps,
                "block_seconds": by_kind,
            }
        )
    return rows


def print_table(result: dict) -> None:
    print(
        f"# world {result['world_size']}, backend {result['backend']}, {result['iters']} all-reduces per side of "
        f"a block, pinned: {result['pinned_cpus'] or 'no'}, {result['elapsed_s']:.0f} s"
    )
    print(f"# harness clock inside each timed interval: {result['timer_overhead_us']:.3f} us per iteration")
    print(
        "# ratio = busbw(first) / busbw(second), ratio of summed block times; [95% bootstrap CI]; "
        "verdict: within 3% when the whole CI is in [0.97, 1.03]"
    )
    for r in result["rows"]:
        n = len(next(iter(r["block_seconds"].values())))
        bw = "  ".join(f"{kind} {v:.4f}" for kind, v in r["busbw_gbps"].items())
        print(f"{format_size(r['size_bytes']):>5}  {n} blocks; busbw GB/s: {bw}")
        for name, c in r["comparisons"].items():
            lo, hi = c["ci95"]
            print(
                f"       {name:<27} {c['estimate']:.4f} [{lo:.4f}, {hi:.4f}]  median block {c['median_block_ratio']:.4f}"
                f"  {c['verdict']}"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    per_size = [int(b) for b in args.blocks.split(",")]
    if len(per_size) == 1:
        per_size *= len(sizes)
    if args.iters < 1 or len(per_size) != len(sizes) or min(per_size) < 2:
        print(
            "allreduce_overhead: --iters must be at least 1, and --blocks one number or one per size, each at least 2",
            file=sys.stderr,
        )
        return 2
    n_blocks = dict(zip(sizes, per_size))
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or set(kinds) - set(KINDS):
        print(f"allreduce_overhead: --kinds takes some of {','.join(KINDS)}", file=sys.stderr)
        return 2
    pinned = pin_to_one_cpu() if args.pin else None

    import torch
    import torch.distributed as dist

    backend, note, device, timer, _ = init_backend(torch, dist, args.backend)
    world = dist.get_world_size()
    if world < 2 and not args.one_rank:
        print(
            "allreduce_overhead: needs at least 2 ranks (busbw is 0 for one; --one-rank compares times)",
            file=sys.stderr,
        )
        return 2
    pins: list = [None] * world
    dist.all_gather_object(pins, pinned)
    bench = Bench(
        torch, dist, device=device, dtype=cm.DTYPES["float"], op="sum", timer=timer, iters=args.iters, warmup=2
    )
    blocks = Blocks(torch, dist, bench, backend == "nccl")
    # What the harness puts inside each timed interval besides dist.all_reduce: its clock and a call.
    timer_overhead_s = statistics.median(timer.time(None, lambda: None, 2000))
    bufs = {s: torch.ones(s // 4, dtype=torch.float32, device=device) for s in sizes}
    for s in sizes:
        bench.warm_up(s)
    order = ost.block_order(kinds, args.warmup_blocks + max(per_size), args.seed)
    samples: dict[int, dict[str, list[float]]] = {s: {k: [] for k in kinds} for s in sizes}
    t_start = time.time()
    for b, block in enumerate(order):
        for s in (s for s in sizes if b < args.warmup_blocks + n_blocks[s]):  # sizes interleaved
            mine = {kind: blocks.run(kind, s, bufs[s], args.iters) for kind in block}
            means = rank_means(torch, dist, [mine[k] for k in kinds], device)
            if b >= args.warmup_blocks:
                for kind, v in zip(kinds, means):
                    samples[s][kind].append(v)
    elapsed = time.time() - t_start
    if dist.get_rank() == 0:
        result = {
            "schema": "corral.bench.allreduce-overhead/2",
            "method": "paired blocks in random order; ratio of summed block times; percentile bootstrap over blocks",
            "units": {
                "block_seconds": "seconds (rank-mean of the summed time of k all-reduces)",
                "busbw_gbps": "GB/s, GB = 1e9 bytes",
                "timer_overhead_us": "microseconds",
            },
            "timer_overhead_us": timer_overhead_s * 1e6,
            "world_size": world,
            "backend": backend,
            "backend_note": note,
            "iters": args.iters,
            "blocks": {format_size(s): n for s, n in n_blocks.items()},
            "warmup_blocks": args.warmup_blocks,
            "seed": args.seed,
            "pinned_cpus": pins if args.pin else None,
            "elapsed_s": elapsed,
            "load_average_at_end": list(os.getloadavg()),
            "bar": ost.BAR,
            "rows": summarise(samples, args.iters, world, args.seed),
        }
        print_table(result)
        if args.out:
            results_log.append_run(
                args.out,
                result,
                measurement=MEASUREMENT,
                script="perf/allreduce_overhead.py",
                command=results_log.current_command("perf.allreduce_overhead", argv),
                conditions=args.conditions,
            )
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

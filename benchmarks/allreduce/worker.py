"""torchrun worker of ``corral bench allreduce``: all-reduce bandwidth over a size sweep, nccl-tests style.

Run by the launcher on every node (``torchrun ... -m benchmarks.allreduce.worker -b 8 -e 64M``); rank 0
writes ``allreduce.json`` into ``$CORRAL_RUN_DIR`` (or ``--out``) and prints the table to its log.

What is timed, and why (see docs/BENCH_NET.md):

* NCCL on GPUs: a CUDA event pair around each ``dist.all_reduce`` on the current stream;
  the collective is enqueued back to back as in nccl-tests, so launch overhead overlaps.
* gloo on CPU: a barrier before each timed batch, then ``time.perf_counter`` around each
  blocking ``dist.all_reduce``.
* in-place: the same buffer is reduced again and again (nccl-tests does the same; the
  values grow, which does not change the work done).
* out-of-place: torch has no out-of-place all-reduce, so each iteration first copies an
  untouched send buffer into the receive buffer and then reduces the receive buffer in
  place. The copy is outside the timed interval, so the row times the collective alone,
  as nccl-tests' sendbuff -> recvbuff does; the input is pristine for every iteration.
  On CPU a barrier follows the copy (ranks share cores and finish copying at different
  moments); on GPU the copy is enqueued before the start event on every rank alike.
* the data check runs after the timing on freshly filled buffers (as nccl-tests does), one
  reduction, compared element by element with the exactly known result.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.allreduce import maths as cm
from benchmarks.allreduce import table as nccl_table
from launcher.errors import UserError

RESULT_FILE = "allreduce.json"
SCHEMA = "corral.bench.allreduce/1"
UNITS = {
    "size_bytes": "bytes",
    "count": "elements",
    "time_us": "microseconds (mean over ranks of the mean iteration time)",
    "p50_us": "microseconds",
    "p99_us": "microseconds",
    "min_us": "microseconds",
    "max_us": "microseconds",
    "slowest_rank_time_us": "microseconds",
    "algbw_gbps": "GB/s, GB = 1e9 bytes (size_bytes / time)",
    "busbw_gbps": "GB/s, GB = 1e9 bytes (algbw * 2(n-1)/n)",
    "avg_busbw_gbps": "GB/s, GB = 1e9 bytes",
    "peak_busbw_gbps": "GB/s, GB = 1e9 bytes",
    "cv": "ratio (population stdev / mean of per-iteration times)",
    "wrong": "elements that differ from the exact expected result, summed over ranks",
}
EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-b", "--minbytes", default="8")
    p.add_argument("-e", "--maxbytes", default="64M")
    p.add_argument("-f", "--stepfactor", type=int, default=2)
    p.add_argument("-n", "--iters", type=int, default=20)
    p.add_argument("-w", "--warmup-iters", type=int, default=5)
    p.add_argument("-d", "--datatype", default="float")
    p.add_argument("-o", "--op", default="sum")
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), default=os.environ.get("CORRAL_BACKEND", "auto"))
    p.add_argument("--out", default=None, help="Result file (default: $CORRAL_RUN_DIR/allreduce.json).")
    return p.parse_args(argv)


# ---- backend and environment ------------------------------------------------------


def choose_backend(
    requested: str, cuda_available: bool, local_world: int, gpus: int, launcher_choice: str | None = None
) -> tuple[str, str | None]:
    """(backend, note): NCCL with GPUs, gloo otherwise; a fallback is announced, never silent.

    With ``auto``, the launcher's cluster-wide choice (``CORRAL_BACKEND``) wins: every rank must
    pick the same backend, and one node without GPUs makes the whole job gloo.
    """
    if requested == "auto" and launcher_choice == "nccl":
        requested = "nccl"
    elif requested == "auto" and launcher_choice == "gloo" and cuda_available and local_world <= gpus:
        return "gloo", "falling back to gloo: not every node has GPUs, so the launcher chose gloo for the whole job"
    if requested == "nccl":
        if not cuda_available:
            raise UserError("--backend nccl: no CUDA GPU is visible on this node; use --backend gloo or auto")
        if local_world > gpus:
            raise UserError(
                f"--backend nccl: {local_world} processes on this node but only {gpus} GPU(s); lower --nproc-per-node"
            )
        return "nccl", None
    if requested == "gloo":
        return "gloo", None
    if cuda_available and local_world <= gpus:
        return "nccl", None
    why = "no CUDA GPU is visible" if not cuda_available else f"{local_world} processes but {gpus} GPU(s) on this node"
    return "gloo", f"falling back to gloo on CPU: {why}; these are CPU/TCP numbers, not GPU/NCCL numbers"


def _ipv4_of(ifname: str) -> str | None:
    """The IPv4 address of an interface (SIOCGIFADDR), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(raw[20:24])


def detect_interface(peer_host: str | None, peer_port: int = 29500) -> tuple[str | None, str]:
    """(interface, how it was found): the env setting, else the interface that routes to the rendezvous host."""
    for var in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        if os.environ.get(var):
            return os.environ[var], var
    if not peer_host:
        return None, "unknown"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer_host, peer_port))  # UDP connect sends nothing; it only picks a route
            local = s.getsockname()[0]
    except OSError:
        return None, "unknown"
    for _, name in socket.if_nameindex():
        if _ipv4_of(name) == local:
            return name, f"detected: the route to {peer_host} leaves from {local}"
    return None, f"unknown: no interface holds {local}"


def rank_record(rank: int, local_rank: int, device: str) -> dict:
    return {
        "rank": rank,
        "local_rank": local_rank,
        "node": os.environ.get("CORRAL_NODE") or socket.gethostname(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "device": device,
    }


def environment(torch, backend: str, note: str | None, ranks: list[dict], timing: str) -> dict:
    nodes = sorted({r["node"] for r in ranks})
    per_node = {n: sum(1 for r in ranks if r["node"] == n) for n in nodes}
    iface, source = detect_interface(os.environ.get("MASTER_ADDR"), int(os.environ.get("MASTER_PORT", "29500")))
    nccl = None
    if torch.cuda.is_available():
        try:
            nccl = ".".join(str(x) for x in torch.cuda.nccl.version())
        except Exception:  # noqa: BLE001 - a build without NCCL reports none
            nccl = None
    gpus_by_node: dict[str, list[str]] = {}
    for r in ranks:
        gpus_by_node.setdefault(r["node"], []).append(r["device"])
    return {
        "torch": torch.__version__,
        "nccl": nccl,
        "cuda": torch.version.cuda,
        "backend": backend,
        "backend_note": note,
        "timing": "cuda-events" if timing == "cuda" else "wall-clock with a barrier before each batch",
        "interface": iface,
        "interface_source": source,
        "nccl_env": {k: v for k, v in os.environ.items() if k.startswith("NCCL_")},
        "gloo_socket_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
        "world_size": len(ranks),
        "nnodes": len(nodes),
        "ranks_per_node": per_node[nodes[0]] if len(set(per_node.values())) == 1 else per_node,
        "devices_by_node": gpus_by_node,
        "ranks": ranks,
    }


# ---- timing -----------------------------------------------------------------------


class WallClockTimer:
    """gloo on CPU: collectives are blocking, so perf_counter around each one is the collective's time."""

    name = "wall"

    def __init__(self, dist) -> None:
        self.dist = dist

    def time(self, prepare: Callable[[], None] | None, collective: Callable[[], None], iters: int) -> list[float]:
        self.dist.barrier()
        out = []
        for _ in range(iters):
            if prepare is not None:
                prepare()
                # Ranks finish the untimed copy at different moments (CPUs are shared); without
                # this barrier a fast rank's clock would include a slow rank's copy.
                self.dist.barrier()
            t0 = time.perf_counter()
            collective()
            out.append(time.perf_counter() - t0)
        return out


class CudaEventTimer:
    """NCCL on GPUs: a CUDA event pair around each collective; host never waits inside the batch."""

    name = "cuda"

    def __init__(self, dist, torch) -> None:
        self.dist, self.torch = dist, torch

    def time(self, prepare: Callable[[], None] | None, collective: Callable[[], None], iters: int) -> list[float]:
        cuda = self.torch.cuda
        starts = [cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [cuda.Event(enable_timing=True) for _ in range(iters)]
        self.dist.barrier()
        cuda.synchronize()
        for k in range(iters):
            if prepare is not None:
                prepare()  # enqueued before the start event: not timed
            starts[k].record()
            collective()
            ends[k].record()
        cuda.synchronize()
        return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]


# ---- data -------------------------------------------------------------------------


CHECK_CHUNK = 1 << 24
"""Elements per step when filling and checking: int64 indices and float64 copies of an 8 GiB
buffer would need four times its size again; chunks keep the extra memory near 400 MiB."""


def _chunks(n: int):
    for start in range(0, n, CHECK_CHUNK):
        yield start, min(n, start + CHECK_CHUNK)


def fill(torch, buf, rule: cm.FillRule, rank: int) -> None:
    """Rank ``rank``'s pattern into ``buf`` (see collective_math.FillRule)."""
    values = torch.tensor(rule.values, device=buf.device, dtype=buf.dtype)
    for a, b in _chunks(buf.numel()):
        idx = torch.arange(a, b, device=buf.device, dtype=torch.int64)
        buf[a:b].copy_(values[(idx + rule.shift * rank) % rule.modulus])


def count_wrong(torch, buf, expected: list, modulus: int, tolerance: float) -> int:
    """Elements of ``buf`` farther than ``tolerance`` from ``expected[i % modulus]`` (NaN counts as wrong)."""
    table = torch.tensor(expected, device=buf.device, dtype=torch.float64)
    wrong = 0
    for a, b in _chunks(buf.numel()):
        idx = torch.arange(a, b, device=buf.device, dtype=torch.int64) % modulus
        got = buf[a:b].to(torch.float64)
        bad = ((got - table[idx]).abs() > tolerance) | torch.isnan(got)
        wrong += int(bad.sum().item())
    return wrong


# ---- the sweep --------------------------------------------------------------------


class Bench:
    """One process's part of the sweep: buffers, timing, check, gathering per-rank times."""

    def __init__(self, torch, dist, *, device, dtype: cm.DType, op: str, timer, iters: int, warmup: int) -> None:
        self.torch, self.dist, self.device = torch, dist, device
        self.dtype, self.op, self.timer = dtype, op, timer
        self.iters, self.warmup = iters, warmup
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.reduce_op = getattr(dist.ReduceOp, cm.OPS[op])
        self.rule = cm.fill_rule(op, self.world)
        self.expected = cm.expected_values(op, dtype, self.world)
        self.tolerance = cm.check_tolerance(op, dtype, self.world)
        self.tdtype = getattr(torch, dtype.torch_name)

    def buffers(self, size_bytes: int):
        count = size_bytes // self.dtype.itemsize
        send = self.torch.empty(count, dtype=self.tdtype, device=self.device)
        recv = self.torch.empty(count, dtype=self.tdtype, device=self.device)
        fill(self.torch, send, self.rule, self.rank)
        recv.copy_(send)
        return send, recv

    def all_reduce(self, buf) -> None:
        self.dist.all_reduce(buf, op=self.reduce_op)

    def warm_up(self, size_bytes: int) -> None:
        _, recv = self.buffers(size_bytes)
        for _ in range(self.warmup):
            self.all_reduce(recv)

    def run_one(self, size_bytes: int, inplace: bool) -> tuple[list[float], int]:
        """This rank's per-iteration times and its count of wrong elements for one row."""
        send, recv = self.buffers(size_bytes)
        prepare = None if inplace else (lambda: recv.copy_(send))
        times = self.timer.time(prepare, lambda: self.all_reduce(recv), self.iters)
        # Check one reduction of fresh data, as nccl-tests does after timing.
        fill(self.torch, send, self.rule, self.rank)
        if prepare is not None:
            prepare()
        else:
            recv.copy_(send)
        self.all_reduce(recv)
        wrong = count_wrong(self.torch, recv, self.expected, self.rule.modulus, self.tolerance)
        return times, wrong

    def gather_times(self, times: list[float]) -> list[list[float]]:
        t = self.torch.tensor(times, dtype=self.torch.float64, device=self.device)
        out = [self.torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(out, t)
        return [x.cpu().tolist() for x in out]

    def total_wrong(self, wrong: int) -> int:
        t = self.torch.tensor([wrong], dtype=self.torch.int64, device=self.device)
        self.dist.all_reduce(t)
        return int(t.item())


def build_result(rows: list[dict], env: dict, params: dict) -> dict:
    peak = cm.peak_row(rows)
    return {
        "schema": SCHEMA,
        "units": UNITS,
        "env": env,
        "world_size": env["world_size"],
        "params": params,
        "rows": rows,
        "avg_busbw_gbps": cm.average_busbw(rows),
        "peak_busbw_gbps": peak["busbw_gbps"] if peak else 0.0,
        "peak_size_bytes": peak["size_bytes"] if peak else None,
        "peak_inplace": peak["inplace"] if peak else None,
    }


def result_path(out: str | None) -> Path:
    if out:
        return Path(out)
    run_dir = os.environ.get("CORRAL_RUN_DIR")
    if not run_dir:
        raise UserError("no result location: set CORRAL_RUN_DIR (the launcher does) or pass --out FILE")
    return Path(run_dir) / RESULT_FILE


def init_backend(torch, dist, requested: str):
    """Start the process group: (backend, fallback note, device, timer, device description)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    backend, note = choose_backend(
        requested, cuda, local_world, torch.cuda.device_count() if cuda else 0, os.environ.get("CORRAL_BACKEND")
    )
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", device_id=device)
        return (
            backend,
            note,
            device,
            CudaEventTimer(dist, torch),
            f"cuda:{local_rank} {torch.cuda.get_device_name(local_rank)}",
        )
    dist.init_process_group("gloo")
    return backend, note, torch.device("cpu"), WallClockTimer(dist), "cpu"


def sweep_rows(bench: Bench, sizes: list[int], ranks: list[dict]) -> list[dict]:
    """Out-of-place then in-place for every size, after nccl-tests' warm-up at the largest and smallest size."""
    bench.warm_up(sizes[-1])
    bench.warm_up(sizes[0])
    rows = []
    for size in sizes:
        for inplace in (False, True):
            times, wrong = bench.run_one(size, inplace)
            summary = cm.summarize_times(bench.gather_times(times))
            rows.append(
                cm.make_row(
                    size_bytes=size,
                    dtype=bench.dtype,
                    op=bench.op,
                    inplace=inplace,
                    world_size=bench.world,
                    timing=summary,
                    wrong=bench.total_wrong(wrong),
                    slowest_node=ranks[summary.slowest_rank]["node"],
                )
            )
        if bench.rank == 0:  # progress for `corral logs -f` on long sweeps
            print(
                f"# done {size} B: busbw {rows[-2]['busbw_gbps']:.3f} / {rows[-1]['busbw_gbps']:.3f} GB/s "
                "(out-of-place / in-place)",
                file=sys.stderr,
                flush=True,
            )
    return rows


def write_result(result: dict, path: Path) -> None:
    """Atomically: the CLI may be polling for the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def run(args: argparse.Namespace) -> int:
    dtype = cm.resolve_dtype(args.datatype)
    op = cm.resolve_op(args.op)
    cm.check_op_for_dtype(op, dtype)
    sweep = cm.make_sweep(args.minbytes, args.maxbytes, args.stepfactor, dtype)
    if args.iters < 1 or args.warmup_iters < 0:
        raise UserError("-n/--iters must be at least 1 and -w/--warmup-iters at least 0")
    out_path = result_path(args.out)

    import torch
    import torch.distributed as dist

    backend, note, device, timer, device_name = init_backend(torch, dist, args.backend)
    try:
        cm.resolve_op(op, backend)  # same answer on every rank: all raise or none does
        rank, world = dist.get_rank(), dist.get_world_size()
        ranks: list = [None] * world
        dist.all_gather_object(ranks, rank_record(rank, int(os.environ.get("LOCAL_RANK", "0")), device_name))
        env = environment(torch, backend, note, ranks, timer.name)
        bench = Bench(
            torch, dist, device=device, dtype=dtype, op=op, timer=timer, iters=args.iters, warmup=args.warmup_iters
        )
        rows = sweep_rows(bench, sweep.sizes, ranks)
        params = {
            "min_bytes": sweep.min_bytes,
            "max_bytes": sweep.max_bytes,
            "factor": sweep.factor,
            "iters": args.iters,
            "warmup": args.warmup_iters,
            "dtype": dtype.name,
            "op": op,
        }
        if rank == 0:
            result = build_result(rows, env, params)
            write_result(result, out_path)
            sys.stdout.write(nccl_table.render(result))
            sys.stdout.flush()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

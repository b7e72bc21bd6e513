"""Async checkpoint of a CUDA state while a training loop runs, against a sync save and a raw write.

    python -m perf.gpu_ckpt --size 2G --root runs/gpu-check/ckpt --out ckpt.json [--rounds 2]
    python -m perf.gpu_ckpt --device cpu --size 16M ...      (the same code on CPU, for tests)

Per round, interleaved so that drift hits every variant alike:
  raw         the state's bytes (a host copy made once) written with os.write + one fsync
  sync        Checkpointer.save(step, state): the synchronous save of the same state
  for each async mode ("background": copies on the copy stream overlap the next step, the step's
  update waits on the device for them; "now": the default, the stream waits for the copy at once):
    baseline  the loop's steps without a save, right before
    during    save(blocking=False) at the start of a step, then steps until the write is done
The loop's step: a few bf16 matmuls (the forward/backward), wait_snapshot() (what the optimizer
guard does), an in-place update of every state tensor (the optimizer step), a synchronize (as
a loss.item() would). Blocked = the save() call plus the wait_snapshot() calls while it runs.
After each async save the checkpoint is loaded and compared bit for bit with a clone of the
state taken just before save(). Writes one JSON (medians over rounds, and every round).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from launcher.checkpoint import Checkpointer
from launcher.checkpoint.durable import CHUNK  # noqa: E402
from launcher.units import parse_size

CHUNK_TENSOR = 64 << 20
MODES = ("background", "now")


def make_state(nbytes: int, device: torch.device) -> dict:
    """~nbytes of fp32 and bf16 tensors (64 MiB each, the last one odd-sized) on ``device``."""
    tensors, left, i = {}, nbytes, 0
    g = torch.Generator(device=device).manual_seed(0)
    while left > 0:
        n = min(left, CHUNK_TENSOR)
        dtype = torch.float32 if i % 2 == 0 else torch.bfloat16
        count = max(1, n // torch.empty((), dtype=dtype).element_size())
        tensors[f"layer{i}.weight"] = torch.rand(count, generator=g, device=device).to(dtype)
        left -= n
        i += 1
    return {"model": tensors, "optim": {"step": torch.tensor(0, device=device), "lr": 3e-4}}


def nbytes_of(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state["model"].values())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Loop:
    """The training loop stand-in: compute that does not touch the state, then an update of all of it."""

    def __init__(self, state: dict, device: torch.device, n: int, matmuls: int) -> None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.a = torch.randn(n, n, device=device, dtype=dtype)
        self.b = torch.randn(n, n, device=device, dtype=dtype)
        self.state, self.device, self.matmuls = state, device, matmuls

    def step(self, before_update=None) -> tuple[float, float]:
        """(step seconds, seconds spent in ``before_update``)."""
        t0 = time.perf_counter()
        for _ in range(self.matmuls):
            c = self.a @ self.b
        waited = 0.0
        if before_update is not None:
            w0 = time.perf_counter()
            before_update()
            waited = time.perf_counter() - w0
        for t in self.state["model"].values():
            t.add_(1)  # the optimizer step: every tensor of the state changes
        self.state["optim"]["step"].add_(1)
        del c
        sync(self.device)
        return time.perf_counter() - t0, waited


def host_views(state: dict) -> list[memoryview]:
    return [memoryview(t.detach().cpu().contiguous().view(torch.uint8).numpy()) for t in state["model"].values()]


def raw_write(path: str, views: list[memoryview]) -> float:
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for v in views:
            for p in range(0, v.nbytes, CHUNK):
                os.write(fd, v[p : p + CHUNK])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def bit_exact(expected: dict, loaded: dict) -> bool:
    """Every tensor equal bit for bit (compared as raw bytes, so NaN payloads and -0.0 count too)."""
    for name, ref in expected["model"].items():
        got = loaded["model"][name]
        if got.dtype != ref.dtype or got.shape != ref.shape:
            return False
        if not torch.equal(got.contiguous().view(torch.uint8), ref.detach().cpu().contiguous().view(torch.uint8)):
            return False
    return int(loaded["optim"]["step"]) == int(expected["optim"]["step"])


def saving(ckpt: Checkpointer) -> bool:
    thread = ckpt._thread  # the write in flight (a perf script may look inside)
    return thread is not None and thread.is_alive()


def async_round(ckpt: Checkpointer, loop: Loop, state: dict, step: int, mode: str, baseline_steps: int) -> dict:
    base = [loop.step()[0] for _ in range(baseline_steps)]
    reference = {
        "model": {k: v.clone() for k, v in state["model"].items()},
        "optim": {"step": state["optim"]["step"].clone()},
    }
    sync(loop.device)
    t0 = time.perf_counter()
    ckpt.save(step, state, blocking=False, snapshot=mode)
    blocked = time.perf_counter() - t0
    during = []
    while True:
        seconds, waited = loop.step(ckpt.wait_snapshot)
        during.append(seconds)
        blocked += waited
        if not saving(ckpt):
            break
    ckpt.wait()
    total = time.perf_counter() - t0
    exact = bit_exact(reference, ckpt.load(step))
    del reference
    return {
        "blocked_s": blocked,
        "save_total_s": total,
        "step_without_s": statistics.fmean(base),
        "step_during_s": statistics.fmean(during),
        "steps_during": len(during),
        "bit_exact": exact,
    }


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    size = parse_size(args.size)
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    state = make_state(size, device)
    loop = Loop(state, device, args.matmul_n, args.matmuls)
    views = host_views(state)
    ckpt = Checkpointer(root / "ckpt", keep_last=2, allow_volatile=True, distributed=False)
    ckpt.reserve(state)  # the pinned buffer's first-use cost is not what is measured
    for _ in range(3):
        loop.step()
    rounds, step = [], 0
    for r in range(args.rounds):
        raw_s = raw_write(str(root / "raw.bin"), views)
        os.unlink(root / "raw.bin")
        step += 1
        t0 = time.perf_counter()
        ckpt.save(step, state)
        sync_s = time.perf_counter() - t0
        modes = MODES if r % 2 == 0 else MODES[::-1]
        row = {"raw_s": raw_s, "sync_s": sync_s, "async": {}}
        for mode in modes:
            step += 1
            row["async"][mode] = async_round(ckpt, loop, state, step, mode, args.baseline_steps)
        rounds.append(row)
    ckpt.close()
    shutil.rmtree(root, ignore_errors=True)

    def med(values):
        return statistics.median(values)

    return {
        "schema": "corral.perf.gpu-ckpt/1",
        "device": str(device) + (f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "size_bytes": nbytes_of(state),
        "rounds": rounds,
        "raw_s": med([r["raw_s"] for r in rounds]),
        "sync_s": med([r["sync_s"] for r in rounds]),
        "async": {
            mode: {
                **{
                    k: med([r["async"][mode][k] for r in rounds])
                    for k in ("blocked_s", "save_total_s", "step_without_s", "step_during_s")
                },
                "steps_during": min(r["async"][mode]["steps_during"] for r in rounds),
                "bit_exact": all(r["async"][mode]["bit_exact"] for r in rounds),
            }
            for mode in MODES
        },
        "method": __doc__.split("\n\n", 2)[1],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="2G", help="State size (K/M/G).")
    p.add_argument("--root", required=True, help="Scratch directory on the disk to measure (removed after).")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--baseline-steps", type=int, default=10)
    p.add_argument("--matmuls", type=int, default=16, help="Matmuls per step (the step's compute).")
    p.add_argument("--matmul-n", type=int, default=8192)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    a = result["async"]
    print(
        f"state {result['size_bytes'] / 2**30:.2f} GiB on {result['device']}: raw {result['raw_s']:.3f} s, sync {result['sync_s']:.3f} s; "
        + "; ".join(
            f"{m}: blocked {a[m]['blocked_s'] * 1e3:.1f} ms, step {a[m]['step_during_s'] * 1e3:.1f} vs "
            f"{a[m]['step_without_s'] * 1e3:.1f} ms, exact {a[m]['bit_exact']}"
            for m in MODES
        )
    )
    return 0 if all(a[m]["bit_exact"] for m in MODES) else 1


if __name__ == "__main__":
    sys.exit(main())

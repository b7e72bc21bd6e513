"""Test worker (torchrun): all-reduce, report and checkpoint in a loop, with hangs and slow parts on demand.

Files under CORRAL_RUN_DIR/hang-test/ tell the test what happened:
  pid-rank<R>-restart<N>   the worker's pid (the test freezes one with SIGSTOP by this pid)
  step-rank<R>             the last step the rank finished (rewritten every step)
  starts-rank<R>           one JSON line per start of the rank: its pid and the step it resumed from (or null)
                           (torchrun's restart count is per node: a node restarted by a membership
                           change keeps 0, so the test counts starts instead)
  save-seconds-rank<R>     how long each checkpoint save took
  done-rank<R>             JSON: the final accumulated sum and the restart count
Every step all-reduces [rank + step + 1] and adds the result to an accumulator, so the final sum
is exact and known: sum over steps of (world*(world+1)/2 + world*step).
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from launcher.checkpoint import Checkpointer
from launcher.report import report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--step-time", type=float, default=0.05)
    ap.add_argument("--every", type=int, default=0, help="checkpoint every N steps (0: never)")
    ap.add_argument("--no-report", action="store_true", help="never call report(): print a line per step instead")
    ap.add_argument("--first-step", type=float, default=0.0, help="the first step sleeps this long (all ranks)")
    ap.add_argument("--sleep-rank", type=int, default=-1, help="this rank sleeps outside any collective...")
    ap.add_argument("--sleep-at", type=int, default=-1, help="...at this step (first attempt only)...")
    ap.add_argument("--sleep-s", type=float, default=0.0, help="...for this long")
    ap.add_argument("--ckpt-mb", type=int, default=1, help="checkpoint state size in MiB")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    out = Path(os.environ["CORRAL_RUN_DIR"]) / "hang-test"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pid-rank{rank}-restart{restart}").write_text(str(os.getpid()))

    ckpt = Checkpointer.from_env() if args.every else None
    acc = torch.zeros(1, dtype=torch.float64)
    start = 0
    found = ckpt.load_latest() if ckpt else None
    if found is not None:
        step, state = found
        acc = state["acc"]
        start = step + 1
    with open(out / f"starts-rank{rank}", "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "resumed_from": found[0] if found else None}) + "\n")
    ballast = torch.zeros(args.ckpt_mb * (1 << 20) // 8, dtype=torch.float64)

    for step in range(start, args.steps):
        if step == start and args.first_step:
            time.sleep(args.first_step)
        if rank == args.sleep_rank and step == args.sleep_at and restart == 0:
            time.sleep(args.sleep_s)  # outside any collective: the others wait for it in all_reduce
        t = torch.tensor([float(rank + step + 1)], dtype=torch.float64)
        dist.all_reduce(t)
        acc += t
        if args.no_report:
            print(f"step {step} acc {acc.item()}", flush=True)
        else:
            report(step=step, acc=acc.item())
        (out / f"step-rank{rank}").write_text(str(step))
        if ckpt and step % args.every == 0:
            t0 = time.monotonic()
            ckpt.save(step, {"acc": acc.clone(), "ballast": ballast})
            with open(out / f"save-seconds-rank{rank}", "a") as f:
                f.write(f"{time.monotonic() - t0:.3f}\n")
        time.sleep(args.step_time)
    if ckpt:
        ckpt.close()
    (out / f"done-rank{rank}").write_text(json.dumps({"acc": acc.item()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

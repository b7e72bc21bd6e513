"""Test worker (torchrun): a tiny DDP loop that checkpoints with launcher.checkpoint and resumes.

Files under CORRAL_RUN_DIR/ckpt-test/ tell the test what happened:
  pid-rank<R>-restart<N>     the worker's pid (the test SIGKILLs one by this recorded pid)
  start-rank<R>-restart<N>   JSON: the step it resumed from (or null) and the valid steps it saw
  acks                       rank 0 appends each step whose blocking save returned (durable)
  done-rank<R>               JSON: final step, restart count, parameter checksum
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from launcher.checkpoint import Checkpointer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--step-time", type=float, default=0.02)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    out = Path(os.environ["CORRAL_RUN_DIR"]) / "ckpt-test"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pid-rank{rank}-restart{restart}").write_text(str(os.getpid()))

    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ckpt = Checkpointer.from_env()
    visible = ckpt.steps()
    found = ckpt.load_latest()
    start = 0
    if found is not None:
        step, state = found
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        start = step + 1
    (out / f"start-rank{rank}-restart{restart}").write_text(
        json.dumps({"resumed_from": found[0] if found else None, "visible": visible})
    )

    for step in range(start, args.steps):
        g = torch.Generator().manual_seed(step)  # the data of a step depends only on the step
        x = torch.randn(8 * world, 16, generator=g)[rank::world]
        loss = torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            ckpt.save(step, {"model": model.module.state_dict(), "optim": opt.state_dict(), "loss": loss.item()})
            if rank == 0:
                with open(out / "acks", "a") as f:
                    f.write(f"{step}\n")
        time.sleep(args.step_time)
    ckpt.close()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    (out / f"done-rank{rank}").write_text(json.dumps({"restart": restart, "params": params.tolist()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""A small DDP training script to copy: what `corral demo` runs.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE (and the rendezvous); corral adds CORRAL_BACKEND
(nccl with GPUs, gloo without), CORRAL_CKPT_DIR and CORRAL_RUN_DIR. It checkpoints with
launcher.checkpoint and resumes from the latest checkpoint, so a torchrun restart (max_restarts)
or a relaunch continues where it stopped. Each rank writes its final loss to
<run dir>/results/rank<N>.json.

    corral launch configs/demo.yaml --follow

On Slurm (docs/SLURM.md), SIGUSR1 means "the time limit is near, or the job is being preempted":
corral's batch script asks Slurm for it (``--signal=B:USR1@S``) and passes it to every worker.
The pattern: the handler only sets a flag; every step the ranks agree on it with one tiny
all-reduce (they get the signal at slightly different moments and must stop at the same step),
then each saves a blocking checkpoint and exits 0 without writing results. The batch script
requeues the job, and the new attempt resumes from that checkpoint.

``--plain-sgd`` trains without DDP and torch.optim: one all-reduce averages the gradients and the
SGD step is written out, the same arithmetic as the default for plain SGD. Either of those torch
classes imports torch._dynamo on first use, 1.6 CPU-seconds per rank on a CPU; the launcher's tests
start hundreds of ranks and use this, the demo shows DDP.
"""

import argparse
import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from launcher.checkpoint import Checkpointer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--step-time", type=float, default=0.1, help="Seconds to sleep per step (pace the demo).")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--ckpt-every", type=int, default=50, help="Checkpoint every this many steps.")
    parser.add_argument(
        "--pg-timeout", type=float, default=120, help="Seconds a collective may wait (a dead peer fails fast)."
    )
    parser.add_argument(
        "--plain-sgd", action="store_true", help="No DDP or torch.optim: the same SGD by hand, a quicker start."
    )
    args = parser.parse_args()

    backend = os.environ.get("CORRAL_BACKEND", "gloo")
    dist.init_process_group(backend, timeout=timedelta(seconds=args.pg_timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if backend == "nccl" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    print(f"rank {rank}/{world} ready on {device} (restart {restart})", flush=True)

    torch.manual_seed(0)  # same data on every rank's generator, sliced by rank below
    # A small network learns a fixed random "teacher" network from noisy samples: the loss falls
    # over the whole run and levels off near the noise, instead of a toy solved in 100 steps.
    teacher_in, teacher_out = torch.randn(16, 8) / 2, torch.randn(8, 1)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).to(device)
    if args.plain_sgd:  # the same seed gave every rank the same weights: nothing to broadcast
        model, opt = net, None
    else:
        model = DDP(net, device_ids=[local_rank] if device.type == "cuda" else None)
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)

    stop_requested = [False]
    signal.signal(signal.SIGUSR1, lambda *_: stop_requested.__setitem__(0, True))  # save and leave at the next step

    ckpt = Checkpointer.from_env()  # root: $CORRAL_CKPT_DIR; every rank saves and loads its own state
    start, loss, last_saved = 0, None, None
    if (found := ckpt.load_latest()) is not None:
        step, state = found
        net.load_state_dict(state["model"])
        if opt is not None and state.get("optim"):
            opt.load_state_dict(state["optim"])
        start = step + 1
        print(f"resumed from checkpoint step {step}", flush=True)

    seen, since = 0.0, 0
    for step in range(start, args.steps):
        x = torch.randn(64 * world, 16)[rank::world]
        y = torch.tanh(x @ teacher_in) @ teacher_out + 0.1 * torch.randn(64 * world, 1)[rank::world]
        loss = torch.nn.functional.mse_loss(model(x.to(device)), y.to(device))
        net.zero_grad()
        loss.backward()  # under DDP this also all-reduces the gradients across every rank of every node
        if opt is None:
            sgd_step(net, args.lr, world)
        else:
            opt.step()
        seen, since = seen + loss.item(), since + 1
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {seen / since:.4f} (mean since the last line)", flush=True)
            seen, since = 0.0, 0
        if step % args.ckpt_every == 0 or step == args.steps - 1:
            # non-blocking: tensors are copied now, the write overlaps the next steps
            ckpt.save(step, training_state(net, opt), blocking=False)
            last_saved = step
        time.sleep(args.step_time)
        if step < args.steps - 1 and stop_now(stop_requested[0], device):
            ckpt.wait()
            if last_saved != step:
                ckpt.save(step, training_state(net, opt), blocking=True)
            print(f"SIGUSR1: checkpoint saved at step {step}; leaving for the requeue", flush=True)
            dist.destroy_process_group()
            return
    ckpt.wait()

    out = Path(os.environ.get("CORRAL_RUN_DIR", ".")) / "results"
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "rank": rank,
        "world_size": world,
        "steps": args.steps,
        "resumed_from": start,
        "loss": None if loss is None else loss.item(),
        "restart": restart,
        "node": os.environ.get("CORRAL_NODE"),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def training_state(net: torch.nn.Module, opt: torch.optim.Optimizer | None) -> dict:
    return {"model": net.state_dict(), "optim": None if opt is None else opt.state_dict()}


@torch.no_grad()
def sgd_step(net: torch.nn.Module, lr: float, world: int) -> None:
    """DDP's gradient average (one all-reduce of them all, divided by the ranks) and SGD's step."""
    grads = [p.grad for p in net.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    for p, g in zip(net.parameters(), flat.split([g.numel() for g in grads])):
        p -= lr * g.view_as(p)


def stop_now(requested: bool, device: torch.device) -> bool:
    """Whether any rank got SIGUSR1: all ranks must leave after the same step."""
    flag = torch.tensor([1.0 if requested else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


if __name__ == "__main__":
    main()

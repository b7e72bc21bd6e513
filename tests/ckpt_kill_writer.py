"""A zygote for the SIGKILL test: imports torch once, then forks writers that the test gets killed.

Protocol on stdin/stdout, one line each:
  test -> "run START DELAY"   fork a writer saving steps START, START+1, ... forever;
                               after DELAY seconds SIGKILL it (by its recorded pid) and reap it
  zygote -> "killed PID ACKED" ACKED = the last step whose save had returned (durable), or -1
  test -> "quit"
The zygote never runs a multi-threaded torch op, so forking it is safe. Writers alternate
blocking and async saves under a keep_last retention, so kills land in every phase:
serialising, writing, fsync, manifest, rename, LATEST, retention removals.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch

torch.set_num_threads(1)

from launcher.checkpoint import Checkpointer  # noqa: E402
from tests.ckpt_helpers import make_state  # noqa: E402


def writer(root: str, start: int, ack_fd: int) -> None:
    ckpt = Checkpointer(root, keep_last=3, keep_every=10)
    pending = None
    step = start
    while True:
        blocking = step % 2 == 0
        ckpt.save(step, make_state(step), blocking=blocking)
        # save() returned: the previous async save (waited for) and a blocking one are durable
        done = step if blocking else pending
        if done is not None:
            os.write(ack_fd, f"{done}\n".encode())
        pending = None if blocking else step
        step += 1


def main() -> None:
    root = sys.argv[1]
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "quit":
            return
        start, delay = int(cmd[1]), float(cmd[2])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                writer(root, start, w)
            finally:
                os._exit(1)
        os.close(w)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        acks = os.read(r, 1 << 20).split()
        while True:
            more = os.read(r, 1 << 20)
            if not more:
                break
            acks += more.split()
        os.close(r)
        print(f"killed {pid} {int(acks[-1]) if acks else -1}", flush=True)


if __name__ == "__main__":
    main()

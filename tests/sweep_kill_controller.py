"""Run the sweep controller in the foreground and SIGKILL it at one of the two points a crash must survive.

    python tests/sweep_kill_controller.py --at after-launch|before-tell -- <controller args>

after-launch: right after the first trials were journalled and launched (between a start and an end);
before-tell:  right before the first tell, after its trial's end was journalled (between an end and a tell).
The process really dies (SIGKILL: no finally, no lock release), as a crashed head node would.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from launcher.sweep import controller, study  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--at", required=True, choices=["after-launch", "before-tell"])
args, rest = p.parse_known_args()
rest = [x for x in rest if x != "--"]


def die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if args.at == "after-launch":
    real_start_all = controller.Controller.start_all

    def start_all(self, decisions):
        real_start_all(self, decisions)
        if decisions:
            die()

    controller.Controller.start_all = start_all
else:

    def tell(self, settle):
        die()

    study.SweepStudy.tell = tell

sys.exit(controller.main(rest))

"""CPU of one node-agent call (what ``corral ps`` costs a node), against a bare Python start and pdsh's probe.

    python -m perf.agent_cost [--source OLD_node_agent.py] [--calls 40]

Each variant is run ``--calls`` times as a fresh process fed the agent's first two lines and one ``status``
request, as over ssh (without the ssh); the figure is the children's user+system CPU per call, which
load on the machine changes less than wall time. ``--source`` measures another version of the agent
(e.g. ``git show REV:launcher/agent/node_agent.py > old.py``) in the same run, compiled on the node as
before bytecode was shipped. Figures: docs/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from launcher.agent.remote import AGENT_FLAGS, BOOTSTRAP, _code_lines

STATUS = {"op": "status", "state_dir": "/nonexistent", "tmux_panes": ["tmux", "-L", "corral-agent-cost", "list-panes"]}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def per_call(argv: list[str], stdin: str, calls: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per call."""
    cpu0, wall0 = _cpu(), time.perf_counter()
    for _ in range(calls):
        subprocess.run(argv, input=stdin.encode(), capture_output=True, check=False)
    return 1000 * (_cpu() - cpu0) / calls, 1000 * (time.perf_counter() - wall0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, help="another node_agent.py to measure beside this one")
    ap.add_argument("--calls", type=int, default=40)
    args = ap.parse_args()
    agent = [sys.executable, *AGENT_FLAGS, "-c", BOOTSTRAP]
    request = json.dumps(STATUS) + "\n"
    shipped = _code_lines().decode()
    source = shipped.splitlines()[1]
    variants = {
        "agent status, bytecode shipped": (agent, shipped + request),
        "agent status, source compiled on the node": (agent, f"00000000 -\n{source}\n{request}"),
    }
    if args.source:
        old = json.dumps(args.source.read_text(encoding="utf-8"))
        variants[f"agent status, {args.source} compiled"] = (agent, f"00000000 -\n{old}\n{request}")
    variants["python -I -S -c pass"] = ([sys.executable, *AGENT_FLAGS, "-c", "pass"], "")
    variants["tmux has-session (pdsh's probe)"] = (["tmux", "-L", "corral-agent-cost", "has-session"], "")
    for label, (argv, stdin) in variants.items():
        cpu, wall = per_call(argv, stdin, args.calls)
        print(f"{label:55s} {cpu:6.1f} ms CPU  {wall:6.1f} ms wall")


if __name__ == "__main__":
    main()

"""Where a machine's CPU went, by process: BSD process accounting (acct(2)) over a command's run.

    python -m perf.process_census --out /var/tmp/census.acct -- make test
    python -m perf.process_census --report /var/tmp/census.acct

The kernel appends one record per process that exits (its command name, parent, user and system
time), for every process on the machine, containers and simulated nodes included: what
per-test cgroup accounting (perf/pytest_cpu.py) misses. The report groups the CPU by command name,
and Python processes by what started them (torchrun's ranks, the rest), since they all read
"python". Needs root and a kernel with CONFIG_BSD_PROCESS_ACCT_V3.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import struct
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

RECORD = struct.Struct("<BBH6If8H16s")  # struct acct_v3 (linux/acct.h), 64 bytes
ACCT_V3 = 3
AHZ = 100  # the ticks acct_v3's times count in


def comp_t(value: int) -> int:
    """A comp_t (13-bit mantissa, 3-bit base-8 exponent) as an integer."""
    return (value & 0x1FFF) << (3 * ((value >> 13) & 7))


@dataclass(frozen=True)
class Exit:
    pid: int
    ppid: int
    comm: str
    cpu_s: float
    btime: int


def read(path: Path) -> list[Exit]:
    data = path.read_bytes()
    out = []
    for off in range(0, len(data) - RECORD.size + 1, RECORD.size):
        f = RECORD.unpack_from(data, off)
        if f[1] != ACCT_V3:
            raise SystemExit(f"{path}: record at byte {off} is not acct v3 (version {f[1]})")
        _flag, _ver, _tty, _exit, _uid, _gid, pid, ppid, btime, _etime, utime, stime, *_rest, comm = f
        name = comm.split(b"\0", 1)[0].decode(errors="replace")
        out.append(Exit(pid, ppid, name, (comp_t(utime) + comp_t(stime)) / AHZ, btime))
    return out


def _acct(path: str | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.acct(path.encode() if path else None) != 0:
        err = ctypes.get_errno()
        raise SystemExit(f"acct({path!r}): {os.strerror(err)} (root and CONFIG_BSD_PROCESS_ACCT needed)")


def record(out: Path, argv: list[str]) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"")
    _acct(str(out))
    try:
        return subprocess.call(argv)
    finally:
        _acct(None)


def parents_of(exits: list[Exit]) -> list[Exit | None]:
    """Each exit's parent: the next exit of its parent pid (a parent outlives its child; records are in exit
    order, so a pid reused later is never taken for the parent). None for a parent still running at the end."""
    parents: list[Exit | None] = [None] * len(exits)
    waiting: dict[int, list[int]] = defaultdict(list)  # pid -> indexes of exited children waiting for it
    for i, e in enumerate(exits):
        for child in waiting.pop(e.pid, []):
            if e.btime <= exits[child].btime:
                parents[child] = e
        waiting[e.ppid].append(i)
    return parents


def kind(e: Exit, parent: Exit | None) -> str:
    """The command name; a Python process is named by its parent (ranks are torchrun's children), since a
    process's name is its last thread's (torch's threads: pt_elastic, pt_gloo_runloop ...)."""
    if not e.comm.startswith(("python", "pt_", "gloo")):
        return e.comm
    return f"python-ish ({e.comm}), child of {parent.comm if parent else 'a process still running'}"


def report(path: Path, top: int) -> str:
    exits = read(path)
    cpu: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e, parent in zip(exits, parents_of(exits)):
        k = kind(e, parent)
        cpu[k] += e.cpu_s
        count[k] += 1
    total = sum(cpu.values())
    lines = [
        f"{total:9.1f} CPU-s in {len(exits)} exited processes ({path})",
        "    CPU-s  processes  per process  command",
    ]
    for k in sorted(cpu, key=cpu.get, reverse=True)[:top]:
        lines.append(f"{cpu[k]:9.1f}  {count[k]:9d}  {cpu[k] / count[k]:11.3f}  {k}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="record every process exit into this file while COMMAND runs")
    ap.add_argument("--report", type=Path, help="summarise a recorded file")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.out:
        if not command:
            ap.error("--out needs a command after --")
        rc = record(args.out, command)
        print(report(args.out, args.top), file=sys.stderr)
        return rc
    if args.report:
        print(report(args.report, args.top))
        return 0
    ap.error("give --out FILE -- COMMAND, or --report FILE")
    return 2


if __name__ == "__main__":
    sys.exit(main())

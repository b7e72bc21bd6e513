"""The machine's CPU for starting a job on N simulated nodes: corral launch against pdsh -f 32, torch left out.

At 32 simulated nodes on 2 cores a launch is CPU-bound from its first second to every rank's readiness
(``perf/scale_bench.py``: ~94 busy CPU-seconds in ~48 s), so every CPU-second the launcher's path spends
delays the ranks by about half a second. Under torch's imports, though, what starting the job costs is
lost in the noise of one pair (±1.5 CPU-s). Here each node's ``torchrun`` is a stub that writes its
ready file and sleeps (a venv whose ``bin/torchrun`` is that stub, and which passes preflight's file check
for torch): what is left is the launcher's path alone, from the command's start until every node's
torchrun has started: the launching process and its ssh clients, the nodes' sshd, shells, node agent,
tmux and job wrapper. pdsh starts the same line as in ``perf/scale_bench.py`` (cd, activate the venv,
torchrun in a new tmux session).

Per repetition, in a shuffled order: ``machine_cpu_s`` (busy CPU of the whole machine, ``/proc/stat``,
from the command's start until the last ready file, plus ``SETTLE_S``), ``command_cpu_s`` (the command
and the children it waited for), ``command_s``, ``ready_s``. ``--by-command`` also samples every CPU with
``perf record -a`` and splits the busy time by command name. ``--also-root DIR`` adds another checkout's
corral (e.g. a ``git worktree`` of an earlier commit), run with this interpreter. As root, from the
repository root:

    python -m perf.start_cost --nodes 32 --reps 6
    python -m perf.start_cost --nodes 32 --reps 6 --also-root /var/tmp/before --json docs/results/start-cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf import scale_bench as sb

SETTLE_S = 0.3
"""After the last ready file: the tail of the start (a node agent's exit, the launcher's own) is counted."""
PERF_HZ = 1999

STUB_TORCHRUN = """#!/bin/bash
# A torchrun that starts nothing: the ready file in the output directory (its second-to-last argument,
# as perf/scale_bench.py's rank script is called), then sleep until stopped.
out="${@: -2:1}"
: > "$out/ready-$(hostname)"
exec sleep 900
"""


def stub_venv(where: Path, real: Path) -> Path:
    """A venv whose torchrun is ``STUB_TORCHRUN`` and whose python3 is ``real``'s, with the files preflight looks
    for to call torch installed."""
    venv = where / "stub-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text((real / "bin" / "activate").read_text().replace(str(real), str(venv)))
    for name in ("python3", "python"):
        (venv / "bin" / name).symlink_to(os.path.realpath(real / "bin" / "python3"))
    torchrun = venv / "bin" / "torchrun"
    torchrun.write_text(STUB_TORCHRUN)
    torchrun.chmod(0o755)
    torch = venv / "lib" / f"python3.{sys.version_info.minor}" / "site-packages" / "torch"
    (torch / "distributed").mkdir(parents=True)
    (torch / "distributed" / "run.py").write_text("")
    (torch / "version.py").write_text("__version__ = 'stub'\n")
    return venv


def wait_ready(out: Path, n: int, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(out.glob("ready-*"))) >= n:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"only {len(list(out.glob('ready-*')))} of {n} stub torchruns started within {timeout}s")


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


class Sampler:
    """``perf record`` of every CPU while one start runs, read back as CPU seconds per command name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(PERF_HZ), "-a", "-o", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # perf's own start is not the launch's

    def stop(self) -> dict[str, float]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        report = subprocess.run(
            ["perf", "report", "-i", str(self.path), "--sort", "comm", "--stdio", "-n"],
            capture_output=True,
            text=True,
        ).stdout
        self.path.unlink(missing_ok=True)
        return by_command(report)


def by_command(report: str) -> dict[str, float]:
    """CPU seconds per command name from ``perf report --sort comm -n`` (idle, ``swapper``, left out)."""
    used: dict[str, float] = {}
    for line in report.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].endswith("%") and parts[1].isdigit():
            comm = parts[2].strip()
            if comm != "swapper":
                used[comm] = used.get(comm, 0.0) + int(parts[1]) / PERF_HZ
    return used


def start_once(bench: sb.Bench, n: int, kind: str, cli: list[str] | None, sample_dir: Path | None) -> dict:
    """One start of a job on ``n`` nodes by ``cli`` (a corral) or pdsh (``cli`` None), measured, then stopped."""
    if cli is not None:
        name, cfile, jfile, out = bench.rank_job(n, "s")
        argv, env = [*cli, "launch", str(jfile), "-c", str(cfile)], None
    else:
        name, out, pdsh, env, argv = bench.pdsh_job(n)
    sampler = Sampler(sample_dir / f"{name}.data") if sample_dir else None
    cpu0, own0, t0 = sb.machine_cpu(), children_cpu(), time.monotonic()
    took, code, _ = sb.timed(argv, env=env)
    own = children_cpu() - own0
    if code != 0:
        raise RuntimeError(f"{kind} failed to start the job on {n} nodes")
    ready = wait_ready(out, n) - t0
    time.sleep(SETTLE_S)
    row = {"machine_cpu_s": sb.machine_cpu() - cpu0, "command_cpu_s": own, "command_s": took, "ready_s": ready}
    if sampler:
        row["by_command"] = sampler.stop()
    if cli is not None:
        sb.timed([*bench.cli, "stop", name, "-c", str(cfile)])
    else:
        sb.timed([*pdsh, "tmux", "kill-session", "-t", name], env=env)
    sb.wait_gone(name.encode())
    return row


def summarize(rows: dict[str, list[dict]]) -> dict:
    out = {}
    for kind, got in rows.items():
        entry = {key: statistics.median(r[key] for r in got) for key in got[0] if key != "by_command"}
        if "by_command" in got[0]:
            names = sorted({c for r in got for c in r["by_command"]})
            used = {c: statistics.median(r["by_command"].get(c, 0.0) for r in got) for c in names}
            entry["by_command"] = dict(sorted(used.items(), key=lambda kv: -kv[1]))
        out[kind] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--also-root", type=Path, help="another checkout whose corral joins the comparison")
    parser.add_argument("--by-command", action="store_true", help="split the CPU by command name (perf record)")
    parser.add_argument("--json", type=Path, help="the measurement file to append this run to")
    from perf.results_log import add_conditions_argument

    add_conditions_argument(parser)
    args = parser.parse_args(argv)
    if args.by_command and shutil.which("perf") is None:
        parser.error("--by-command needs Linux perf (perf record); it is not on PATH")
    from tests.infra.simcluster import SimCluster

    with SimCluster(args.nodes) as sim:
        work = Path(sim.run_dir) / "start-cost"
        work.mkdir()
        bench = sb.Bench(sim, work, str(stub_venv(work, Path(sys.prefix))))
        clis: dict[str, list[str] | None] = {"corral": bench.cli}
        if args.also_root is not None:
            clis[f"corral@{args.also_root}"] = sb.checkout_cli(args.also_root)
        clis["pdsh"] = None
        rows: dict[str, list[dict]] = {kind: [] for kind in clis}
        rng = random.Random(args.seed)
        with tempfile.TemporaryDirectory(prefix="corral-start-cost-") as tmp:
            for rep in range(args.reps):
                for kind in rng.sample(list(clis), len(clis)):
                    row = start_once(bench, args.nodes, kind, clis[kind], Path(tmp) if args.by_command else None)
                    rows[kind].append(row)
                    figures = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "by_command")
                    print(f"rep {rep} {kind}: {figures}", flush=True)
    summary = summarize(rows)
    print(json.dumps(summary, indent=2))
    if args.json:
        from perf.results_log import append_run, current_command

        append_run(
            args.json,
            {"nodes": args.nodes, "rows": rows, "summary": summary},
            measurement=f"the machine's CPU to start a job (torchrun a stub) on {args.nodes} simulated nodes: "
            "corral launch against pdsh -f 32, medians",
            script="perf/start_cost.py",
            command=current_command("perf.start_cost"),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

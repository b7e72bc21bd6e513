"""What one ``corral top`` refresh costs: wall time for a whole cluster, CPU time on a node.

On the simulated cluster (root, from the repository root; every node answers its GPUs from a
recorded NVML reading):

* ``wall``: one refresh of N nodes with kept sessions (one agent per node, all asked in
  parallel), against the same refresh with a new agent per node per refresh (a new ssh
  session each time, what a loop of ``ssh node sample`` does); the two kinds interleaved.
* ``cpu``: the agent's CPU time per refresh on a node, from BSD process accounting (``acct(2)``:
  one record per exited process, user + system time): every node's agent answers R1 refreshes
  in one run and R2 in another; the difference divided by R2 - R1 is the cost of one refresh
  (the agent's start and the sampler's load cancel out). Children the agent starts are counted.

* ``sampler`` (no cluster): the NVML sampler process's CPU per sample (process accounting), with
  ``tests/fixtures/fake_nvml/pynvml.py`` standing in for nvidia-ml-py (no NVML library here): the
  cost of the process, the pipe and the JSON around the NVML calls, not of the calls themselves.

    python -m perf.top_refresh --nodes 16 --refreshes 30 --cpu-refreshes 20 220 --out docs/results/top-refresh-cost.json   # appends a dated run
    python -m perf.top_refresh --modes sampler --cpu-refreshes 20 220
    python -m perf.top_refresh --modes sampler --real-nvml --cpu-refreshes 20 520   # on a GPU machine
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from perf import results_log

REPO = Path(__file__).resolve().parents[1]
REFRESH_MEASUREMENT = "corral top: wall time of a refresh and the CPU it costs the nodes, by node count"
SAMPLER_MEASUREMENT = "corral top: CPU cost of the node sampler's kept NVML sampler process per refresh"
if str(REPO) not in sys.path:  # run as a file as well as with -m
    sys.path.insert(0, str(REPO))

from launcher.config import ClusterConfig  # noqa: E402
from launcher.tools import ssh  # noqa: E402
from launcher.top.collect import Collector, sample_request, sampler_source  # noqa: E402
from launcher.top.targets import targets  # noqa: E402
from tests.infra.simcluster import SimCluster  # noqa: E402

RECORDING = REPO / "tests" / "fixtures" / "nvml" / "top_h100_failing.json"

# struct acct_v3 (linux/acct.h), 64 bytes: flag, version, tty, exitcode, uid, gid, pid, ppid,
# btime, etime (float), then eight comp_t (utime, stime, mem, io, rw, minflt, majflt, swaps), comm.
ACCT_V3 = struct.Struct("<BBHIIIIIIf8H16s")
AHZ = 100


def comp_t_value(v: int) -> int:
    """comp_t: 13-bit mantissa, 3-bit exponent in base 8."""
    return (v & 0x1FFF) << (3 * ((v >> 13) & 0x7))


def read_acct(path: str) -> list[dict]:
    data = Path(path).read_bytes()
    out = []
    for off in range(0, len(data) - ACCT_V3.size + 1, ACCT_V3.size):
        f = ACCT_V3.unpack_from(data, off)
        if f[1] != 3:
            raise ValueError(f"acct record version {f[1]} at byte {off}, expected 3")
        out.append(
            {
                "pid": f[6],
                "ppid": f[7],
                "cpu_s": (comp_t_value(f[10]) + comp_t_value(f[11])) / AHZ,
                "comm": f[18].split(b"\0")[0].decode(errors="replace"),
            }
        )
    return out


class Accounting:
    """Process accounting on for a ``with`` block (the whole machine; root)."""

    def __enter__(self) -> Accounting:
        fd, self.path = tempfile.mkstemp(prefix="corral-top-acct-")
        os.close(fd)
        self.libc = ctypes.CDLL(None, use_errno=True)
        if self.libc.acct(self.path.encode()) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"acct: {os.strerror(err)} (needs root and BSD process accounting)")
        return self

    def __exit__(self, *exc: object) -> None:
        self.libc.acct(None)

    def records(self) -> list[dict]:
        try:
            return read_acct(self.path)
        finally:
            os.unlink(self.path)


def replay_dir(sim: SimCluster) -> Path:
    d = sim.shared_dir / "nvml"
    d.mkdir(parents=True, exist_ok=True)
    for n in sim.nodes:
        shutil.copy(RECORDING, d / f"{n.hostname}.json")
    return d


async def kept_refreshes(
    cluster: ClusterConfig, replay: Path, count: int, timeout: float = 10.0
) -> tuple[float, list[float]]:
    """Wall seconds of the first refresh (every node logs in) and of each of ``count`` refreshes after it."""
    collector = Collector(cluster, targets(cluster, []), timeout=timeout, replay_dir=str(replay))
    try:
        t0 = time.perf_counter()
        await collector.refresh(timeout + cluster.ssh.connect_timeout)
        first = time.perf_counter() - t0
        walls = []
        for _ in range(count):
            t0 = time.perf_counter()
            frame = await collector.refresh(timeout)
            walls.append(time.perf_counter() - t0)
            if not all(n.reachable and n.waiting_s is None for n in frame.nodes):
                raise RuntimeError(f"a node did not answer: {[(n.node, n.error, n.waiting_s) for n in frame.nodes]}")
        return first, walls
    finally:
        await collector.close()


async def one_shot_refresh(cluster: ClusterConfig, replay: Path) -> float:
    """A refresh where each node gets a new agent (a new ssh session) that loads the sampler and answers once."""
    load = {"op": "load", "name": "corral_top_sampler", "code": sampler_source()}
    t0 = time.perf_counter()

    async def one(node):
        from launcher.agent.remote import AgentSession

        s = await AgentSession.open(cluster, node)
        try:
            await s.request(load, 30)
            return await s.request(sample_request(cluster, node, [], str(replay)), 30)
        finally:
            await s.close()

    replies = await asyncio.gather(*(one(n) for n in cluster.nodes))
    wall = time.perf_counter() - t0
    if not all(r.ok for r in replies):
        raise RuntimeError([r.error for r in replies if not r.ok])
    return wall


def wall_mode(cluster: ClusterConfig, replay: Path, refreshes: int, rounds: int) -> dict:
    kept: list[float] = []
    fresh: list[float] = []
    firsts: list[float] = []
    for r in range(rounds):  # interleaved, alternating order
        order = ("kept", "fresh") if r % 2 == 0 else ("fresh", "kept")
        for kind in order:
            if kind == "kept":
                first, walls = asyncio.run(kept_refreshes(cluster, replay, refreshes))
                firsts.append(first)
                kept += walls
            else:
                fresh += [asyncio.run(one_shot_refresh(cluster, replay)) for _ in range(max(1, refreshes // 10))]
    return {
        "kept_s": summary(kept),
        "new_session_s": summary(fresh),
        "first_refresh_with_logins_s": summary(firsts),
        "ratio_new_over_kept_median": statistics.median(fresh) / statistics.median(kept),
    }


async def agent_cpu_run(cluster: ClusterConfig, replay: Path, refreshes: int) -> dict[str, float]:
    """Every node's agent answers ``refreshes`` samples; returns node -> agent pid."""
    collector = Collector(cluster, targets(cluster, []), timeout=10, replay_dir=str(replay))
    pids: dict[str, int] = {}
    try:
        for _i in range(refreshes + 1):
            frame = await collector.refresh(20)
            if not all(n.reachable and n.waiting_s is None for n in frame.nodes):
                raise RuntimeError(f"a node did not answer: {[(n.node, n.error) for n in frame.nodes]}")
        for p in collector.pollers:
            reply = await p.session.request({"op": "top", "disks": []}, 10)
            pids[p.node.label] = reply.data["pid"]
    finally:
        await collector.close()
    return pids


def cpu_of(records: list[dict], pid: int) -> float:
    """The process's own CPU plus its children's (any the agent started)."""
    return sum(r["cpu_s"] for r in records if r["pid"] == pid or r["ppid"] == pid)


def cpu_mode(cluster: ClusterConfig, replay: Path, r1: int, r2: int, reps: int) -> dict:
    per_refresh_ms = []
    runs = []
    for rep in range(reps):
        result = {}
        for count in (r1, r2) if rep % 2 == 0 else (r2, r1):
            with Accounting() as acct:
                pids = asyncio.run(agent_cpu_run(cluster, replay, count))
                time.sleep(0.5)  # the agents' records are written as they exit
            records = acct.records()
            result[count] = [cpu_of(records, pid) for pid in pids.values()]
            if not all(result[count]) and count == r2:
                missing = [n for n, pid in pids.items() if not any(r["pid"] == pid for r in records)]
                if missing:
                    raise RuntimeError(f"no accounting record for the agents of {missing}")
        # +1 refresh in each run is the first (login) refresh; the pid query adds one sample to both.
        slope = [(b - a) / (r2 - r1) * 1000 for a, b in zip(result[r1], result[r2])]
        per_refresh_ms.append(statistics.mean(slope))
        runs.append({"agent_cpu_s": {str(k): v for k, v in result.items()}, "per_refresh_ms_per_node": slope})
    return {"refreshes": [r1, r2], "per_refresh_ms": summary(per_refresh_ms), "runs": runs}


def sampler_cpu_s(samples: int, real: bool = False) -> float:
    """CPU seconds of one NVML sampler process that answered ``samples`` (the stand-in pynvml
    answering 2 recorded GPUs, or with ``real`` this machine's nvidia-ml-py and GPUs)."""
    from launcher.top import node_sampler

    fake = REPO / "tests" / "fixtures" / "fake_nvml"
    env = {} if real else {"PYTHONPATH": str(fake), "FAKE_NVML_RECORDING": str(RECORDING)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with Accounting() as acct:
            proc, err = node_sampler._start_nvml_sampler(sys.executable)
            if proc is None:
                raise RuntimeError(f"the sampler did not start: {err}")
            node_sampler._GPU.update(kind="nvml", proc=proc)
            for _ in range(samples):
                if node_sampler._nvml_answer().get("error"):
                    raise RuntimeError("the sampler stopped answering")
            proc.stdin.close()
            proc.wait(10)
            node_sampler._GPU.clear()
            time.sleep(0.3)
        return cpu_of(acct.records(), proc.pid)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sampler_mode(r1: int, r2: int, reps: int, real: bool) -> dict:
    per_sample_ms, runs = [], []
    for rep in range(reps):
        got = {}
        for count in (r1, r2) if rep % 2 == 0 else (r2, r1):
            got[count] = sampler_cpu_s(count, real)
        per_sample_ms.append((got[r2] - got[r1]) / (r2 - r1) * 1000)
        runs.append({str(k): v for k, v in got.items()})
    return {
        "samples": [r1, r2],
        "nvml": "real" if real else "stand-in",
        "per_sample_ms": summary(per_sample_ms),
        "runs": runs,
    }


def summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "mean": statistics.mean(xs),
        "min": xs[0],
        "max": xs[-1],
        "p90": xs[min(len(xs) - 1, int(0.9 * len(xs)))],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--refreshes", type=int, default=30, help="kept-session refreshes per round (wall mode)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (wall mode)")
    ap.add_argument("--cpu-refreshes", type=int, nargs=2, default=[20, 220], metavar=("R1", "R2"))
    ap.add_argument("--cpu-reps", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=["wall", "cpu"], choices=["wall", "cpu", "sampler"])
    ap.add_argument("--real-nvml", action="store_true", help="sampler mode: this machine's nvidia-ml-py and GPUs")
    ap.add_argument("--out", type=Path, default=None, help="measurement file to append this run to")
    results_log.add_conditions_argument(ap)
    args = ap.parse_args(argv)
    if args.modes == ["sampler"]:
        out = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cores": os.cpu_count(),
            "load_before": os.getloadavg(),
            "command": "python -m perf.top_refresh " + " ".join(argv or sys.argv[1:]),
            "sampler": sampler_mode(*args.cpu_refreshes, args.cpu_reps, args.real_nvml),
            "load_after": os.getloadavg(),
        }
        print(json.dumps(out["sampler"]["per_sample_ms"], indent=1))
        if args.out:
            results_log.append_run(
                args.out,
                out,
                measurement=SAMPLER_MEASUREMENT,
                script="perf/top_refresh.py",
                command=results_log.current_command("perf.top_refresh", argv),
                conditions=args.conditions,
            )
        return 0
    with SimCluster(args.nodes) as sim:
        cluster = ClusterConfig.model_validate(sim.cluster_config(workdir=REPO))
        replay = replay_dir(sim)
        out = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "nodes": args.nodes,
            "cores": os.cpu_count(),
            "load_before": os.getloadavg(),
            "command": "python -m perf.top_refresh " + " ".join(argv or sys.argv[1:]),
        }
        try:
            if "wall" in args.modes:
                out["wall"] = wall_mode(cluster, replay, args.refreshes, args.rounds)
                print(json.dumps(out["wall"], indent=1))
            if "cpu" in args.modes:
                out["cpu"] = cpu_mode(cluster, replay, *args.cpu_refreshes, args.cpu_reps)
                print(json.dumps(out["cpu"]["per_refresh_ms"], indent=1))
        finally:
            ssh.close_masters(cluster.ssh, cluster.nodes)
        out["load_after"] = os.getloadavg()
    if args.out:
        results_log.append_run(
            args.out,
            out,
            measurement=REFRESH_MEASUREMENT,
            script="perf/top_refresh.py",
            command=results_log.current_command("perf.top_refresh", argv),
            conditions=args.conditions,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

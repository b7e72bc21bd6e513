"""corral launch / ps / stop against ``pdsh -f 32`` doing the same work, at 4, 8, 16 and 32 nodes.

One simulated cluster of the largest size (network namespaces, one sshd per node, the host's
home shared as on the test machines); node subsets for the smaller sizes. For each repetition and
size (sizes shuffled, the order of the two tools alternating), on the same nodes, after one untimed launch
by each tool on every node (the first launch on fresh nodes is slower, whichever tool makes it):

* launch: command start -> every rank past ``init_process_group`` (``tests/workers/scale_rank.py``,
  1 rank per node). corral: ``corral launch`` (preflight, plan, start). pdsh: ``pdsh -f 32 -w NODES
  tmux new-session -d -s NAME 'cd REPO && . VENV/bin/activate && torchrun ...'``, the same line
  perf/launch_latency.py's baseline runs;
  Where the launch's time went, from what each rank recorded: when the last node's torchrun
  started, the last rank started, the last rank had imported torch (``phases``, seconds from the
  command's start; their paired differences show how much of corral's own latency before torchrun
  reaches the ranks' readiness), and the CPU seconds the job's processes (torchrun, ranks) had used by
  then (``cpu_at_ready_s``, from /proc: does either tool's job do more work to start?);
* ps: ``corral ps --json`` vs ``pdsh -f 32 -w NODES tmux has-session -t NAME`` (the bare probe);
* stop: ``corral stop`` (SIGTERM to the job's process groups, SIGKILL after 10 s, returns once
  they are gone) vs ``pdsh -f 32 -w NODES tmux kill-session -t NAME`` (returns once tmux has been
  told; the pane's processes get SIGHUP); ``gone_s``: from the stop command's start until no
  process of the run is left on any node (the same end state for both).

The launcher's own cost of ``ps`` is sampled from /proc every 20 ms: peak RSS of the corral
process, its open file descriptors, and its child processes (ssh clients). Results: paired ratios
per size, and the growth per added node of (corral - pdsh) as an OLS slope over sizes with a 95%
bootstrap interval over repetitions. Run as root from the repository root:

    python -m perf.scale_bench --sizes 4 8 16 32 --reps 2 --json docs/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RANK = "tests/workers/scale_rank.py"
KEYS = ("launch_s", "ps_s", "ps_again_s", "stop_s", "gone_s")
"""The paired figures of a row: each one corral's and pdsh's, in seconds."""
FANOUT = 32
CONNECT_TIMEOUT_S = 20


PHASES = ("torchrun_s", "rank_s", "imported_s")
"""What each ready file holds after the ready time (``scale_rank.py``): torchrun's start, the rank's start,
torch imported."""


def ready_times(out: Path, world: int, timeout: float = 600) -> list[list[float]]:
    """Every rank's ready file, once all ``world`` are there: [ready, torchrun started, rank started,
    torch imported] as wall-clock times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(out.glob("ready-*"))
        if len(files) == world:
            return [[float(x) for x in p.read_text().split()] for p in files]
        time.sleep(0.05)
    raise RuntimeError(f"only {len(list(out.glob('ready-*')))} of {world} ranks ready within {timeout}s in {out}")


def ready_time(out: Path, world: int, timeout: float = 600) -> float:
    return max(t[0] for t in ready_times(out, world, timeout))


def phases(out: Path, world: int, t0: float, cpu0: float) -> dict[str, float]:
    """When the last node reached each phase of a launch that started at ``t0`` (seconds after it; ``ready_s``
    is the launch's time), and the machine's busy CPU seconds from then until every rank was seen ready
    (``machine_cpu_s``; ``cpu0``: ``machine_cpu()`` at ``t0``)."""
    times = ready_times(out, world)
    cpu = machine_cpu() - cpu0
    return {
        **{key: max(t[i + 1] for t in times) - t0 for i, key in enumerate(PHASES)},
        "ready_s": max(t[0] for t in times) - t0,
        "machine_cpu_s": cpu,
    }


def processes_with(needle: bytes) -> list[int]:
    """PIDs whose environment or command line holds ``needle`` (the nodes share one PID namespace)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        for what in ("environ", "cmdline"):
            try:
                if needle in Path(f"/proc/{entry}/{what}").read_bytes():
                    found.append(int(entry))
                    break
            except OSError:
                break
    return found


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far: utime + stime from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> float:
    """CPU seconds every core of this machine has spent busy so far (``/proc/stat``: all but idle and iowait).
    The nodes share this machine's cores, so the difference over a launch is everything the launch cost them:
    the job's processes, and what starting them took (ssh clients and sshd, agents, shells, tmux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def job_cpu(needle: bytes) -> dict[str, float]:
    """CPU seconds the live processes of a job have used, by command name (``pt_elastic``: torchrun's agent;
    ``python``: the ranks), read once every rank is ready: what the start cost the two shared cores."""
    used: dict[str, float] = {}
    for pid in processes_with(needle):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cpu = cpu_seconds(pid)
        except OSError:
            continue
        used[comm] = used.get(comm, 0.0) + cpu
    return used


def wait_gone(needle: bytes, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while processes_with(needle) and time.monotonic() < deadline:
        time.sleep(0.5)


class Sampler(threading.Thread):
    """Peak RSS, fds and child processes of one process, sampled from /proc."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.rss_kib, self.fds, self.children = pid, 0, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.rss_kib = max(self.rss_kib, int(line.split()[1]))
                self.fds = max(self.fds, len(os.listdir(f"/proc/{self.pid}/fd")))
                kids = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
                self.children = max(self.children, len(kids))
            except OSError:
                return
            time.sleep(0.02)


def timed(argv: list[str], env: dict | None = None, sample: bool = False) -> tuple[float, int, dict]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = Sampler(proc.pid) if sample else None
    if sampler:
        sampler.start()
    _, err = proc.communicate()
    took = time.perf_counter() - t0
    cost = {}
    if sampler:
        sampler.stop.set()
        sampler.join()
        cost = {"peak_rss_mib": sampler.rss_kib / 1024, "max_fds": sampler.fds, "max_children": sampler.children}
    if proc.returncode != 0:
        print(f"  {shlex.join(argv[:6])}... exited {proc.returncode}: {err.decode()[-400:]}", flush=True)
    return took, proc.returncode, cost


def checkout_cli(root: Path) -> list[str]:
    """``corral -q`` from another checkout (e.g. a ``git worktree`` of an earlier commit), run with this
    interpreter: what ``--also-root`` adds to a comparison."""
    boot = f"import sys; sys.path.insert(0, {str(root)!r}); from launcher.cli import main; sys.exit(main())"
    return [sys.executable, "-c", boot, "-q"]


class Bench:
    def __init__(self, sim, work: Path, venv: str) -> None:
        self.sim, self.work, self.venv = sim, work, venv
        self.port = 29700
        self.cli = [sys.executable, "-m", "launcher.cli", "-q"]

    def cluster_file(self, n: int, tag: str) -> Path:
        import yaml

        cfg = self.sim.cluster_config(workdir=REPO, venv=self.venv)
        cfg["nodes"] = cfg["nodes"][:n]
        cfg["ssh"]["fanout"] = FANOUT
        # a slow accept on a loaded 2-core machine is not what is measured here: longer than the
        # test clusters' 5 s (the unanswered connects of the first 32-node run were the simulated
        # network's neighbour-table overflow, fixed since: docs/SIMCLUSTER.md)
        cfg["ssh"]["connect_timeout"] = CONNECT_TIMEOUT_S
        cfg["storage"]["runs"] = str(self.work / f"runs-{tag}")  # one record per ps: ps reads every record
        path = self.work / f"{tag}-cluster.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def rank_job(self, n: int, prefix: str, job_extra: dict | None = None) -> tuple[str, Path, Path, Path]:
        """A new job of the rank script, 1 process on each of ``n`` nodes: (job name, cluster file, job file,
        the ranks' output dir)."""
        import yaml

        name = f"{prefix}{n}-{uuid.uuid4().hex[:6]}"
        out = self.work / name
        out.mkdir()
        cfile = self.cluster_file(n, name)
        jfile = self.work / f"{name}-job.yaml"
        job = {"name": name, "script": RANK, "args": [str(out), "900"], "nproc_per_node": 1, **(job_extra or {})}
        jfile.write_text(yaml.safe_dump(job))
        return name, cfile, jfile, out

    def corral_launch(
        self, n: int, job_extra: dict | None = None
    ) -> tuple[str, Path, Path, dict[str, float], float, dict]:
        """``corral launch`` of the rank script on ``n`` nodes: (job name, cluster file, the ranks' output dir,
        the launch's ``phases`` (``ready_s``: the launch time, to every rank ready), the command's own time,
        the command's cost)."""
        name, cfile, jfile, out = self.rank_job(n, "c", job_extra)
        t0, cpu0 = time.time(), machine_cpu()
        took, code, launch_cost = timed([*self.cli, "launch", str(jfile), "-c", str(cfile)], sample=True)
        if code != 0:
            raise RuntimeError(f"corral launch failed on {n} nodes")
        return name, cfile, out, phases(out, n, t0, cpu0), took, launch_cost

    def corral(self, n: int) -> dict:
        name, cfile, out, launch_phases, _, launch_cost = self.corral_launch(n)
        launch = launch_phases["ready_s"]
        cpu = job_cpu(name.encode())
        ps, _, ps_cost = timed([*self.cli, "ps", "--json", "-c", str(cfile)], sample=True)
        # again, as under `watch`: over the connections the first one left open (ControlPersist)
        ps_again, _, _ = timed([*self.cli, "ps", "--json", "-c", str(cfile)])
        t0 = time.perf_counter()
        stop, _, stop_cost = timed([*self.cli, "stop", name, "-c", str(cfile)], sample=True)
        wait_gone(name.encode())
        gone = time.perf_counter() - t0
        (out / "release").write_text("")
        row = dict(zip(KEYS, (launch, ps, ps_again, stop, gone)))
        return {
            **row,
            "phases": launch_phases,
            "cpu_at_ready_s": cpu,
            "launch_cost": launch_cost,
            "ps_cost": ps_cost,
            "stop_cost": stop_cost,
        }

    def pdsh_over(self, n: int) -> tuple[list[str], dict[str, str]]:
        """``pdsh -f 32 -w`` the first ``n`` nodes, and the environment that has it log in with ssh and the
        cluster's ssh config."""
        hosts = ",".join(node.hostname for node in self.sim.nodes[:n])
        env = dict(os.environ, PDSH_RCMD_TYPE="ssh", PDSH_SSH_ARGS_APPEND=f"-F {self.sim.ssh_config_path}")
        return ["pdsh", "-f", str(FANOUT), "-w", hosts], env

    def stop_and_release(self, name: str, cfile: Path, out: Path) -> None:
        """``corral stop`` a job of ``corral_launch``, untimed, wait until nothing of it is left, release its ranks."""
        timed([*self.cli, "stop", name, "-c", str(cfile)])
        wait_gone(name.encode())
        (out / "release").write_text("")

    def pdsh_job(self, n: int) -> tuple[str, Path, list[str], dict[str, str], list[str]]:
        """A new job of the rank script for pdsh on the first ``n`` nodes, on a fresh rendezvous port: (job
        name, the ranks' output dir, pdsh's argv and environment, the argv that starts every node's tmux
        session: cd, activate the venv, plain torchrun)."""
        name = f"p{n}-{uuid.uuid4().hex[:6]}"
        out = self.work / name
        out.mkdir()
        self.port += 1
        pdsh, env = self.pdsh_over(n)
        torchrun = pdsh_torchrun(self, n, name, out)
        inner = f"cd {shlex.quote(str(REPO))} && . {shlex.quote(self.venv)}/bin/activate && {shlex.join(torchrun)}"
        return name, out, pdsh, env, [*pdsh, "tmux", "new-session", "-d", "-s", name, shlex.quote(inner)]

    def pdsh(self, n: int) -> dict:
        name, out, pdsh, env, start = self.pdsh_job(n)
        t0, cpu0 = time.time(), machine_cpu()
        command, code, _ = timed(start, env=env)
        if code != 0:
            raise RuntimeError("pdsh launch failed")
        launch_phases = phases(out, n, t0, cpu0)
        launch = launch_phases["ready_s"]
        cpu = job_cpu(name.encode())
        ps, _, ps_cost = timed([*pdsh, "tmux", "has-session", "-t", name], env=env, sample=True)
        ps_again, _, _ = timed([*pdsh, "tmux", "has-session", "-t", name], env=env)
        t0 = time.perf_counter()
        stop, _, _ = timed([*pdsh, "tmux", "kill-session", "-t", name], env=env)
        wait_gone(name.encode())
        gone = time.perf_counter() - t0
        (out / "release").write_text("")
        row = dict(zip(KEYS, (launch, ps, ps_again, stop, gone)))
        return {**row, "phases": launch_phases, "cpu_at_ready_s": cpu, "ps_cost": ps_cost, "command_s": command}


def pdsh_torchrun(bench: Bench, n: int, name: str, out: Path) -> list[str]:
    """The torchrun line pdsh starts in each node's tmux session: the rank script, 1 process per node, on the
    bench's current rendezvous port."""
    from perf.launch_latency import plain_torchrun

    return plain_torchrun(n, f"{bench.sim.nodes[0].addr}:{bench.port}", name, [RANK, str(out), "900"])


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def growth(rows: list[dict], key: str, *, resamples: int = 4000, seed: int = 0) -> dict:
    """OLS slope of the paired difference (corral - pdsh) against node count, with a 95% bootstrap
    interval (repetitions resampled within each size)."""
    by_size: dict[int, list[float]] = {}
    for r in rows:
        by_size.setdefault(r["nodes"], []).append(r["corral"][key] - r["pdsh"][key])
    sizes = sorted(by_size)
    point = slope(sizes, [statistics.median(by_size[s]) for s in sizes])
    rng = random.Random(seed)
    boots = sorted(
        slope(sizes, [statistics.median(rng.choices(by_size[s], k=len(by_size[s]))) for s in sizes])
        for _ in range(resamples)
    )
    return {"per_node_s": point, "ci95_s": [boots[int(0.025 * resamples)], boots[int(0.975 * resamples) - 1]]}


def paired(corral: list[float], pdsh: list[float]) -> dict[str, float]:
    """Each tool's median and the median of the pairs' differences (corral - pdsh)."""
    return {
        "corral_median": statistics.median(corral),
        "pdsh_median": statistics.median(pdsh),
        "paired_difference_median": statistics.median(a - b for a, b in zip(corral, pdsh)),
    }


def summarize(rows: list[dict]) -> dict:
    out: dict = {"sizes": {}}
    for n in sorted({r["nodes"] for r in rows}):
        mine = [r for r in rows if r["nodes"] == n]
        entry = {}
        for key in KEYS:
            ratios = [r["corral"][key] / r["pdsh"][key] for r in mine]
            entry[key] = {
                "corral_median": statistics.median(r["corral"][key] for r in mine),
                "pdsh_median": statistics.median(r["pdsh"][key] for r in mine),
                "paired_ratio_median": statistics.median(ratios),
                "paired_ratios": ratios,
            }
        entry["launch_phases"] = {
            key: paired([r["corral"]["phases"][key] for r in mine], [r["pdsh"]["phases"][key] for r in mine])
            for key in (*PHASES, "ready_s")
        }
        cpu = {side: [sum(r[side]["cpu_at_ready_s"].values()) for r in mine] for side in ("corral", "pdsh")}
        machine = {side: [r[side]["phases"]["machine_cpu_s"] for r in mine] for side in ("corral", "pdsh")}
        # the machine's busy CPU beyond the job's live processes: what starting the job cost (ssh, sshd, agents,
        # shells, tmux, the launcher itself), the one part of the launch that differs in kind between the tools
        rest = {side: [m - c for m, c in zip(machine[side], cpu[side])] for side in ("corral", "pdsh")}
        for key, values in (
            ("job_cpu_at_ready_s", cpu),
            ("machine_cpu_at_ready_s", machine),
            ("start_cpu_at_ready_s", rest),
        ):
            entry[key] = paired(values["corral"], values["pdsh"])
        entry["corral_ps_cost"] = [r["corral"]["ps_cost"] for r in mine]
        entry["corral_launch_cost"] = [r["corral"]["launch_cost"] for r in mine]
        out["sizes"][n] = entry
    if len(out["sizes"]) > 1:
        out["growth"] = {key: growth(rows, key) for key in KEYS}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="measure from the first launch on the fresh nodes (default: one untimed launch by each tool first)",
    )
    parser.add_argument("--json", type=Path, default=None, help="the measurement file to append this run to")
    from perf.results_log import add_conditions_argument

    add_conditions_argument(parser)
    args = parser.parse_args(argv)
    from tests.infra.simcluster import SimCluster

    rng = random.Random(args.seed)
    rows: list[dict] = []
    failures: list[dict] = []
    with SimCluster(max(args.sizes)) as sim:
        work = Path(sim.run_dir) / "scale"
        work.mkdir()
        bench = Bench(sim, work, sys.prefix)
        warmup = []
        if args.warmup:
            # The first launch on freshly made nodes is slower whichever tool makes it (runs /13 and /14: the
            # first pair's torchruns used ~5 CPU-s more, and corral, first in that pair, lost 5-8 %): one of
            # each, on every node, untimed for the comparison.
            for kind in ("pdsh", "corral"):
                got = bench.corral(max(args.sizes)) if kind == "corral" else bench.pdsh(max(args.sizes))
                warmup.append({"kind": kind, "nodes": max(args.sizes), **got})
                print(f"warm-up {kind}: launch {got['launch_s']:.1f} s", flush=True)
        for rep in range(args.reps):
            sizes = list(args.sizes)
            rng.shuffle(sizes)
            for i, n in enumerate(sizes):
                row = {"rep": rep, "nodes": n, "load1_before": os.getloadavg()[0]}
                order = ("corral", "pdsh") if (rep + i) % 2 == 0 else ("pdsh", "corral")
                try:
                    for kind in order:
                        row[kind] = bench.corral(n) if kind == "corral" else bench.pdsh(n)
                except RuntimeError as exc:  # one failed pair is reported, the run goes on
                    print(f"rep {rep} {n} nodes: {exc}", flush=True)
                    failures.append({"rep": rep, "nodes": n, "error": str(exc)})
                    continue
                rows.append(row)
                c, p = row["corral"], row["pdsh"]
                print(
                    f"rep {rep} {n:2d} nodes: launch {c['launch_s']:.1f}/{p['launch_s']:.1f} s, "
                    f"ps {c['ps_s']:.2f}/{p['ps_s']:.2f} s, again {c['ps_again_s']:.2f}/{p['ps_again_s']:.2f} s, stop {c['stop_s']:.1f}/{p['stop_s']:.1f} s, "
                    f"stop until nothing left {c['gone_s']:.1f}/{p['gone_s']:.1f} s "
                    f"(corral/pdsh), ps cost {c['ps_cost']}, last torchrun started "
                    f"{c['phases']['torchrun_s'] - p['phases']['torchrun_s']:+.2f} s, last rank started "
                    f"{c['phases']['rank_s'] - p['phases']['rank_s']:+.2f} s, machine CPU to ready "
                    f"{c['phases']['machine_cpu_s'] - p['phases']['machine_cpu_s']:+.2f} s, of it the job's "
                    f"{sum(c['cpu_at_ready_s'].values()) - sum(p['cpu_at_ready_s'].values()):+.2f} s (corral - pdsh)",
                    flush=True,
                )
    if args.json:
        write(args.json, rows, failures, args.conditions, warmup)
    else:
        print(json.dumps(summarize(rows), indent=2))
    return 0


def write(
    path: Path, rows: list[dict], failures: list[dict], conditions: str = "", warmup: list[dict] | None = None
) -> None:
    """One more dated run in the measurement file (perf/results_log.py)."""
    from perf.results_log import append_run, current_command

    result = {
        "failures": failures,
        "machine": "2 cores, 24 GiB, no GPU; simulated nodes (network namespaces, one sshd each, the host's home "
        "shared, Debian's stock shell start-up files)",
        "fanout": FANOUT,
        "connect_timeout_s": CONNECT_TIMEOUT_S,
        "warmup": warmup or [],
        "rows": rows,
        "summary": summarize(rows),
    }
    append_run(
        path,
        result,
        measurement="corral launch / ps / stop against pdsh -f 32 over ssh doing the same work, 4-32 simulated "
        "nodes, paired; the launcher's memory, fds and ssh clients",
        script="perf/scale_bench.py",
        command=current_command("perf.scale_bench"),
        conditions=conditions,
    )


if __name__ == "__main__":
    sys.exit(main())

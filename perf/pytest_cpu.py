"""A pytest plugin: the CPU each test cost, its own processes and everything they started, in CPU-seconds.

    make test PYTEST_ARGS="-p perf.pytest_cpu"     # then: python -m perf.pytest_cpu

Each xdist worker moves itself into a cpuacct cgroup of its own (cgroup v1, root needed), so the
processes a test starts (ranks under tmux on simulated nodes, sshds, Slurm steps) are counted with it
wherever they daemonize to. Containers run in dockerd's cgroups and are not counted. Per test it appends
``nodeid, cpu_s, wall_s, end`` (epoch seconds) to ``/var/tmp/corral-test-cpu-<worker>.tsv``; run as a
module it sums them per test module and says when each worker finished its last test (a suite whose
workers end far apart has a long test too late in its order). Timings of a whole suite, not timed asserts: docs/results/simcluster.md.
"""

from __future__ import annotations

import collections
import glob
import os
import time
from pathlib import Path

import pytest

CPUACCT = Path("/sys/fs/cgroup/cpuacct")
OUT = "/var/tmp/corral-test-cpu-{worker}.tsv"
_group: Path | None = None


def _usage_s() -> float:
    assert _group is not None
    return int((_group / "cpuacct.usage").read_text()) / 1e9


def pytest_configure(config) -> None:
    global _group
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if not CPUACCT.is_dir():
        return
    _group = CPUACCT / f"corral-test-cpu-{worker}"
    _group.mkdir(exist_ok=True)
    (_group / "cgroup.procs").write_text(str(os.getpid()))


def pytest_unconfigure(config) -> None:
    if _group is not None:
        (CPUACCT / "cgroup.procs").write_text(str(os.getpid()))
        # a process the tests started may still be ending in it (a daemon's last cleanup): wait a little
        deadline = time.monotonic() + 10
        while True:
            try:
                _group.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # still in use: the next run's mkdir takes it over, its end removes it
                time.sleep(0.2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _group is None:
        yield
        return
    cpu0, wall0 = _usage_s(), time.monotonic()
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(OUT.format(worker=worker), "a", encoding="utf-8") as f:
        f.write(f"{item.nodeid}\t{_usage_s() - cpu0:.2f}\t{time.monotonic() - wall0:.2f}\t{time.time():.1f}\n")


def main() -> None:
    cpu: collections.Counter[str] = collections.Counter()
    wall: collections.Counter[str] = collections.Counter()
    starts: list[float] = []
    last: dict[str, tuple[float, str]] = {}  # worker -> (when its last test ended, that test)
    for path in sorted(glob.glob(OUT.format(worker="*"))):
        worker = Path(path).stem.rsplit("-", 1)[-1]
        for line in Path(path).read_text().splitlines():
            nodeid, cpu_s, wall_s, *end = line.split("\t")
            cpu[nodeid.split("::")[0]] += float(cpu_s)
            wall[nodeid.split("::")[0]] += float(wall_s)
            if end:
                stop = float(end[0])
                starts.append(stop - float(wall_s))
                if stop > last.get(worker, (0.0, ""))[0]:
                    last[worker] = (stop, nodeid)
    print(f"{'CPU s':>8} {'wall s':>8}  module  (all: {sum(cpu.values()):.0f} CPU-s)")
    for module, seconds in cpu.most_common(20):
        print(f"{seconds:8.1f} {wall[module]:8.1f}  {module}")
    if last:
        print("worker  last test ended (s after the first began)  last test")
        for worker, (stop, name) in sorted(last.items()):
            print(f"{worker:>6}  {stop - min(starts):8.0f}  {name}")


if __name__ == "__main__":
    main()

"""perf/scale_bench.py reads where a launch's time went from the ranks' ready files (tests/workers/scale_rank.py)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from perf import scale_bench as sb


def test_phases_are_the_last_node_to_reach_each_one(tmp_path):
    t0 = 1000.0
    # ready, torchrun started, rank started, torch imported
    (tmp_path / "ready-0").write_text("1007.5 1000.4 1004.1 1006.9")
    (tmp_path / "ready-1").write_text("1007.2 1000.6 1003.9 1007.0")
    assert sb.ready_time(tmp_path, 2) == 1007.5
    got = sb.phases(tmp_path, 2, t0, sb.machine_cpu())
    cpu = got.pop("machine_cpu_s")
    assert got == pytest.approx({"torchrun_s": 0.6, "rank_s": 4.1, "imported_s": 7.0, "ready_s": 7.5})
    assert 0 <= cpu < 5


def test_summary_gives_each_phase_its_paired_difference():
    def side(torchrun, ready):
        times = {"launch_s": ready, "ps_s": 0.2, "ps_again_s": 0.2, "stop_s": 1.0, "gone_s": 1.5}
        phases = {"torchrun_s": torchrun, "rank_s": ready - 2, "imported_s": ready - 0.01, "ready_s": ready}
        phases["machine_cpu_s"] = 2 * ready + 10 * torchrun
        cpu = {"pt_elastic": 1.0, "python": ready / 10}
        return {**times, "phases": phases, "cpu_at_ready_s": cpu, "ps_cost": {}, "launch_cost": {}}

    rows = [
        {"nodes": 4, "corral": side(0.4, 7.2), "pdsh": side(0.1, 7.0)},
        {"nodes": 4, "corral": side(0.5, 6.9), "pdsh": side(0.1, 7.1)},
    ]
    size = sb.summarize(rows)["sizes"][4]
    phases = size["launch_phases"]
    assert phases["torchrun_s"]["paired_difference_median"] == pytest.approx(0.35)
    assert phases["ready_s"]["paired_difference_median"] == pytest.approx(0.0)
    assert size["job_cpu_at_ready_s"]["paired_difference_median"] == pytest.approx(0.0)
    # machine: 18.4 - 15.0 and 18.8 - 15.2; of which the job's: 0.02 and -0.02
    assert size["machine_cpu_at_ready_s"]["paired_difference_median"] == pytest.approx(3.5)
    assert size["start_cpu_at_ready_s"]["paired_difference_median"] == pytest.approx(3.5)
    assert size["start_cpu_at_ready_s"]["corral_median"] == pytest.approx(18.6 - 1.705)
    assert size["job_cpu_at_ready_s"]["corral_median"] == pytest.approx(1.705)


def test_job_cpu_counts_the_processes_that_carry_the_jobs_name():
    needle = f"cpu-{uuid.uuid4().hex[:8]}"
    busy = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", busy, needle])
    try:
        deadline = time.monotonic() + 20
        used = {}
        while time.monotonic() < deadline:
            used = sb.job_cpu(needle.encode())
            if sum(used.values()) >= 0.2:
                break
            time.sleep(0.05)
        assert sum(used.values()) >= 0.2, used
    finally:
        proc.kill()
        proc.wait()


def test_machine_cpu_counts_a_busy_process():
    before = sb.machine_cpu()
    subprocess.run(
        [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"],
        check=True,
    )
    assert sb.machine_cpu() - before >= 0.3

"""Slurm states read as corral's: pure functions over recorded `scontrol show job -o` and `sinfo` output
(tests/fixtures/slurm/, recorded from Slurm 22.05 on the test cluster)."""

from __future__ import annotations

from pathlib import Path

from launcher.backends.slurm.backend import node_statuses
from launcher.backends.slurm.state import parse_partition, slurm_job
from launcher.runs.state import JobStatus, NodeStatus
from launcher.sweep.scheduler import NodeRun, judge_run
from launcher.sweep.slots import job_wide_run

FIX = Path(__file__).parent / "fixtures" / "slurm"


def recorded(name: str):
    return slurm_job((FIX / f"show_job_{name}.txt").read_text())


def test_recorded_jobs_parse():
    p, r, c, f = recorded("pending"), recorded("running"), recorded("cancelled"), recorded("failed")
    assert (p.state, p.reason, p.corral_state, p.nodelist) == ("PENDING", "PartitionDown", "pending", None)
    assert (r.corral_state, r.nodelist, r.reason) == ("running", "sbf34b-n[1-2]", None)
    assert (c.state, c.corral_state, c.exit_code, c.signal) == ("CANCELLED", "ended", 0, 15)
    assert (f.state, f.reason, f.exit_code) == ("FAILED", "NonZeroExitCode", 3)


def test_recorded_partitions_parse():
    down = parse_partition((FIX / "sinfo_down.txt").read_text(), "debug")
    up = parse_partition((FIX / "sinfo_up.txt").read_text(), "debug")
    assert (down.up, down.nodes) == (False, 2) and (up.up, up.nodes) == (True, 2)
    assert parse_partition("", "nosuch") is None


def test_node_states_pending_running_exited_failed():
    nodes = ["n1", "n2"]
    pend = node_statuses(recorded("pending"), "1", [], {}, 0, 10)
    assert [(n.state, n.detail) for n in pend] == [("pending", "Slurm job 1: PENDING (PartitionDown)")]
    run = node_statuses(recorded("running"), "1", nodes, {"n1": (0, 0, 5.0)}, 0, 10)
    assert [(n.node, n.state, n.exit_code) for n in run] == [("n1", "exited", 0), ("n2", "running", None)]
    # an exit status from an earlier attempt (restart count 1 vs the job's 0) does not count
    stale = node_statuses(recorded("running"), "1", nodes, {"n1": (0, 1, 5.0)}, 0, 10)
    assert [n.state for n in stale] == ["running", "running"]
    cancelled = node_statuses(recorded("cancelled"), "1", nodes, {"n1": (143, 0, 5.0)}, 0, 10)
    assert [(n.state, n.exit_code) for n in cancelled] == [("exited", 143), ("failed", None)]
    assert "CANCELLED" in cancelled[1].detail
    forgotten = node_statuses(None, "9", [], {"n1": (0, 0, 5.0), "n2": (0, 0, 6.0)}, 0, 10)
    assert [(n.state, n.exit_code) for n in forgotten] == [("exited", 0), ("exited", 0)]
    assert node_statuses(None, "9", [], {}, 0, 10)[0].state == "missing"


def test_pending_is_not_done():
    st = JobStatus("j", "running", [NodeStatus("-", "slurm", "pending")])
    assert not st.done and not st.ok


def test_sweep_slots_share_the_jobs_state():
    def status(*states):
        return JobStatus("t", "running", [NodeStatus(f"n{i}", "slurm", s, c) for i, (s, c) in enumerate(states)])

    assert job_wide_run(status(("pending", None))) == {"*": NodeRun("running")}
    assert job_wide_run(status(("exited", 0), ("exited", 0))) == {"*": NodeRun("exited", 0)}
    assert job_wide_run(status(("exited", 0), ("exited", 3))) == {"*": NodeRun("exited", 3)}
    assert job_wide_run(status(("exited", 0), ("failed", None))) == {"*": NodeRun("exited", 1)}
    assert job_wide_run(status(("missing", None))) == {"*": NodeRun("missing")}
    assert judge_run(["slot-1", "slot-2"], {"*": NodeRun("exited", 0)}).result == "done"
    assert judge_run(["slot-1"], {"*": NodeRun("running")}).result is None


def test_a_requeue_requested_by_sigusr1_keeps_the_job_pending():
    """The batch script marks the attempt it will requeue: its nodes ending is not the job's end."""
    running = recorded("running")
    exits = {"n1": (0, 0, 5.0), "n2": (0, 0, 5.0)}
    marked = node_statuses(running, "1", ["n1", "n2"], exits, 0, 10, requeue_mark=0)
    assert [n.state for n in marked] == ["pending"] and "requeue requested" in marked[0].detail
    assert [n.state for n in node_statuses(running, "1", ["n1", "n2"], exits, 0, 10, requeue_mark=None)] == [
        "exited",
        "exited",
    ]

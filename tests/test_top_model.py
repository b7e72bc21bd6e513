"""``corral top``'s pure parts: words for NVML masks and XIDs, rates, step rates, stragglers, the
folding of replayed NVML answers into rows, the nvidia-smi parser, the node sampler's files
(in process) and the layout of a frame at 80 and 200 columns."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from launcher.top import judge, node_sampler
from launcher.top.model import Frame, JobOnNode, JobSpec, NodeRow, TopState, drop_finished, mark_stragglers, parse_smi

FIXTURES = Path(__file__).parent / "fixtures" / "nvml"


# ---------------------------------------------------------------------------- words


def test_clock_reasons_in_words():
    assert judge.clock_reasons_words(0) == []
    assert judge.clock_reasons_words(0x1) == ["idle"]
    assert judge.clock_reasons_words(0x48) == ["hardware slowdown", "hardware thermal slowdown"]
    assert judge.clock_reasons_words(0x4 | 0x1000) == ["software power cap", "reason 0x1000"]
    assert judge.clock_reasons_words("n/a") == []


def test_events_in_words():
    assert judge.event_words({"type": 0x8, "data": 79}) == "XID 79: GPU has fallen off the bus"
    assert judge.event_words({"type": 0x8, "data": 48}) == "XID 48: double-bit ECC error"
    assert judge.event_words({"type": 0x8, "data": 9999}) == "XID 9999"
    assert judge.event_words({"type": 0x2, "data": 0}) == "double-bit ECC error"


# ---------------------------------------------------------------------------- rates


def test_counter_rate_and_reset():
    assert judge.counter_rate(1000, 3000, 2.0) == 1000.0
    assert judge.counter_rate(3000, 1000, 2.0) is None  # counter reset (interface re-created)
    assert judge.counter_rate(None, 1, 1.0) is None and judge.counter_rate(1, 2, 0) is None


def test_net_rate_over_interfaces_in_both_samples():
    before = {"rx": 1300, "tx": 0, "ifaces": {"eth0": [1000, 0], "veth1": [300, 0]}}
    after = {"rx": 1400, "tx": 50, "ifaces": {"eth0": [1400, 50]}}  # a container's veth went away
    assert judge.net_rate(before, after, 2.0, 0) == 200.0 and judge.net_rate(before, after, 2.0, 1) == 25.0
    recreated = {"ifaces": {"eth0": [1600, 50], "veth1": [10, 0]}}  # veth1 re-created: left out
    assert judge.net_rate(before, recreated, 2.0, 0) == 300.0
    assert judge.net_rate({"rx": 10, "tx": 0}, {"rx": 30, "tx": 0}, 2.0, 0) == 10.0  # totals only
    assert judge.net_rate(None, after, 2.0, 0) is None and judge.net_rate(before, after, 0, 0) is None


def test_cpu_busy_percent_from_two_stat_samples():
    before = [100, 0, 100, 700, 100, 0, 0, 0]
    after = [150, 0, 150, 800, 100, 0, 0, 0]  # 100 busy, 100 idle jiffies
    assert judge.cpu_busy_percent(before, after) == pytest.approx(50.0)
    assert judge.cpu_busy_percent(None, after) is None and judge.cpu_busy_percent(after, after) is None


def records(rate: float, n: int, t0: float = 1000.0, **extra) -> list[dict]:
    return [{"t": t0 + i / rate, "step": i, **extra} for i in range(n)]


def test_step_rate_over_the_window():
    assert judge.step_rate(records(5.0, 20)) == pytest.approx(5.0)
    slow_then_fast = records(1.0, 60) + records(
        10.0,
        50,
        t0=1060.0,
    )
    for i, r in enumerate(slow_then_fast[60:]):
        r["step"] = 60 + i
    assert judge.step_rate(slow_then_fast, window_s=4.0) == pytest.approx(10.0)  # only the recent pace counts
    assert judge.step_rate(records(5.0, 1)) is None and judge.step_rate([{"t": 1, "loss": 2}]) is None


def test_last_metric_words():
    assert judge.last_metric([{"t": 1, "step": 3, "loss": 0.312345, "lr": 0.001}]) == "loss=0.3123 lr=0.001"
    assert judge.last_metric([]) is None and judge.last_metric([{"t": 1, "step": 2}]) is None


def test_straggler_by_step_rate_then_by_utilisation():
    assert judge.straggler({"a": 5.0, "b": 5.1, "c": 2.4})[0] == "c"
    assert judge.straggler({"a": 5.0, "b": 4.8, "c": 4.7}) is None  # within 20% of the peers
    assert judge.straggler({"a": 5.0, "b": None}) is None
    assert judge.straggler({"a": None, "b": None}, {"a": 95.0, "b": 40.0})[0] == "b"
    assert judge.straggler({}, {"a": 95.0, "b": 80.0}) is None


def test_mark_stragglers_only_among_running_nodes():
    def node(name, rate, state="running"):
        return NodeRow(name, name, True, jobs=[JobOnNode("train", name, state, steps_per_s=rate)])

    nodes = [node("n1", 5.0), node("n2", 5.0), node("n3", 2.0), node("n4", 0.1, state="exited")]
    assert mark_stragglers(nodes) == {"train": "n3"}
    assert nodes[2].jobs[0].straggler and not nodes[3].jobs[0].straggler


def test_a_mark_does_not_outlive_the_pace_that_earned_it():
    rows = [
        NodeRow(n, n, True, jobs=[JobOnNode("t", n, "running", steps_per_s=r)])
        for n, r in (("a", 5.0), ("b", 5.0), ("c", 1.0))
    ]
    assert mark_stragglers(rows) == {"t": "c"}
    rows[2].jobs[0].steps_per_s = 5.0
    assert mark_stragglers(rows) == {} and rows[2].jobs[0].straggler is None


def test_jobs_ended_everywhere_are_left_out_when_not_named():
    def node(name, state, reachable=True):
        return NodeRow(name, name, reachable, jobs=[JobOnNode("old", name, state), JobOnNode("new", name, "running")])

    rows = drop_finished([node("a", "exited"), node("b", "missing"), node("c", "unknown", reachable=False)])
    assert [[j.job for j in n.jobs] for n in rows] == [["new"], ["new"], ["new"]]
    rows = drop_finished([node("a", "exited"), node("b", "running")])
    assert [[j.job for j in n.jobs] for n in rows] == [["old", "new"], ["old", "new"]]


# ---------------------------------------------------------------------------- folding replayed samples


def replay_sample(tmp_path, fixture: str, n: int) -> list[dict]:
    """``n`` node samples answered from a recording, as the agent's ``top`` op gives them."""
    node_sampler._GPU.clear()
    out = []
    for _ in range(n):
        out.append(
            node_sampler.op_top(
                {
                    "nvml_replay": str(FIXTURES / fixture),
                    "disks": [{"label": "runs", "path": str(tmp_path / "nope" / "runs")}],
                }
            )
        )
        time.sleep(0.05)  # /proc/stat counts in 10 ms ticks: let some pass between samples
    node_sampler._GPU.clear()
    return out


def test_replayed_failing_node_in_words(tmp_path):
    first, second, third = replay_sample(tmp_path, "top_h100_failing.json", 3)
    state = TopState()
    row1 = state.update("n1", "h1", first)
    assert [g.util_pct for g in row1.gpus] == [0, 0] and row1.rx_bps is None  # one sample: no rates yet
    assert row1.gpus[1].events == ["XID 48: double-bit ECC error"]
    row2 = state.update("n1", "h1", second)
    g0, g1 = row2.gpus
    assert (g0.name, g0.util_pct, g0.temp_c, g0.sm_mhz, g0.power_w, g0.power_limit_w) == (
        "NVIDIA H100 80GB HBM3",
        96,
        41,
        1755,
        690.0,
        700.0,
    )
    assert (
        g0.mem_used == 61203283968
        and g0.mem_total == 85520809984
        and g0.throttle == []
        and row1.gpus[0].throttle == ["idle"]
    )
    assert g1.throttle == ["hardware slowdown"] and g1.temp_c == 88 and g1.util_pct == 41
    assert g1.events == ["XID 48: double-bit ECC error"]  # kept since the screen opened, not repeated
    assert g1.ecc_new == {"corrected": 5, "uncorrected": 2} and g0.ecc_new == {}
    assert row2.rx_bps is not None and row2.cpu_pct is not None and row2.mem_used > 0
    assert row2.disks[0]["free"] > 0  # the nearest existing parent of a missing directory
    row3 = state.update("n1", "h1", third)
    assert row3.gpus[1].events == ["XID 48: double-bit ECC error"]


def test_no_driver_node_has_cpu_figures_and_a_reason(tmp_path):
    (sample,) = replay_sample(tmp_path, "no_driver.json", 1)
    row = TopState().update("n3", "h3", sample)
    assert row.gpus == [] and "no NVIDIA driver" in row.gpu_note and row.ncpu and row.mem_total


def test_unreachable_keeps_job_names_and_restarts_rates(tmp_path):
    state = TopState()
    (s,) = replay_sample(tmp_path, "no_driver.json", 1)
    s["jobs"] = [{"name": "train", "state": "running", "metrics": records(5.0, 5), "log_mtime": s["t"] - 3}]
    row = state.update("n1", "h1", s)
    assert row.jobs[0].steps_per_s == pytest.approx(5.0) and row.jobs[0].since_log_s == pytest.approx(3.0)
    down = state.update("n1", "h1", None, "no answer within 5s")
    assert not down.reachable and down.error == "no answer within 5s" and down.jobs[0].state == "unknown"
    assert state.waiting("n1", "h1", 2.0).waiting_s == 2.0


SMI_CSV = (FIXTURES / "top_nvidia_smi.csv").read_text()
"""``nvidia-smi --query-gpu=<node_sampler.SMI_FIELDS> --format=csv,noheader,nounits`` in its documented form
(MiB, W, MHz, C, a hex reason mask, ``[N/A]``); not a capture from a GPU machine."""


def test_parse_nvidia_smi_csv():
    rows, ecc = parse_smi(SMI_CSV)
    assert [r.index for r in rows] == [0, 1, 2]
    assert (
        rows[0].util_pct == 97 and rows[0].mem_used == 61234 * 1024 * 1024 and rows[0].power_w == pytest.approx(612.34)
    )
    assert rows[1].throttle == ["hardware slowdown", "hardware thermal slowdown"] and ecc[1] == {
        "corrected": 5,
        "uncorrected": 2,
    }
    assert (
        rows[2].util_pct is None
        and rows[2].power_limit_w is None
        and ecc[2] == {"corrected": None, "uncorrected": None}
    )
    assert parse_smi("garbage\n\n") == ([], {})


# ---------------------------------------------------------------------------- node side (in process)


def test_job_state_and_metrics_tail(tmp_path):
    state_dir = tmp_path / "nodes" / "n1"
    state_dir.mkdir(parents=True)
    job = {
        "name": "j",
        "state_dir": str(state_dir),
        "log": str(tmp_path / "n1.log"),
        "metrics": str(state_dir / "metrics.jsonl"),
    }
    assert node_sampler.job_state(job)["state"] == "missing"
    (state_dir / "pid").write_text(f"{os.getpid()} {os.getpgid(0)} {os.getsid(0)}\n")
    lines = [json.dumps({"t": i, "step": i}) for i in range(3000)]
    (state_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"t": 3000, "st')  # a torn last line
    (tmp_path / "n1.log").write_text("x\n")
    got = node_sampler.job_state(job)
    assert got["state"] == "running" and got["log_mtime"] > 0
    assert len(got["metrics"]) == node_sampler.METRICS_RECORDS and got["metrics"][-1] == {"t": 2999, "step": 2999}
    (state_dir / "exit_code").write_text("3\n")
    assert node_sampler.job_state(job)["state"] == "exited" and node_sampler.job_state(job)["exit_code"] == 3


def test_gpu_source_without_driver_is_none(monkeypatch):
    node_sampler._GPU.clear()
    monkeypatch.setattr(node_sampler.os.path, "isdir", lambda p: False)
    monkeypatch.setattr(node_sampler.shutil, "which", lambda name: None)
    try:
        assert node_sampler.gpu_sample({}) == {"source": "none", "why": "no NVIDIA driver on this node"}
    finally:
        node_sampler._GPU.clear()


# ---------------------------------------------------------------------------- layout


def frame_of_every_kind(tmp_path) -> Frame:
    state = TopState()
    samples = replay_sample(tmp_path, "top_h100_failing.json", 2)
    state.update("node-one", "h1", samples[0])
    a = state.update("node-one", "h1", samples[1])
    a.jobs = [
        JobOnNode(
            "train-demo", "node-one", "running", steps_per_s=5.0, step=120, last_metric="loss=0.3123", since_log_s=1.0
        )
    ]
    b = NodeRow(
        "node-two",
        "h2",
        True,
        cpu_pct=50.0,
        load1=1.0,
        ncpu=8,
        mem_used=1 << 30,
        mem_total=8 << 30,
        gpu_source="none",
        gpu_note="no NVIDIA driver on this node",
        jobs=[
            JobOnNode(
                "train-demo", "node-two", "running", steps_per_s=2.0, step=50, last_metric="loss=0.9", since_log_s=2.0
            )
        ],
    )
    c = NodeRow("node-three", "h3", False, error="ssh: connect to host h3 port 22: Connection timed out")
    nodes = [a, b, c]
    return Frame(t=0.0, nodes=nodes, stragglers=mark_stragglers(nodes))


@pytest.mark.parametrize("width", [80, 200])
def test_frame_layout_fits_the_width(tmp_path, width):
    from rich.console import Console

    from launcher.top.render import render

    frame = frame_of_every_kind(tmp_path)
    console = Console(width=width, record=True, color_system=None)
    console.print(render(frame, width, interval=2))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    for word in (
        "node-one",
        "node-two",
        "node-three",
        "unreachable",
        "96%",
        "57.0/80G",
        "690/700W",
        "88C",
        "1410",
        "XID 48",
        "◀ straggler",
        "5.00",
        "2.00",
        "loss=0.3123",
        "straggler: train-demo on node-two",
    ):
        assert word in text, (word, text)
    gpu_lines = [ln for ln in lines if "690/700W" in ln]
    assert len(gpu_lines) == 2  # one line per GPU
    if width == 200:
        assert "hardware slowdown" in text and "XID 48: double-bit ECC error" in text and "NVIDIA H100" in text
    else:
        assert "hw slowdown" in text


# ---------------------------------------------------------------------------- GPU sources as a node runs them

FAKE = Path(__file__).parent / "fixtures" / "fake_nvml"


@pytest.fixture
def stand_in_driver(monkeypatch):
    """nvidia-smi and pynvml stand-ins answering recorded outputs (no NVIDIA library exists here)."""
    monkeypatch.setenv("PATH", f"{FAKE}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(FAKE))
    monkeypatch.setenv("FAKE_SMI_OUTPUT", str(FIXTURES / "top_nvidia_smi.csv"))
    node_sampler._GPU.clear()
    yield monkeypatch
    proc = node_sampler._GPU.get("proc")
    if proc is not None:
        node_sampler._end(proc)
    node_sampler._GPU.clear()


def test_nvml_sampler_process_answers_in_the_recording_format(stand_in_driver):
    import sys

    from launcher.top.model import gpus_from_sample

    stand_in_driver.setenv("FAKE_NVML_RECORDING", str(FIXTURES / "top_h100_failing.json"))
    first = node_sampler.gpu_sample({"python": sys.executable})
    second = node_sampler.gpu_sample({"python": sys.executable})
    assert (
        first["source"] == second["source"] == "nvml" and node_sampler._GPU["proc"].poll() is None
    )  # one kept process
    assert first["events"] == [{"gpu": 1, "type": 8, "data": 48}] and second["events"] == []
    rows, ecc, _, note = gpus_from_sample(second)
    assert note is None and [r.util_pct for r in rows] == [96, 41]
    assert (
        rows[1].throttle == ["hardware slowdown"]
        and rows[1].temp_c == 88
        and ecc[1] == {"corrected": 5, "uncorrected": 2}
    )


def test_without_nvml_the_sampler_falls_back_to_nvidia_smi(stand_in_driver):
    import sys

    from launcher.top.model import gpus_from_sample

    stand_in_driver.setenv("FAKE_NVML_RECORDING", str(FIXTURES / "no_driver.json"))
    got = node_sampler.gpu_sample({"python": sys.executable})
    assert got["source"] == "nvidia-smi" and node_sampler._GPU["kind"] == "nvidia-smi"
    rows, ecc, _, _ = gpus_from_sample(got)
    assert [r.name for r in rows] == ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA L4"] and ecc[1][
        "uncorrected"
    ] == 2


# ---------------------------------------------------------------------------- what each node is asked


def test_sample_request_and_targets(tmp_path):
    from launcher.config import ClusterConfig
    from launcher.top.collect import sample_request
    from launcher.top.targets import pick_records, targets

    cluster = ClusterConfig.model_validate(
        {
            "nodes": [{"host": "10.0.0.1", "name": "a"}, {"host": "10.0.0.2", "name": "b"}],
            "venv": "/opt/venv",
            "storage": {"runs": "/data/runs", "checkpoints": "/data/ckpt"},
        }
    )
    (tmp_path / "a.json").write_text("{}")
    jobs = [
        JobSpec("j", "a", "/data/runs/j/nodes/a", "/data/runs/j/logs/a.log", "/data/runs/j/nodes/a/metrics.jsonl"),
        JobSpec("j", "z", "/data/runs/j/nodes/z", "/data/runs/j/logs/z.log", "/data/runs/j/nodes/z/metrics.jsonl"),
    ]
    a = sample_request(cluster, cluster.nodes[0], jobs, str(tmp_path))
    b = sample_request(cluster, cluster.nodes[1], jobs, str(tmp_path))
    assert a["op"] == "top" and a["python"] == "/opt/venv/bin/python3" and a["nvml_replay"] == str(tmp_path / "a.json")
    assert "nvml_replay" not in b and b["jobs"] == [] and [j["name"] for j in a["jobs"]] == ["j"]
    assert a["disks"] == [{"label": "runs", "path": "/data/runs"}, {"label": "ckpt", "path": "/data/ckpt"}]
    assert [t.node.label for t in targets(cluster, [])] == ["a", "b"]

    class Rec:  # the two fields pick_records reads
        def __init__(self, name, state):
            self.name, self.state = name, state

    recs = [Rec("x", "running"), Rec("y", "stopped"), Rec("z", "starting")]
    assert [r.name for r in pick_records(recs, None)] == ["x", "z"] and [r.name for r in pick_records(recs, "y")] == [
        "y"
    ]

"""Spec table, speed judgement, peer comparison and the report's shape: pure logic over plain dicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.node import nvml_reader as nr
from benchmarks.node.judge import FAIL, PASS, SKIP, WARN, check_speed, judge_node, judge_peers, worst
from benchmarks.node.report import build_report, table_rows, visible_columns
from benchmarks.node.specs import SPECS, find_spec

FIXTURES = Path(__file__).parent / "fixtures" / "nvml"


@pytest.mark.parametrize(
    "name, key",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm-40"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm-80"),
        ("NVIDIA A100-PCIE-40GB", "a100-pcie-40"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA A10G", None),
        ("NVIDIA L40", None),
        ("Tesla V100-SXM2-16GB", None),
        (nr.NA, None),
    ],
)
def test_nvml_names_find_their_spec(name, key):
    spec = find_spec(name)
    assert (spec.key if spec else None) == key


def test_spec_table_is_consistent():
    keys = [s.key for s in SPECS]
    assert len(keys) == len(set(keys))
    for s in SPECS:
        assert s.source and s.bf16_tflops > s.tf32_tflops > 0 and s.memory_gbps > 0
        for metric in ("gemm_bf16", "gemm_fp16", "gemm_tf32", "device_copy", "h2d", "d2h"):
            typical, basis = s.expected(metric)
            assert 0 < typical < s.spec(metric), (s.key, metric)
            assert basis
    h100 = find_spec("NVIDIA H100 80GB HBM3")
    assert h100.bf16_tflops == 989.4 and h100.expected("gemm_bf16")[0] == 790.0
    assert h100.memory_gbps == 3350 and 2900 <= h100.expected("device_copy")[0] <= 3000
    assert h100.expected("h2d")[0] == 55.0


def test_speed_is_judged_as_a_share_of_typical():
    h100 = find_spec("NVIDIA H100 80GB HBM3")
    c = check_speed("gemm_bf16", 612.0, h100, None)
    assert c.status == WARN
    assert c.reason.startswith("bf16 GEMM 612 TFLOP/s, 77% of typical 790")
    assert check_speed("gemm_bf16", 780.0, h100, None).status == PASS
    assert check_speed("gemm_bf16", 500.0, h100, None).status == FAIL
    assert check_speed("h2d", 24.0, h100, None).status == FAIL  # a Gen4-speed copy on a Gen5 GPU
    assert check_speed("gemm_bf16", {"error": "CUDA error: out of memory"}, h100, None).status == FAIL
    assert check_speed("gemm_bf16", 100.0, None, None).status == SKIP
    assert check_speed("gemm_bf16", 780.0, h100, "skipped (--quick)").status == SKIP


def _speed(bf16: float) -> dict:
    return {
        "gemm_tflops": {
            "bf16": {"tflops": bf16, "n": 8192},
            "fp16": {"tflops": 785.0, "n": 8192},
            "tf32": {"tflops": 400.0, "n": 8192},
        },
        "device_copy_gbps": 2950.0,
        "h2d_gbps": 54.0,
        "d2h_gbps": 53.0,
    }


def _node(host: str, bf16: list[float], host_info: dict | None = None) -> dict:
    rec = json.loads((FIXTURES / "h100_sxm_healthy.json").read_text())
    speed = {
        "gpus": [{"index": i, **_speed(v)} for i, v in enumerate(bf16)],
        "cuda": True,
        "cpu": {"gemm_fp32_gflops": 900.0, "memcopy_gbps": 20.0, "threads": 32, "gemm_n": 1024},
    }
    return judge_node(
        {"host": host, "quick": False, "nvml": nr.parse_recording(rec), "host_info": host_info or {}, "speed": speed}
    )


def test_a_gpu_more_than_ten_percent_below_its_peers_is_flagged():
    nodes = [_node("a", [790.0, 795.0]), _node("b", [792.0, 680.0])]
    judge_peers(nodes)
    slow = {c["name"]: c for c in nodes[1]["gpus"][1]["checks"]}
    assert slow["peer_gemm_bf16"]["status"] == FAIL
    assert "below its peers' median" in slow["peer_gemm_bf16"]["reason"]
    assert (
        slow["gemm_bf16"]["status"] == WARN
    )  # 680 is 86% of typical: a warning on its own, a failure next to its peers
    assert nodes[1]["status"] == FAIL and nodes[0]["status"] == PASS
    fine = {c["name"]: c for c in nodes[0]["gpus"][0]["checks"]}
    assert fine["peer_gemm_bf16"]["status"] == PASS


def test_cpu_figures_below_peers_only_warn():
    nodes = [
        {
            "host": h,
            "gpus": [],
            "checks": [{"name": "cpu_gemm", "status": PASS, "value": v, "expected": None, "reason": ""}],
            "status": PASS,
        }
        for h, v in (("a", 100.0), ("b", 100.0), ("c", 50.0))
    ]
    judge_peers(nodes)
    assert [n["status"] for n in nodes] == [PASS, PASS, WARN]


def test_worst_orders_fail_warn_pass_skip():
    assert worst([PASS, SKIP]) == PASS
    assert worst([SKIP, SKIP]) == SKIP
    assert worst([PASS, WARN, FAIL]) == FAIL
    assert worst([]) == SKIP


def test_report_json_has_the_issue_schema_and_one_row_per_node_and_gpu():
    nodes = [_node("a", [790.0, 795.0]), _node("b", [792.0, 680.0])]
    judge_peers(nodes)
    report = json.loads(json.dumps(build_report(nodes, quick=False)))
    assert report["summary"] == {"status": FAIL, "nodes": 2, "gpus": 4, "failed_nodes": ["b"]}
    for node in report["nodes"]:
        assert {"host", "gpus", "checks", "speed"} <= set(node)
        for gpu in node["gpus"]:
            assert {"name", "uuid", "serial", "checks", "speed"} <= set(gpu)
            for c in gpu["checks"] + node["checks"]:
                assert set(c) == {"name", "status", "value", "expected", "reason"}
                assert c["status"] in (PASS, WARN, FAIL, SKIP)
    rows = table_rows(report)
    assert [(r["node"], r["gpu"]) for r in rows] == [("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")]
    assert rows[3]["status"] == FAIL and "below its peers" in rows[3]["problems"]
    assert "cpu_gemm" not in visible_columns(report) and "bf16" in visible_columns(report)


def test_reason_lines_put_failures_first_and_say_shared_skips_once():
    from benchmarks.node.report import reason_lines

    def node(host, checks):
        return {
            "host": host,
            "gpus": [],
            "status": PASS,
            "checks": [{"name": n, "status": s, "value": None, "expected": None, "reason": r} for n, s, r in checks],
        }

    skip = ("numa", SKIP, "NUMA topology is not exposed")
    report = {
        "nodes": [
            node("a", [skip, ("cpu_memcopy", WARN, "slow copy")]),
            node("b", [skip, ("probe", FAIL, "no result")]),
        ]
    }
    assert reason_lines(report) == [
        ("b: fail: no result", FAIL),
        ("a: warn: slow copy", WARN),
        ("every node: skip: NUMA topology is not exposed", SKIP),
    ]


def test_a_node_without_a_result_fails_with_its_reason_and_others_are_still_judged():
    from benchmarks.node.run import judge_probes, missing_probe

    rec = json.loads((FIXTURES / "h100_sxm_healthy.json").read_text())
    good = {"format": "corral-node-probe/1", "host": "a", "quick": True, "nvml": rec, "host_info": {}, "speed": {}}
    nodes = judge_probes(
        [
            good,
            missing_probe("b", "no probe result at /runs/x/node/b.json (state exited, exit code 1)"),
            {"format": "corral-node-probe/1", "host": "c"},
        ],
        {"a": 2, "b": 2, "c": 8},
    )
    assert [n["status"] for n in nodes] == [PASS, FAIL, FAIL]
    assert nodes[1]["checks"][0]["name"] == "probe" and "exit code 1" in nodes[1]["checks"][0]["reason"]
    assert nodes[2]["checks"][0]["reason"].startswith("unreadable probe")
    assert {c["name"]: c for c in nodes[0]["checks"]}["gpu_count"]["status"] == PASS


def test_check_names_are_frozen():
    """The check names are part of the JSON surface that people grep and alert on: change them deliberately."""
    node = _node("a", [790.0])
    assert [c["name"] for c in node["gpus"][0]["checks"]] == [
        "model",
        "nvml_errors",
        "memory_size",
        "ecc_mode",
        "ecc_uncorrected",
        "ecc_corrected",
        "remapped_rows",
        "retired_pages",
        "pcie_width",
        "pcie_generation",
        "nvlink_state",
        "nvlink_errors",
        "clock_events",
        "temperature",
        "power_limit",
        "xid_events",
        "gemm_bf16",
        "gemm_fp16",
        "gemm_tf32",
        "device_copy",
        "h2d",
        "d2h",
    ]
    assert [c["name"] for c in node["checks"]] == ["nvidia_driver", "cpu_gemm", "cpu_memcopy"]
    limited = _node("a", [790.0], {"cpu_limit": {"affinity": 32, "quota_cpus": None, "readable": True}})
    assert [c["name"] for c in limited["checks"]][-1] == "cpu_quota"


def _quota(quota: float | None, readable: bool = True) -> dict:
    return {
        "affinity": 32,
        "readable": readable,
        "quota_cpus": quota,
        "cgroup": "/sys/fs/cgroup/cpu/pod7",
        "quota_us": None if quota is None else int(quota * 100000),
        "period_us": 100000,
        "nr_throttled": 12,
    }


def test_a_cpu_quota_under_one_cpu_fails_the_node_and_names_its_cgroup():
    from benchmarks.node.judge import check_cpu_quota

    starved = check_cpu_quota(_quota(0.05), 32)
    assert starved.status == FAIL and (starved.value, starved.expected) == (0.05, 1)
    assert "/sys/fs/cgroup/cpu/pod7: 5000 us per 100000 us, throttled 12 times" in starved.reason
    capped = check_cpu_quota(_quota(4.0), 32, gpus=8)
    assert capped.status == WARN and "4 CPUs for 8 GPUs" in capped.reason
    assert check_cpu_quota(_quota(4.0), 32).status == PASS  # a CPU-only node: a container's share, named
    assert "CPU quota 8 of 32 CPUs" in check_cpu_quota(_quota(8.0), 32, gpus=8).reason
    assert check_cpu_quota(_quota(None), 32).status == PASS
    assert check_cpu_quota(_quota(None, readable=False), 32).status == SKIP
    node = _node("a", [790.0], {"cpu_limit": _quota(0.05)})
    assert node["status"] == FAIL

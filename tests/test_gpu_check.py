"""The GPU acceptance run's pure parts (verdicts, summary) and its CPU path, which runs here and in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.allreduce import maths as cm
from benchmarks.allreduce.worker import build_result
from perf import gpu_check, results_log
from perf import gpu_verdicts as gv
from perf import overhead_stats as ost
from tests.infra.golden import check_golden

REPO = Path(__file__).resolve().parents[1]


# ---- the CPU path ------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_cpu_path_skips_every_gpu_step_with_a_reason_and_writes_json_and_markdown(tmp_path):
    out, results, fixtures = tmp_path / "out", tmp_path / "results", tmp_path / "fixtures"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "perf.gpu_check",
            "--cpu-only",
            "--results",
            str(results),
            "--out",
            str(out),
            "--fixture-dir",
            str(fixtures),
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [js] = results.glob("gpu-check-*.json")
    [md] = results.glob("gpu-check-*.md")
    (run,) = results_log.read(js)["runs"]  # one dated run in the GPU model's measurement file
    doc = run["result"]
    assert doc["format"] == gv.RESULT_FORMAT and doc["status"] == gv.PASS and doc["cpu_only"] is True
    steps = {s["name"]: s for s in doc["steps"]}
    assert list(steps) == [name for name, *_ in gpu_check.STEPS]
    assert steps["environment"]["status"] == gv.PASS, steps["environment"]
    assert doc["environment"]["torch"] and doc["environment"]["missing_modules"] == []
    for name, _, _, needs_gpu in gpu_check.STEPS:
        if needs_gpu:
            assert steps[name]["status"] == gv.SKIP and "--cpu-only" in steps[name]["reason"], steps[name]
            assert f"gpu-check: {name}: SKIP (--cpu-only" in proc.stdout
    text = md.read_text()
    for name in steps:
        assert f"| {name} |" in text
    assert {p.name for p in out.iterdir()} == {js.name, md.name, "gpu-check-logs.txt"}
    assert not fixtures.exists(), "no NVML reading without a GPU"


def test_a_step_past_its_budget_is_stopped_with_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    t0 = time.monotonic()
    proc = gpu_check.run_step_process([sys.executable, "-c", script], tmp_path / "s.log", timeout_s=3)
    assert proc.timed_out and proc.rc is not None and time.monotonic() - t0 < 30
    child = int(marker.read_text())
    for _ in range(50):  # the grandchild got the group's signal too
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:
            if Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0] == "Z":
                break
        except FileNotFoundError:  # reaped between the two looks
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"sleep {child} outlived its step")
    assert gv.step_status([], proc.rc, proc.timed_out) == (gv.FAIL, "ran past its time budget and was stopped")


def test_no_gpu_without_cpu_only_is_incomplete_not_a_pass():
    steps = [gv.StepResult("environment", "Environment", gv.PASS), gv.skipped("gpu_tests", "t", "no CUDA GPU: ...")]
    assert gv.overall(steps) == gv.INCOMPLETE
    assert gv.overall(steps, gpu_expected=False) == gv.PASS
    assert gv.overall([*steps, gv.StepResult("x", "x", gv.FAIL)], gpu_expected=False) == gv.FAIL


# ---- verdicts ------------------------------------------------------------------------


def test_junit_counts_a_skip_on_the_gpu_machine_as_a_failure():
    xml = """<testsuites><testsuite tests="3" failures="0" errors="0" skipped="1">
      <testcase classname="tests.test_gpu_paths" name="test_a"/>
      <testcase classname="tests.test_gpu_paths" name="test_b"/>
      <testcase classname="tests.test_gpu_paths" name="test_c"><skipped message="no CUDA GPU"/></testcase>
    </testsuite></testsuites>"""
    figs = {f.name: f for f in gv.judge_junit(xml)}
    assert figs["gpu tests passed"].value == 2 and figs["gpu tests passed"].verdict == gv.PASS
    assert figs["gpu tests skipped"].verdict == gv.FAIL and "test_c: no CUDA GPU" in figs["gpu tests skipped"].note
    assert gv.step_status(list(figs.values()), 0)[0] == gv.FAIL


def _gpu(name="NVIDIA H100 80GB HBM3", bf16=780.0, copy=2950.0, statuses=None):
    statuses = statuses or {}
    speed = {"gemm_bf16": bf16, "gemm_fp16": 770.0, "gemm_tf32": 380.0, "device_copy": copy, "h2d": 54.0, "d2h": 53.0}
    checks = [
        {"name": m, "status": statuses.get(m, "pass"), "value": v, "expected": 700.0, "reason": ""}
        for m, v in speed.items()
    ]
    checks.append(
        {
            "name": "ecc_uncorrected",
            "status": statuses.get("ecc_uncorrected", "pass"),
            "value": 0,
            "expected": 0,
            "reason": "ok",
        }
    )
    return {"index": 0, "name": name, "speed": speed, "checks": checks}


def test_node_report_judged_against_spec_checks_and_the_anchors():
    figs = {f.name: f for f in gv.judge_node_report({"nodes": [{"checks": [], "gpus": [_gpu()]}]})}
    assert figs["gpu0 gemm_bf16 vs anchor"].verdict == gv.PASS and figs["gpu0 gemm_bf16 vs anchor"].baseline == 790.0
    assert figs["gpu0 device_copy vs anchor"].verdict == gv.PASS
    assert figs["gpu0 gemm_tf32"].verdict == gv.PASS and figs["gpu0 gemm_tf32"].unit == "TFLOP/s"

    slow = {
        f.name: f
        for f in gv.judge_node_report(
            {"nodes": [{"checks": [], "gpus": [_gpu(bf16=740.0, statuses={"ecc_uncorrected": "fail"})]}]}
        )
    }
    assert slow["gpu0 gemm_bf16 vs anchor"].verdict == gv.FAIL, "740 < 0.95 x 790"
    assert slow["gpu0 check ecc_uncorrected"].verdict == gv.FAIL

    other = gv.judge_node_report({"nodes": [{"checks": [], "gpus": [_gpu(name="NVIDIA A100-SXM4-80GB")]}]})
    assert any(f.name == "gpu0 anchor" and "no anchor" in f.note for f in other)
    assert gv.anchor_for("NVIDIA H200") == gv.ANCHORS["H200"] and gv.anchor_for("NVIDIA H100 PCIe") is None
    assert gv.judge_node_report({"nodes": [{"checks": [], "gpus": []}]})[-1].verdict == gv.FAIL


def _allreduce_result(world: int, wrong: int = 0, backend: str = "nccl") -> dict:
    rows = []
    for size in (1 << 20, 64 << 20, 256 << 20):
        for inplace in (False, True):
            t = size / 200e9
            rows.append(
                cm.make_row(
                    size_bytes=size,
                    dtype=cm.DTYPES["float"],
                    op="sum",
                    inplace=inplace,
                    world_size=world,
                    timing=cm.summarize_times([[t, t * 1.1, t * 0.9]] * world),
                    wrong=wrong,
                )
            )
    env = {"backend": backend, "timing": "cuda-events" if backend == "nccl" else "wall-clock", "world_size": world}
    return build_result(rows, env, {})


def test_allreduce_on_one_gpu_needs_nccl_events_exact_data_and_zero_busbw():
    figs = {f.name: f for f in gv.judge_allreduce(_allreduce_result(1))}
    assert all(f.verdict in (gv.PASS, gv.INFO) for f in figs.values()), figs
    assert figs["busbw at world size 1"].value == 0
    assert figs["algbw 256 MiB in-place"].value == pytest.approx(200.0, rel=0.01)
    bad = {f.name: f for f in gv.judge_allreduce(_allreduce_result(1, wrong=3, backend="gloo"))}
    assert bad["backend"].verdict == bad["timing"].verdict == bad["wrong elements (all rows)"].verdict == gv.FAIL


def _ckpt(blocked_bg=0.01, step_bg=0.0505, blocked_now=0.01, step_now=0.09, raw=1.0, sync=1.05, exact=True):
    mode = lambda b, s: {"blocked_s": b, "step_without_s": 0.05, "step_during_s": s, "bit_exact": exact}  # noqa: E731
    return {
        "raw_s": raw,
        "sync_s": sync,
        "async": {"background": mode(blocked_bg, step_bg), "now": mode(blocked_now, step_now)},
    }


def test_checkpoint_bars_blocked_step_time_sync_vs_raw_and_exact_data():
    figs = {f.name: f for f in gv.judge_checkpoint(_ckpt())}
    assert figs["sync save throughput vs raw write+fsync"].value == pytest.approx(1 / 1.05, rel=1e-3)
    assert figs["sync save throughput vs raw write+fsync"].verdict == gv.PASS
    assert figs["async[background] blocked time"].verdict == gv.PASS  # 10 ms <= 2% of 1.05 s
    assert figs["async[background] step time during the save"].verdict == gv.PASS  # 50.5 <= 1.05 x 50
    assert figs["async[now] step time during the save"].verdict == gv.INFO, "the default mode is recorded, not judged"
    bad = {f.name: f for f in gv.judge_checkpoint(_ckpt(blocked_bg=0.03, step_bg=0.06, sync=1.2, exact=False))}
    assert {
        bad[n].verdict
        for n in (
            "async[background] blocked time",
            "async[background] step time during the save",
            "sync save throughput vs raw write+fsync",
            "async[now] data round-trips bit-exactly",
        )
    } == {gv.FAIL}


def test_launch_needs_nccl_a_gpu_log_and_checkpoints():
    ok = gv.judge_launch({"plan": {"backend": "nccl"}}, "rank 0/1 ready on cuda:0 (restart 0)", [0, 50, 199])
    assert all(f.verdict == gv.PASS for f in ok)
    bad = gv.judge_launch({"plan": {"backend": "gloo"}}, "rank 0/2 ready on cpu", [])
    assert all(f.verdict == gv.FAIL for f in bad)
    assert gv.judge_launch(None, "", [])[0].verdict == gv.FAIL


def test_overheads_node_within_5_percent_and_allreduce_ci_within_3_percent():
    node = {
        "pairs": {
            "gemm_bf16": {"harness": 781.0, "plain": 790.0, "unit": "TFLOP/s", "rounds": 5},
            "device_copy": {"harness": 2700.0, "plain": 3000.0, "unit": "GB/s", "rounds": 5},
        }
    }
    figs = {f.name: f for f in gv.judge_node_overhead(node)}
    assert figs["bench node gemm_bf16 vs plain loop"].verdict == gv.PASS
    assert figs["bench node device_copy vs plain loop"].verdict == gv.FAIL
    bare = [1.0 + 0.001 * (i % 3) for i in range(30)]
    close, far = (
        ost.compare(bare, [b * 1.005 for b in bare]).as_dict(),
        ost.compare(bare, [b * 1.2 for b in bare]).as_dict(),
    )
    rows = [
        {"size_bytes": 64 << 20, "comparisons": {"inplace_vs_bare": close, "outofplace_vs_bare": far}},
        {"size_bytes": 1 << 20, "comparisons": {"inplace_vs_bare": far}},
    ]
    figs = {f.name: f for f in gv.judge_allreduce_overhead({"rows": rows})}
    assert set(figs) == {"all-reduce inplace_vs_bare 64 MiB", "all-reduce outofplace_vs_bare 64 MiB"}, (
        "only sizes >= 64 MiB"
    )
    assert figs["all-reduce inplace_vs_bare 64 MiB"].verdict == gv.PASS
    assert figs["all-reduce outofplace_vs_bare 64 MiB"].verdict == gv.FAIL


def test_summary_names_the_machine_versions_and_every_figure_with_baseline_and_verdict():
    step = gv.StepResult(
        "checkpoint", "Async checkpoint", gv.PASS, seconds=12.0, budget_s=100, figures=gv.judge_checkpoint(_ckpt())
    )
    doc = {
        "started": "2026-11-27 15:00:00 UTC",
        "status": gv.PASS,
        "seconds": 300.0,
        "budget_s": 450,
        "command": "make gpu-check",
        "environment": {
            "gpu_name": "NVIDIA H100 80GB HBM3",
            "driver": "580.159.04",
            "gpu_count": 1,
            "torch": "2.11.0+cu130",
            "cuda": "13.0",
            "nccl": "2.28.3",
            "python": "3.12.3",
            "hostname": "h",
        },
        "steps": [step.to_dict(), gv.skipped("launch", "Launch", "no time left").to_dict()],
    }
    md = gv.render_markdown(doc)
    assert "GPU: NVIDIA H100 80GB HBM3 (driver 580.159.04, 1 visible)" in md
    assert "torch 2.11.0+cu130, CUDA 13.0, NCCL 2.28.3, Python 3.12.3" in md
    assert "| launch | skip | 0.0 (0) | no time left |" in md
    assert (
        "| async[background] blocked time | 0.01 | s | 1.05 (synchronous save of the same state) | <= 0.02 x baseline | pass |"
        in md
    )


def test_summary_of_a_whole_run_matches_the_golden_file():
    node = gv.StepResult(
        "bench_node",
        "bench node",
        gv.FAIL,
        "failed: gpu0 h2d",
        41.2,
        70,
        gv.judge_node_report({"nodes": [{"checks": [], "gpus": [_gpu(statuses={"h2d": "fail"})]}]}),
    )
    ar = gv.StepResult(
        "allreduce",
        "bench allreduce --backend nccl (world size 1)",
        gv.PASS,
        "",
        22.0,
        60,
        gv.judge_allreduce(_allreduce_result(1)),
    )
    ck = gv.StepResult(
        "checkpoint",
        "Async checkpoint of a 2G CUDA state during training",
        gv.PASS,
        "",
        48.5,
        100,
        gv.judge_checkpoint(_ckpt()),
    )
    doc = {
        "started": "2026-11-27 15:00:00 UTC",
        "status": gv.overall([node, ar, ck]),
        "seconds": 111.7,
        "budget_s": 450,
        "command": "make gpu-check",
        "steps": [s.to_dict() for s in (node, ar, ck)],
        "environment": {
            "gpu_name": "NVIDIA H100 80GB HBM3",
            "driver": "580.159.04",
            "gpu_count": 1,
            "torch": "2.11.0+cu130",
            "cuda": "13.0",
            "nccl": "2.28.3",
            "python": "3.12.3",
            "hostname": "gpu1",
            "checkpoint_disk": "a persistent disk",
        },
    }
    check_golden("gpu_check_summary.md", gv.render_markdown(doc))


# ---- the checkpoint worker, on CPU --------------------------------------------------


@pytest.mark.timeout(240)
def test_checkpoint_worker_round_trips_both_async_modes_on_cpu(tmp_path):
    from perf import gpu_ckpt

    out = tmp_path / "ckpt.json"
    args = gpu_ckpt.parse_args(
        [
            "--device",
            "cpu",
            "--size",
            "8M",
            "--root",
            str(tmp_path / "scratch"),
            "--out",
            str(out),
            "--rounds",
            "1",
            "--baseline-steps",
            "2",
            "--matmuls",
            "1",
            "--matmul-n",
            "64",
        ]
    )
    result = gpu_ckpt.measure(args)
    assert result["size_bytes"] == 8 << 20
    for mode in gpu_ckpt.MODES:
        m = result["async"][mode]
        assert m["bit_exact"] is True and m["steps_during"] >= 1 and m["blocked_s"] > 0 and m["step_without_s"] > 0
    assert result["raw_s"] > 0 and result["sync_s"] > 0
    assert not (tmp_path / "scratch").exists(), "scratch space removed"
    figs = gv.judge_checkpoint(result)
    assert [f.verdict for f in figs if "bit-exactly" in f.name] == [gv.PASS, gv.PASS]


def test_allreduce_overhead_on_one_rank_compares_times_and_reports_algbw():
    """World size 1 (one GPU): busbw is 0 by definition, the ratios come from block times alone."""
    from perf.allreduce_overhead import summarise

    size = 64 << 20
    bare = [0.010 + 0.0001 * (i % 4) for i in range(20)]
    [row] = summarise({size: {"bare": bare, "harness_inplace": [b * 1.01 for b in bare]}}, k=10, world=1, seed=1)
    assert row["busbw_gbps"] == {"bare": 0.0, "harness_inplace": 0.0}
    assert row["algbw_gbps"]["bare"] == pytest.approx(cm.algbw_gbps(size, sum(bare) / 200))
    c = row["comparisons"]["inplace_vs_bare"]
    assert c["estimate"] == pytest.approx(1 / 1.01) and c["verdict"] == ost.WITHIN
    [fig] = gv.judge_allreduce_overhead({"rows": [row]})
    assert fig.verdict == gv.PASS and fig.name == "all-reduce inplace_vs_bare 64 MiB"


@pytest.mark.timeout(180)
def test_the_shell_entry_point_without_a_bundle_runs_the_cpu_path_and_passes_arguments_on(tmp_path):
    env = {**os.environ, "GPU_BUNDLE": str(tmp_path / "no-bundle"), "OUT": str(tmp_path / "out")}
    proc = subprocess.run(
        [
            "bash",
            "perf/gpu_check.sh",
            "--cpu-only",
            "--steps",
            "gpu_tests",
            "--results",
            str(tmp_path / "r"),
            "--fixture-dir",
            str(tmp_path / "f"),
            "--work",
            str(tmp_path / "w"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"no bundle at {tmp_path / 'no-bundle'}" in proc.stdout
    assert "gpu-check: launch: SKIP (not selected (--steps gpu_tests))" in proc.stdout
    assert "gpu-check: gpu_tests: SKIP (--cpu-only" in proc.stdout
    assert len(list((tmp_path / "out").glob("gpu-check-*.json"))) == 1, "$OUT is where the results are copied"


def test_node_judge_reads_a_report_built_by_bench_node_itself():
    """Key names as `corral bench node --json` writes them: a judged H100 reading with speed figures."""
    from benchmarks.node import nvml_reader as nr
    from benchmarks.node.judge import judge_node, judge_peers
    from benchmarks.node.report import build_report

    recording = json.loads((REPO / "tests" / "fixtures" / "nvml" / "h100_sxm_healthy.json").read_text())
    per_gpu = {
        "gemm_tflops": {
            "bf16": {"tflops": 792.0, "n": 8192},
            "fp16": {"tflops": 785.0, "n": 8192},
            "tf32": {"tflops": 420.0, "n": 8192},
        },
        "device_copy_gbps": 2990.0,
        "h2d_gbps": 54.0,
        "d2h_gbps": 53.5,
    }
    speed = {"gpus": [{"index": i, **per_gpu} for i in (0, 1)], "cuda": True, "cpu": None}
    node = judge_node(
        {"host": "n1", "quick": False, "nvml": nr.parse_recording(recording), "host_info": {}, "speed": speed}
    )
    nodes = [node]
    judge_peers(nodes)
    report = json.loads(json.dumps(build_report(nodes, quick=False)))
    figs = {f.name: f for f in gv.judge_node_report(report)}
    assert figs["gpu0 gemm_bf16"].value == 792.0 and figs["gpu1 device_copy"].value == 2990.0
    assert figs["gpu0 gemm_bf16"].baseline == 790.0, "the spec table's typical H100 SXM figure"
    assert figs["gpu0 gemm_bf16 vs anchor"].verdict == gv.PASS and figs["gpu1 device_copy vs anchor"].verdict == gv.PASS
    assert {f.verdict for f in figs.values()} <= {gv.PASS, gv.INFO}, [f for f in figs.values() if f.verdict == gv.FAIL]

"""`corral bench node` for real on this machine (CPU only, no driver), and judging recorded probes from files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "nvml"


def _probe_file(tmp_path: Path, fixture: str, host: str) -> Path:
    probe = {
        "format": "corral-node-probe/1",
        "host": host,
        "quick": True,
        "nvml": json.loads((FIXTURES / fixture).read_text()),
        "host_info": {},
        "speed": {},
    }
    path = tmp_path / f"{host}.json"
    path.write_text(json.dumps(probe))
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One real run with speed tests (CPU figures), shared by the tests that read its outputs."""
    d = tmp_path_factory.mktemp("bench-node")
    report, record = d / "report.json", d / "probe.json"
    code = main(["bench", "node", "--json-out", str(report), "--record", str(record)])
    return code, json.loads(report.read_text()), json.loads(record.read_text())


def test_cpu_only_node_gives_a_clean_report_with_cpu_figures_and_exit_0(local_run, capsys):
    code, report, _ = local_run
    assert code == 0
    assert report["format"] == "corral-bench-node/1" and report["summary"]["status"] != "fail"
    (node,) = report["nodes"]
    assert node["host"] == "local" and node["gpus"] == []
    checks = {c["name"]: c for c in node["checks"]}
    assert checks["nvidia_driver"]["status"] == "skip"
    assert "NVIDIA" in checks["nvidia_driver"]["reason"]  # the NVML error as a sentence
    assert checks["numa"]["reason"]  # not exposed here: said so
    cpu = node["speed"]["cpu"]
    assert cpu["gemm_fp32_gflops"] > 0 and cpu["memcopy_gbps"] > 0
    assert checks["cpu_gemm"]["value"] == cpu["gemm_fp32_gflops"]
    assert node["speed"]["seconds"] < 30


def test_record_then_from_judges_the_same_probe_again(local_run, tmp_path):
    _, report, record = local_run
    assert record["format"] == "corral-node-probe/1" and record["nvml"]["format"] == "corral-nvml-reading/1"
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(record))
    again = tmp_path / "again.json"
    assert main(["bench", "node", "--from", str(path), "--json-out", str(again)]) == 0
    assert json.loads(again.read_text())["nodes"][0]["checks"] == report["nodes"][0]["checks"]


def test_failing_gpu_probe_exits_1_with_reasons_in_the_json(tmp_path, capsys):
    probes = {
        "format": "corral-node-probes/1",
        "probes": [
            json.loads(_probe_file(tmp_path, "h100_sxm_healthy.json", "gpu1").read_text()),
            json.loads(_probe_file(tmp_path, "h100_sxm_failing.json", "gpu2").read_text()),
        ],
    }
    src = tmp_path / "probes.json"
    src.write_text(json.dumps(probes))
    out = tmp_path / "report.json"
    assert main(["bench", "node", "--from", str(src), "--json-out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["summary"]["failed_nodes"] == ["gpu2"]
    bad = report["nodes"][1]["gpus"][1]
    reasons = [c["reason"] for c in bad["checks"] if c["status"] == "fail"]
    assert "PCIe link x8, expected x16" in reasons
    assert any(r.startswith("uncorrected ECC errors: 2") for r in reasons)
    assert any("HwSlowdown" in r for r in reasons)
    printed = capsys.readouterr()
    assert "PCIe link x8, expected x16" in printed.out and "Traceback" not in printed.err


def test_json_to_stdout_is_pure_json(tmp_path, capsys):
    src = _probe_file(tmp_path, "h100_sxm_healthy.json", "gpu1")
    assert main(["bench", "node", "--from", str(src), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["summary"]["status"] == "pass"


def test_bad_from_file_is_a_user_error(tmp_path, capsys):
    assert main(["bench", "node", "--from", str(tmp_path / "nope.json")]) == 2
    (tmp_path / "x.json").write_text('{"a": 1}')
    assert main(["bench", "node", "--from", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "not a recorded node probe" in err and "Traceback" not in err


def test_dry_run_prints_each_nodes_command(tmp_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "nodes:\n  - {host: 10.0.0.1, name: n1}\n  - {host: 10.0.0.2, name: n2, gpus: 8}\nstorage: {runs: /var/tmp/runs}\n"
    )
    assert main(["bench", "node", "-c", str(cluster), "--dry-run", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "node n1 (ssh 10.0.0.1)" in out and "command: python3 -m benchmarks.node.probe --quick" in out
    assert "/var/tmp/runs/bench-node-" in out and "/node/n2.json" in out


def test_probe_runs_by_module_as_the_launch_path_runs_it(tmp_path):
    env = {**os.environ, "CORRAL_RUN_DIR": str(tmp_path / "run"), "CORRAL_NODE": "n1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.node.probe", "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    probe = json.loads((tmp_path / "run" / "node" / "n1.json").read_text())
    assert probe["host"] == "n1" and probe["quick"] is True and probe["speed"] is None
    env.pop("CORRAL_RUN_DIR")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.node.probe"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "give --out FILE" in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_on_the_local_cluster_launches_nothing(capsys):
    assert main(["bench", "node", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "local: probe in this process (with speed tests); nothing is launched" in out and "probe.py" not in out

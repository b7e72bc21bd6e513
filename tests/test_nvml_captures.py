"""Real NVML readings (``captured_*.json``, written by ``make gpu-check`` on a GPU machine) replayed
through the same reader and judge as the live probe. Without a capture in tests/fixtures/nvml/
there is nothing to replay (the documented-value fixtures are tested in test_bench_node_nvml.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.node import nvml_reader as nr
from benchmarks.node.judge import judge_node

CAPTURES = sorted((Path(__file__).parent / "fixtures" / "nvml").glob("captured_*.json"))


def test_capture_file_names_are_what_gpu_check_writes():
    for path in CAPTURES:
        assert path.stem.startswith("captured_") and path.stem.replace("_", "").isalnum(), path.name


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_a_captured_reading_replays_into_every_gpu_and_its_health_checks(path):
    recording = json.loads(path.read_text())
    assert "A capture" in recording["about"]
    reading = nr.parse_recording(recording)
    assert reading["available"] and reading["gpus"], "a capture from a GPU machine has GPUs"
    assert isinstance(reading["system"]["driver_version"], str) and reading["system"]["driver_version"] != nr.NA
    node = judge_node({"host": "captured", "quick": True, "nvml": reading, "host_info": {}, "speed": {}})
    for gpu in node["gpus"]:
        assert gpu["name"] != nr.NA and gpu["uuid"].startswith(("GPU-", "MIG-"))
        assert isinstance(gpu["memory_total_bytes"], int) and gpu["memory_total_bytes"] > 0
        names = {c["name"] for c in gpu["checks"]}
        assert {"ecc_uncorrected", "clock_events", "pcie_width"} <= names, names

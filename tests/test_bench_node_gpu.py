"""On a GPU machine: the real probe reads every GPU through NVML and measures it; skips cleanly elsewhere.

With CORRAL_CAPTURE_DIR set, the raw probe is kept there (commit it as a captured fixture)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from benchmarks.node.judge import judge_node
from benchmarks.node.nvml_reader import NA
from benchmarks.node.probe import load_probe, run_probe

pytestmark = pytest.mark.gpu


def test_real_gpus_are_read_measured_and_judged():
    raw = run_probe(quick=False)
    if raw["nvml"]["init_error"]:
        pytest.skip(f"NVML unavailable: {raw['nvml']['init_error']}")
    capture_dir = os.environ.get("CORRAL_CAPTURE_DIR")
    if capture_dir:
        Path(capture_dir, f"capture-{socket.gethostname()}.probe.json").write_text(json.dumps(raw, indent=1) + "\n")
    node = judge_node(load_probe(raw))
    assert node["gpus"], "NVML initialised but reported no GPU"
    for gpu in node["gpus"]:
        assert gpu["name"] != NA and gpu["uuid"].startswith(("GPU-", "MIG-"))
        assert isinstance(gpu["memory_total_bytes"], int) and gpu["memory_total_bytes"] > 0
        assert gpu["speed"]["gemm_bf16"] > 0 and gpu["speed"]["device_copy"] > 0 and gpu["speed"]["h2d"] > 0
        names = {c["name"] for c in gpu["checks"]}
        assert {"pcie_width", "ecc_uncorrected", "clock_events", "gemm_bf16", "xid_events"} <= names

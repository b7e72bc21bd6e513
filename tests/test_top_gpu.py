"""``corral top`` against real GPUs through NVML (skips cleanly without a GPU).

Run on a GPU machine by ``make gpu-check`` (its gpu_tests step) or ``pytest -m gpu tests/test_top_gpu.py``.
No timing bars: the figures must be physically possible and every field must be read.
"""

from __future__ import annotations

import json
import sys

import pytest

from launcher.top import node_sampler
from launcher.top.model import gpus_from_sample

pytestmark = pytest.mark.gpu


@pytest.fixture
def fresh_sampler():
    node_sampler._GPU.clear()
    yield
    proc = node_sampler._GPU.get("proc")
    if proc is not None:
        node_sampler._end(proc)
    node_sampler._GPU.clear()


def test_the_nvml_sampler_reads_every_field_of_every_gpu(fresh_sampler):
    import pynvml

    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    first = node_sampler.gpu_sample({"python": sys.executable})
    second = node_sampler.gpu_sample({"python": sys.executable})
    assert first["source"] == second["source"] == "nvml", (first, second)
    rows, ecc, events, note = gpus_from_sample(second)
    assert note is None and len(rows) == count >= 1
    for g in rows:
        assert isinstance(g.name, str) and g.name, g
        assert 0 <= g.util_pct <= 100 and 0 < g.mem_used <= g.mem_total, g
        assert 0 < g.power_w < 2000 and 0 < g.power_limit_w < 2000 and 5 < g.temp_c < 120 and 0 < g.sm_mhz < 5000, g
        assert all(isinstance(w, str) and w for w in g.throttle), g
    assert set(ecc) == {g.index for g in rows}
    assert isinstance(events, list)


def test_top_json_on_this_machine(capsys):
    from launcher.cli import main

    assert main(["top", "--json"]) == 0
    (node,) = json.loads(capsys.readouterr().out)["nodes"]
    assert node["reachable"] and node["gpu_source"] == "nvml", node
    assert node["gpus"] and all(g["util_pct"] is not None and g["mem_total"] for g in node["gpus"]), node

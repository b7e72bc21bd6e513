"""perf/start_cost.py: its stub venv passes preflight's file check for torch, and perf's report is read by command."""

from __future__ import annotations

import sys
from pathlib import Path

from launcher.agent import node_agent
from perf import start_cost

REPORT = """# Samples: 14K of event 'cpu-clock'
#
# Overhead       Samples  Command
# ........  ............  ...............
#
    52.38%          7800  swapper
    18.50%          2761  python3
     3.16%           472  tmux: server
     0.05%             7  kworker/0:2-mld
"""


def test_perf_s_report_is_read_as_cpu_seconds_per_command():
    used = start_cost.by_command(REPORT)
    assert set(used) == {"python3", "tmux: server", "kworker/0:2-mld"}
    assert used["python3"] == 2761 / start_cost.PERF_HZ


def test_the_stub_venv_passes_preflight_s_torch_check_and_its_torchrun_only_marks_ready(tmp_path):
    import subprocess

    venv = start_cost.stub_venv(tmp_path, Path(sys.prefix))
    assert node_agent._torch_in_venv(str(venv))["ok"]
    out = tmp_path / "out"
    out.mkdir()
    script = f". {venv}/bin/activate && command -v torchrun && exec timeout 0.5 torchrun --nnodes 1 x.py {out} 900"
    subprocess.run(["bash", "-c", script], capture_output=True)
    assert [p.name for p in out.iterdir()] == [f"ready-{__import__('socket').gethostname()}"]

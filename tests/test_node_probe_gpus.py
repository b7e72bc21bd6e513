"""The one node probe counts GPUs one way: preflight, the container facts and bench node's inventory
read the same number from the same recorded node answers (driver tree, nvidia-smi output, device files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.node import inventory
from container.facts import IbPaths, NodeFacts
from launcher.agent import node_agent
from launcher.agent.remote import AgentReply
from launcher.backends.ssh.preflight import evaluate_probe
from launcher.config import JobConfig, NodeConfig

SMI_8 = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d})\n" for i in range(8))
"""A recorded ``nvidia-smi -L`` of an 8-GPU node."""


def _node(root: Path, *, driver_gpus: int = 0, dev_files: int = 0) -> Path:
    for i in range(driver_gpus):
        (root / f"proc/driver/nvidia/gpus/0000:{i:02x}:00.0").mkdir(parents=True)
    (root / "dev").mkdir(parents=True, exist_ok=True)
    for i in range(dev_files):
        (root / f"dev/nvidia{i}").touch()
    (root / "dev/nvidiactl").touch()  # not a GPU
    return root


def _smi(rc: int, out: str = ""):
    def run(argv, timeout=60.0, env=None):
        assert argv[0] == "nvidia-smi"
        return rc, out, "" if rc == 0 else "nvidia-smi: command not found"

    return run


def _every_caller(root: Path) -> dict[str, int]:
    """The GPU count as each consumer reads it from one probe of the recorded node."""
    data = node_agent.op_probe({"op": "probe", "want": ["container", "inventory"], "root": str(root)})
    reply = AgentReply("gpu1", data)
    job = JobConfig.model_validate({"name": "j", "script": "train.py"})
    check = next(
        c
        for c in evaluate_probe(NodeConfig(host="gpu1"), reply, job, first=True, name="j", venv=None, plain=False)
        if c.check == "gpus"
    )
    return {
        "preflight": 0 if check.detail.startswith("no GPU") else int(check.detail.split()[0]),
        "container": NodeFacts.from_probe("gpu1", data["container"], IbPaths()).gpu_count,
        "agent inventory": data["inventory"]["gpus"],
        "bench node inventory": inventory.host_inventory(root)["gpus"],
    }


@pytest.mark.parametrize(
    ("driver_gpus", "dev_files", "smi", "expected"),
    [
        (8, 8, _smi(0, SMI_8), 8),  # the driver's tree answers
        (0, 8, _smi(0, SMI_8), 8),  # no driver tree: nvidia-smi answers
        (4, 8, _smi(0, SMI_8), 4),  # driver and device files disagree: the driver wins
        (0, 2, _smi(127), 2),  # no driver tools at all: device files count
        (0, 8, _smi(9, ""), 0),  # a driver that answers with an error: no usable GPU
        (0, 0, _smi(127), 0),  # a CPU node
    ],
)
def test_every_caller_reads_the_same_gpu_count(tmp_path, monkeypatch, driver_gpus, dev_files, smi, expected):
    monkeypatch.setattr(node_agent, "_run", smi)
    counts = _every_caller(_node(tmp_path, driver_gpus=driver_gpus, dev_files=dev_files))
    assert counts == dict.fromkeys(counts, expected), counts


def test_the_probes_which_finds_commands_as_shutil_does(tmp_path, monkeypatch):
    """The probe's own ``which`` (it spares the node an import of shutil) answers as ``shutil.which`` does:
    the first executable file on PATH, never a directory or a file without the execute bit."""
    import shutil

    first, second = tmp_path / "a", tmp_path / "b"
    for d in (first, second):
        d.mkdir()
    (first / "tmux").write_text("")  # not executable: skipped
    (first / "bash").mkdir()  # a directory: skipped
    for d in (first, second):
        (d / "tool").write_text("#!/bin/sh\n")
        (d / "tool").chmod(0o755)
    (second / "tmux").write_text("#!/bin/sh\n")
    (second / "tmux").chmod(0o755)
    monkeypatch.setenv("PATH", f"{first}:{second}")
    for name in ("tmux", "bash", "tool", "missing"):
        assert node_agent.which(name) == shutil.which(name), name
        for path in (f"{second}:{first}", f":{first}", ""):  # an explicit path, as the container facts pass one
            assert node_agent.which(name, path=path) == shutil.which(name, path=path), (name, path)
    assert node_agent.which("tmux") == str(second / "tmux")

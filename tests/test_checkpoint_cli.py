"""`corral ckpt ls|verify|prune` against real checkpoint roots."""

from __future__ import annotations

import json
import os

import pytest

from launcher.checkpoint import Checkpointer
from launcher.cli import main as cli
from tests.ckpt_helpers import remove_dir, unique_dir


@pytest.fixture
def root():
    path = unique_dir("ckcli")
    root = os.path.join(path, "job")
    ckpt = Checkpointer(root)
    for step in (100, 200, 300, 400):
        ckpt.save(step, {"w": [step] * 10}, metadata={"loss": 1 / step})
    yield root
    remove_dir(path)


def test_ls_table_and_json(root, capsys):
    os.mkdir(os.path.join(root, ".staging-step-00000500"))
    assert cli(["ckpt", "ls", root]) == 0
    out = capsys.readouterr().out
    for step in ("100", "200", "300", "400"):
        assert step in out
    assert "yes" in out and ".staging-step-00000500" in out
    assert cli(["ckpt", "ls", root, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["step"] for c in data["checkpoints"]] == [100, 200, 300, 400]
    first = data["checkpoints"][0]
    assert first["valid"] and first["world_size"] == 1 and first["size"] > 0 and first["metadata"] == {"loss": 0.01}
    assert data["leftovers"] == [os.path.join(root, ".staging-step-00000500")]


def test_ls_marks_a_torn_checkpoint(root, capsys):
    os.unlink(os.path.join(root, "step-00000200", "manifest.json"))
    assert cli(["ckpt", "ls", root, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    torn = data["checkpoints"][1]
    assert not torn["valid"] and "manifest.json: missing" in torn["problems"][0]


def test_verify_ok_and_failing_names_every_bad_file(root, capsys):
    assert cli(["ckpt", "verify", root]) == 0
    assert "4 checkpoint(s) verified" in capsys.readouterr().out
    bad1 = os.path.join(root, "step-00000100", "rank-00000-of-00001.bin")
    bad2 = os.path.join(root, "step-00000300", "rank-00000-of-00001.bin")
    os.truncate(bad1, 10)
    with open(bad2, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert cli(["ckpt", "verify", root, "--json-out", os.path.join(root, "..", "v.json")]) == 1
    err = capsys.readouterr().err
    assert f"{bad1}: truncated" in err and f"{bad2}: checksum mismatch" in err
    assert "2 problem(s) in 2 of 4" in err
    report = json.load(open(os.path.join(root, "..", "v.json")))
    assert report["ok"] is False


def test_prune_keeps_newest_and_dry_run_touches_nothing(root, capsys):
    assert cli(["ckpt", "prune", root, "--keep-last", "2", "--dry-run"]) == 0
    assert "would remove step-00000100" in capsys.readouterr().out
    assert len([n for n in os.listdir(root) if n.startswith("step-")]) == 4
    assert cli(["ckpt", "prune", root, "--keep-last", "1", "--keep-every", "200"]) == 0
    assert sorted(n for n in os.listdir(root) if n.startswith("step-")) == ["step-00000200", "step-00000400"]
    assert Checkpointer(root).load_latest() == (400, {"w": [400] * 10})


def test_bad_input_exits_2(capsys):
    assert cli(["ckpt", "verify", "/var/tmp/corral-no-such-root-x"]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
    assert cli(["ckpt", "prune", "/var/tmp", "--keep-last", "0"]) == 2

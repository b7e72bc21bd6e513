"""Faults with real processes and real filesystems: SIGKILLed writers, a full disk, corrupted files."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys

import pytest
import torch

from launcher.checkpoint import Checkpointer, CheckpointError
from launcher.checkpoint.inspect import scan
from launcher.cli import main as cli
from tests.ckpt_helpers import assert_same, make_state, remove_dir, unique_dir
from tests.infra.capped_volume import loop_ext4, loop_missing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def root():
    path = unique_dir("ckfault")
    yield os.path.join(path, "job")
    remove_dir(path)


@pytest.mark.slow
def test_sigkilled_writer_always_leaves_a_loadable_untorn_checkpoint(root):
    """60 writers SIGKILLed at random moments; after each: newest durable state loads exactly, nothing torn."""
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    zygote = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "ckpt_kill_writer.py"), root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    try:
        next_step, last_step, kills_mid_save, saves = 0, -1, 0, 0
        for kill in range(60):
            zygote.stdin.write(f"run {next_step} {rng.uniform(0.01, 0.25):.3f}\n")
            zygote.stdin.flush()
            reply = zygote.stdout.readline().split()
            assert reply and reply[0] == "killed", f"zygote died: {reply}"
            acked = int(reply[2])
            found = scan(root, full=True)
            kills_mid_save += bool(found.leftovers)
            assert found.problems == [], f"kill {kill}: torn or corrupt checkpoint: {found.problems}"
            latest = Checkpointer(root).load_latest()
            if latest is None:
                assert acked == -1 and last_step == -1, f"kill {kill}: step {acked} was acknowledged but nothing loads"
                continue
            step, state = latest
            assert step >= max(acked, last_step), f"kill {kill}: loaded step {step}, but step {acked} was durable"
            assert_same(make_state(step), state)
            saves += step - last_step
            last_step, next_step = step, step + 1
        assert saves >= 50, f"only {saves} saves completed across the kills"
        assert kills_mid_save >= 5, f"only {kills_mid_save} kills landed during a save"
    finally:
        if zygote.poll() is None:
            zygote.stdin.write("quit\n")
            zygote.stdin.flush()
            zygote.wait(timeout=30)


def _flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("damage", ["truncate", "bitflip-data", "bitflip-header", "manifest", "missing"])
def test_damaged_checkpoint_is_named_by_verify_and_skipped_by_load(root, damage, caplog, capsys):
    ckpt = Checkpointer(root)
    ckpt.save(1, make_state(1))
    ckpt.save(2, make_state(2))
    data = os.path.join(root, "step-00000002", "rank-00000-of-00001.bin")
    manifest = os.path.join(root, "step-00000002", "manifest.json")
    named = data
    if damage == "truncate":
        os.truncate(data, os.path.getsize(data) - 1000)
    elif damage == "bitflip-data":
        _flip_byte(data, os.path.getsize(data) - 5000)
    elif damage == "bitflip-header":
        _flip_byte(data, 20)
    elif damage == "manifest":
        _flip_byte(manifest, 40)
        named = manifest
    else:
        os.unlink(data)
    with caplog.at_level(logging.WARNING):
        step, state = Checkpointer(root).load_latest()
    assert step == 1
    assert_same(make_state(1), state)
    assert named in caplog.text
    assert cli(["ckpt", "verify", root]) == 1  # (the CLI reconfigures logging: keep it after caplog)
    err = capsys.readouterr().err
    assert named in err and "step-00000001" not in err
    assert os.path.exists(os.path.join(root, "step-00000002")), "a corrupt checkpoint is never deleted automatically"


# ---- a full filesystem: a small loop-mounted ext4 ------------------------------------------


@pytest.fixture
def small_fs():
    """A 24 MiB ext4 filesystem mounted under /var/tmp; unmounted and detached even on failure."""
    missing = loop_missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the full-disk test: {missing}")
        pytest.skip(missing)
    with loop_ext4("/var/tmp", 24 << 20, tag="corral-test-ckfull") as fs:
        yield fs.mountpoint


@pytest.mark.parametrize("blocking", [True, False])
def test_full_filesystem_gives_a_clear_error_and_keeps_the_previous_checkpoint(small_fs, blocking):
    root = os.path.join(small_fs, "job")
    ckpt = Checkpointer(root)
    small = make_state(1)
    ckpt.save(1, small)
    big = {"w": torch.randn(40 << 18)}  # 40 MiB on a 24 MiB filesystem
    with pytest.raises(CheckpointError, match="no space left on device") as info:
        ckpt.save(2, big, blocking=blocking)
        ckpt.wait()
    assert "untouched" in str(info.value)
    assert sorted(os.listdir(root)) == ["LATEST", "step-00000001"], "the failed save's staging dir is removed"
    step, state = Checkpointer(root).load_latest()
    assert step == 1
    assert_same(small, state)
    assert scan(root, full=True).problems == []
    ckpt.save(3, make_state(3))  # space is back: saving works again
    assert Checkpointer(root).load_latest()[0] == 3

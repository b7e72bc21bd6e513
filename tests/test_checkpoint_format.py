"""Checkpoint file format, manifest, retention and path policy: exact round trips, tamper detection."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from launcher.checkpoint import Checkpointer, CheckpointError, CheckpointPathError, layout
from launcher.checkpoint.fsinfo import parse_mountinfo, volatile_reasons
from launcher.checkpoint.inspect import scan
from launcher.checkpoint.manifest import FileRecord, Manifest
from launcher.checkpoint.retention import steps_to_remove
from tests.ckpt_helpers import assert_same, make_state, remove_dir, unique_dir


@pytest.fixture
def root():
    path = unique_dir("ckfmt")
    yield os.path.join(path, "job")
    remove_dir(path)


ALL_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.complex64,
    torch.complex128,
    torch.float8_e4m3fn,
    torch.uint16,
]


def _tensor(dtype: torch.dtype, shape) -> torch.Tensor:
    """Random bit patterns (NaNs and all) of each dtype; bools only 0/1, their only valid bytes."""
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, dtype=torch.bool)
    raw = torch.randint(
        0, 255, (int(torch.tensor(shape).prod()) * torch.empty((), dtype=dtype).element_size(),), dtype=torch.uint8
    )
    return raw.view(dtype).reshape(shape) if shape else raw.view(dtype).reshape(())


def test_round_trip_every_dtype_shape_and_python_value(root):
    state = {f"{d}".removeprefix("torch."): _tensor(d, [3, 5]) for d in ALL_DTYPES}
    shared = torch.randn(6, 4)
    state["zero_dim"] = torch.tensor(7.25, dtype=torch.bfloat16)
    state["empty"] = torch.empty(0, 3)
    state["non_contiguous"] = shared.t()
    state["strided"] = torch.arange(100.0)[::7]
    state["conj"] = torch.randn(4, dtype=torch.complex64).conj()
    state["big"] = torch.randn(3 << 18)  # 3 MiB: written straight from the tensor's memory
    state["nested"] = {"a": [shared, (shared, {"deep": torch.ones(2, dtype=torch.int16)})], "again": shared}
    state["python"] = {
        "int": 2**70,
        "float": 0.1,
        "str": "é\n'\"",
        "bytes": b"\x00\xff",
        "none": None,
        "set": {1, 2},
        "t": (1,),
    }
    ckpt = Checkpointer(root)
    for blocking in (True, False):
        step = 1 if blocking else 2
        ckpt.save(step, state, blocking=blocking)
        ckpt.wait()
        got = ckpt.load(step)
        for k in state:
            assert_same(state[k], got[k], k) if k != "python" else None
        assert got["python"] == state["python"]
        assert got["nested"]["a"][0] is got["nested"]["again"], "a tensor referenced twice comes back as one object"
    assert ckpt.load_latest()[0] == 2


def test_async_snapshot_is_taken_at_save_time(root):
    ckpt = Checkpointer(root)
    state = {"w": torch.zeros(1 << 20), "n": [1]}
    ckpt.save(5, state, blocking=False)
    state["w"].add_(1)  # the training loop goes on mutating right away
    state["n"].append(2)
    ckpt.wait()
    got = ckpt.load(5)
    assert torch.count_nonzero(got["w"]) == 0 and got["n"] == [1]


def test_layout_is_plain_files_no_symlinks(root):
    ckpt = Checkpointer(root, write_latest=True)
    ckpt.save(500, make_state(500))
    assert sorted(os.listdir(root)) == ["LATEST", "step-00000500"]
    assert open(os.path.join(root, "LATEST")).read() == "step-00000500\n"
    step_dir = os.path.join(root, "step-00000500")
    assert sorted(os.listdir(step_dir)) == ["manifest.json", "rank-00000-of-00001.bin"]
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            assert not os.path.islink(os.path.join(dirpath, n))
    m = json.load(open(os.path.join(step_dir, "manifest.json")))
    assert m["format"] == "corral-checkpoint" and m["version"] == 1 and m["step"] == 500 and m["world_size"] == 1
    assert m["files"][0]["size"] == os.path.getsize(os.path.join(step_dir, "rank-00000-of-00001.bin"))
    assert {"created_unix", "metadata", "checksum", "manifest_crc32"} <= set(m)


def test_metadata_is_stored_and_must_be_json(root):
    ckpt = Checkpointer(root)
    ckpt.save(1, {"x": 1}, metadata={"loss": 0.5, "tag": "warmup"})
    assert scan(root).checkpoints[0].manifest.metadata == {"loss": 0.5, "tag": "warmup"}
    with pytest.raises(TypeError):
        ckpt.save(2, {"x": 1}, metadata={"bad": object()})


def test_discovery_ignores_latest_and_hidden_dirs(root):
    ckpt = Checkpointer(root)
    ckpt.save(1, {"v": 1})
    ckpt.save(2, {"v": 2})
    with open(os.path.join(root, "LATEST"), "w") as f:
        f.write("step-00000001\n")  # stale or wrong: never trusted
    os.mkdir(os.path.join(root, ".staging-step-00000003"))
    assert ckpt.load_latest() == (2, {"v": 2})


def test_manifest_detects_tampering():
    m = Manifest(step=3, world_size=1, files=[FileRecord("rank-00000-of-00001.bin", 0, 10, 123)])
    data = m.to_bytes()
    assert Manifest.from_bytes(data) == m
    with pytest.raises(ValueError, match="checksum mismatch"):
        Manifest.from_bytes(data.replace(b'"step": 3', b'"step": 4'))
    with pytest.raises(ValueError, match="unreadable JSON"):
        Manifest.from_bytes(data[: len(data) // 2])


def test_saving_an_existing_valid_step_is_refused(root):
    ckpt = Checkpointer(root)
    ckpt.save(7, {"v": 1})
    with pytest.raises(CheckpointError, match="never overwritten"):
        ckpt.save(7, {"v": 2})
    assert ckpt.load(7) == {"v": 1}


def test_a_corrupt_step_in_the_way_is_set_aside_not_deleted(root):
    ckpt = Checkpointer(root)
    ckpt.save(7, {"v": 1})
    os.unlink(os.path.join(root, "step-00000007", "manifest.json"))
    ckpt.save(7, {"v": 2})
    assert ckpt.load(7) == {"v": 2}
    assert any(n.startswith("step-00000007.invalid-") for n in os.listdir(root))


def test_bad_steps_and_policies_are_rejected(root):
    ckpt = Checkpointer(root)
    for bad in (-1, 1.0, True, "3"):
        with pytest.raises(ValueError):
            ckpt.save(bad, {})
    with pytest.raises(ValueError):
        Checkpointer(root, keep_last=0)
    with pytest.raises(ValueError):
        Checkpointer(root, max_write_mibps=0)


def test_async_error_surfaces_at_wait_and_next_call(root):
    ckpt = Checkpointer(root)
    ckpt.save(1, {"v": 1})
    os.rename(root, root + ".moved")
    with open(root, "w") as f:  # the root is now a file: the background save must fail
        f.write("x")
    ckpt.save(2, {"v": torch.ones(10)}, blocking=False)
    with pytest.raises(CheckpointError, match="step 2 not saved"):
        ckpt.wait()
    ckpt.wait()  # reported once
    ckpt.save(3, {"v": 3}, blocking=False)
    with pytest.raises(CheckpointError, match="step 3 not saved"):
        ckpt.save(4, {"v": 4})  # the next call raises the previous error
    os.unlink(root)
    os.rename(root + ".moved", root)


@pytest.mark.parametrize(
    ("steps", "keep_last", "keep_every", "removed"),
    [
        ([1, 2, 3, 4, 5], 2, None, [1, 2, 3]),
        ([100, 200, 300, 400, 500], 2, 200, [100, 300]),
        ([1, 2, 3], None, None, []),
        ([5, 10, 15, 16], None, 5, []),
        ([5, 10, 15, 16, 17], None, 5, [16]),
        ([3], 1, 1000, []),
        ([], 1, None, []),
    ],
)
def test_retention_policy(steps, keep_last, keep_every, removed):
    assert steps_to_remove(steps, keep_last, keep_every) == removed


def test_retention_keeps_newest_and_never_touches_corrupt_ones(root):
    ckpt = Checkpointer(root, keep_last=2, keep_every=10)
    for step in (10, 11, 12):
        ckpt.save(step, {"s": step})
    with open(os.path.join(root, "step-00000011", "rank-00000-of-00001.bin"), "ab") as f:
        f.write(b"junk")  # step 11 is now invalid: it must stay for inspection
    ckpt.save(13, {"s": 13})
    ckpt.save(14, {"s": 14})
    names = sorted(n for n in os.listdir(root) if n.startswith("step-"))
    assert names == ["step-00000010", "step-00000011", "step-00000013", "step-00000014"]


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:21 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
30 22 0:40 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw,lowerdir=a
31 22 0:41 / /mnt/my\\040disk rw - ext4 /dev/vdb rw
32 22 0:42 / /scratch rw - tmpfs tmpfs rw
"""


def test_mountinfo_and_volatile_paths():
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts][-2] == "/mnt/my disk"
    assert volatile_reasons("/var/ckpt", mounts) == []
    assert volatile_reasons("/mnt/my disk/ckpt", mounts) == []
    assert "tmpfs" in volatile_reasons("/scratch/job", mounts)[0]
    assert "overlay" in volatile_reasons("/var/lib/docker/overlay2/x/merged/ck", mounts)[0]
    assert "under /tmp" in volatile_reasons("/tmp/ck", mounts)[0]
    assert volatile_reasons("/tmpfoo", mounts) == []


def test_volatile_roots_are_refused_unless_allowed(caplog, monkeypatch):
    monkeypatch.delenv("CORRAL_CKPT_ALLOW_VOLATILE", raising=False)
    target = f"/dev/shm/corral-ck-{os.getpid()}"
    with pytest.raises(CheckpointPathError, match="tmpfs"):
        Checkpointer(target)
    with pytest.raises(CheckpointPathError, match="under /tmp"):
        Checkpointer(f"/tmp/corral-ck-{os.getpid()}/job")
    with caplog.at_level(logging.WARNING):
        ckpt = Checkpointer(target, allow_volatile=True)
    try:
        assert "may not survive" in caplog.text
        ckpt.save(1, {"v": 1})
    finally:
        remove_dir(target)


def test_from_env_reads_root_and_policy(root, monkeypatch):
    monkeypatch.setenv("CORRAL_CKPT_DIR", root)
    monkeypatch.setenv("CORRAL_CKPT_POLICY", json.dumps({"keep_last": 1, "keep_every": None, "max_write_mibps": 512}))
    ckpt = Checkpointer.from_env()
    ckpt.save(1, {"v": 1})
    ckpt.save(2, {"v": 2})
    assert ckpt.steps() == [2]
    monkeypatch.delenv("CORRAL_CKPT_DIR")
    with pytest.raises(CheckpointPathError, match="CORRAL_CKPT_DIR"):
        Checkpointer.from_env()


def test_rate_cap_paces_writes(root):
    """4 MiB at 8 MiB/s takes about half a second; uncapped it takes a fraction of that."""
    import time

    ckpt = Checkpointer(root, max_write_mibps=8)
    t = time.monotonic()
    ckpt.save(1, {"w": torch.zeros(1 << 20)})
    assert time.monotonic() - t >= 0.4
    assert layout.step_dirname(1) in os.listdir(root)


def test_library_import_pulls_no_cli_and_verify_pulls_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; from launcher.checkpoint.inspect import scan; no_torch = 'torch' not in sys.modules; "
        "from launcher.checkpoint import Checkpointer; "
        "print('OK', no_torch, [m for m in ('typer', 'rich', 'launcher.cli', 'pydantic') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "OK True []" in out, out


def test_background_snapshot_with_guarded_optimizer_saves_pre_step_values(root):
    torch.manual_seed(0)
    model = torch.nn.Linear(512, 512)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ckpt = Checkpointer(root)
    handle = ckpt.guard(opt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt.save(1, {"model": model.state_dict()}, blocking=False, snapshot="background")
    model(torch.randn(4, 512)).sum().backward()  # forward/backward overlap the copy
    opt.step()  # waits for the snapshot, then changes every parameter
    ckpt.wait()
    handle.remove()
    assert not torch.equal(model.weight, before["weight"])
    assert_same(before, ckpt.load(1)["model"])
    with pytest.raises(ValueError, match="blocking=False"):
        ckpt.save(2, {}, snapshot="background")


def test_host_sources_hand_out_cpu_tensors_in_plan_order_without_copies():
    from launcher.checkpoint.shardfile import host_sources, plan_shard

    a, b = torch.arange(10), torch.ones(3, 4)
    plan = plan_shard({"a": a, "empty": torch.empty(0), "b": b, "n": 5})
    got = list(host_sources(plan))
    assert [t.data_ptr() for t in got] == [a.data_ptr(), b.data_ptr()], (
        "zero-byte tensors skipped, CPU tensors not copied"
    )

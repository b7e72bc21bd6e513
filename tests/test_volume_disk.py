"""The volume benchmark on real filesystems: results, cleanup on signals, refusals, no-O_DIRECT fallback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess

import pytest

from benchmarks.volume.plan import build_plan
from benchmarks.volume.run import run_plan
from launcher.cli import main
from tests.infra.capped_volume import loop_ext4, loop_missing
from tests.volume_helpers import Worker, remove_tree, unique_dir

is_root = os.geteuid() == 0


@pytest.fixture
def voldir():
    d = unique_dir()
    yield d
    remove_tree(d)


@pytest.mark.parametrize("engine", ["aio", "threads"])
def test_local_run_measures_every_mode_and_leaves_nothing(voldir, engine, monkeypatch):
    from benchmarks.volume import aio

    if engine == "aio" and not aio.available():
        pytest.skip("no kernel AIO here")
    monkeypatch.setenv("CORRAL_VOLUME_ENGINE", engine)
    plan = build_plan(str(voldir), size="16M", bs="1M", jobs=2, iodepth=4, compare_fio=shutil.which("fio") is not None)
    doc = run_plan(plan, node="n1")
    assert [r["mode"] for r in doc["results"]] == ["seqwrite", "seqread", "randread", "randwrite"]
    for r in doc["results"]:
        assert r["bytes"] == 16 << 20 and r["direct"] is True and r["node"] == "n1" and r["engine"] == engine
        assert r["mib_per_s"] > 0 and r["iops"] == pytest.approx(r["ops"] / r["elapsed_s"], rel=1e-3)
        assert r["series_mib_per_s"] and 0 < r["lat_p50_us"] <= r["lat_p99_us"]
    if plan.compare_fio:
        assert [f["mode"] for f in doc["fio"]] == ["seqwrite", "seqread", "randread", "randwrite"]
        assert all(f["bytes"] == 16 << 20 and f["corral_over_fio"] > 0 for f in doc["fio"])
    assert os.listdir(voldir) == []


def test_cli_writes_json_and_plot(voldir, tmp_path, capsys):
    out, png = tmp_path / "v.json", tmp_path / "v.png"
    rc = main(
        [
            "bench",
            "volume",
            str(voldir),
            "--size",
            "8M",
            "--mode",
            "seqwrite,randread",
            "--duration",
            "1",
            "--limit-mibps",
            "128",
            "--json-out",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["path"] == str(voldir) and doc["units"]["mib_per_s"].startswith("MiB/s")
    assert {r["mode"] for r in doc["results"]} == {"seqwrite", "randread"}
    assert all(r["verdict"] in ("at limit", "below limit", "above limit") for r in doc["results"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "seqwrite" in capsys.readouterr().out
    assert os.listdir(voldir) == []


def test_compare_fio_says_so_when_fio_is_missing(voldir, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    doc = run_plan(build_plan(str(voldir), size="8M", modes="seqwrite", compare_fio=True), node="n1")
    assert doc["fio"] == [] and "fio is not installed" in doc["fio_status"]


@pytest.mark.parametrize(
    "bad, words",
    [("/dev/null", "raw device"), ("/nonexistent/dir", "no such directory"), (__file__, "not a directory")],
)
def test_refuses_devices_files_and_missing_paths(bad, words, capsys):
    assert main(["bench", "volume", bad, "--size", "8M"]) == 2
    assert words in capsys.readouterr().err


def _direct_ok(d) -> bool:
    try:
        fd = os.open(os.path.join(d, "probe"), os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError as exc:
        assert exc.errno == errno.EINVAL
        return False
    finally:
        if os.path.exists(os.path.join(d, "probe")):
            os.unlink(os.path.join(d, "probe"))
    os.close(fd)
    return True


@pytest.fixture
def memfs(request, voldir):
    """A fresh tmpfs or ramfs mount (unmounted in a finalizer)."""
    if not is_root:
        pytest.skip("mounting needs root")
    fstype = request.param
    subprocess.run(
        ["mount", "-t", fstype, "-o", "size=128m" if fstype == "tmpfs" else "mode=0755", fstype, str(voldir)],
        check=True,
    )
    yield fstype, voldir
    subprocess.run(["umount", str(voldir)], check=True)


@pytest.mark.parametrize("memfs", ["tmpfs", "ramfs"], indirect=True)
def test_filesystem_without_direct_io_falls_back_to_buffered_with_a_notice(memfs, tmp_path):
    """tmpfs refused O_DIRECT before Linux 6.6 and accepts it since; ramfs refuses it: whichever refuses must fall back."""
    fstype, d = memfs
    refuses = not _direct_ok(d)
    out = tmp_path / "r.json"
    w = Worker([str(d), "--size", "8M", "--mode", "seqwrite,seqread", "--out", str(out)])
    rc, _, err = w.finish()
    assert rc == 0, err
    doc = json.loads(out.read_text())
    directs = {r["direct"] for r in doc["results"]}
    if refuses:
        assert directs == {False}
        assert any("does not support O_DIRECT" in n and "buffered" in n for n in doc["notices"])
        assert "does not support O_DIRECT" in err
        assert doc["read_method"].startswith("buffered")
    else:
        assert fstype == "tmpfs" and directs == {True}
    assert os.listdir(d) == []


@pytest.mark.parametrize(
    "sig, module_cli", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGINT, True)]
)
def test_interrupted_run_leaves_no_files(voldir, sig, module_cli):
    w = Worker([str(voldir), "--size", "64M", "--mode", "seqwrite", "--duration", "60"], module_cli=module_cli)
    try:
        w.wait_for(lambda line: "seqwrite: start" in line)
        (wd,) = list(voldir.iterdir())
        assert (wd / "data.bin").exists()
        w.proc.send_signal(sig)
        rc, _, err = w.finish(timeout=30)
    finally:
        w.kill()
    assert rc in (128 + sig, 130) and rc != 0, err
    assert os.listdir(voldir) == [], err


@pytest.fixture
def small_loop_fs():
    """A 32 MiB ext4 filesystem on a loop device under /var/tmp; unmounted and detached on exit."""
    missing = loop_missing()
    if missing:
        pytest.skip(missing)
    with loop_ext4("/var/tmp", 32 << 20, tag="corral-voltest") as fs:
        yield fs.mountpoint


def test_too_small_filesystem_is_refused_up_front(small_loop_fs, capsys):
    before = sorted(os.listdir(small_loop_fs))
    assert main(["bench", "volume", str(small_loop_fs), "--size", "64M"]) == 2
    err = capsys.readouterr().err
    assert "not enough free space" in err and "needs 128M" in err and "smaller --size" in err
    assert sorted(os.listdir(small_loop_fs)) == before

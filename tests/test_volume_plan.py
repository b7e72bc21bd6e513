"""Pure parts of the volume benchmark: plan, fio argv, fio JSON parser, records, aggregate, merge."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from benchmarks.volume import report
from benchmarks.volume.cluster import merge_node_results, worker_args
from benchmarks.volume.engine import ModeRun, percentile
from benchmarks.volume.fio import parse_fio_json
from benchmarks.volume.plan import MODES, build_plan, describe, fio_argv, parse_modes
from benchmarks.volume.worker import parser as worker_parser
from benchmarks.volume.worker import plan_from_args
from launcher.errors import RunFailed, UserError
from tests.infra.golden import check_golden
from tests.infra.hostile import HOSTILE_PATH

DATA = Path(__file__).parent / "data" / "fio"


def test_plan_defaults_follow_fio_conventions():
    p = build_plan("/mnt/data", size="256M", bs="1M", jobs=4, iodepth=8)
    by = {m.mode: m for m in p.modes}
    assert [m.mode for m in p.modes] == list(MODES)
    assert by["seqwrite"].jobs == 1 and by["seqwrite"].bs == 1 << 20 and by["seqwrite"].threads == 8
    assert by["randread"].jobs == 4 and by["randread"].bs == 4096 and by["randread"].threads == 32
    assert by["randread"].total_ops == (256 << 20) // 4096
    assert p.required_bytes == (256 << 20) + (64 << 20)
    assert p.read_method() == "O_DIRECT"
    assert "buffered" in build_plan("/x", size="8M", direct=False).read_method()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"bs": "1000"}, "multiple of 4K"),
        ({"size": "1M", "bs": "4M"}, "multiple of --bs"),
        ({"size": "3M", "bs": "2M"}, "multiple of --bs"),
        ({"jobs": 0}, "--jobs"),
        ({"iodepth": 0}, "--iodepth"),
        ({"modes": "seqwrite,bogus"}, "unknown mode 'bogus'"),
        ({"modes": ","}, "--mode"),
        ({"duration_s": 0}, "--duration"),
        ({"limit_mibps": -1}, "--limit-mibps"),
        ({"size": "lots"}, "--size"),
    ],
)
def test_plan_rejects_bad_values_with_a_message(kwargs, words):
    with pytest.raises(UserError, match=words):
        build_plan("/x", **kwargs)


def test_modes_keep_order_and_drop_repeats():
    assert parse_modes("randread, seqwrite,randread") == ("randread", "seqwrite")


def _golden_text() -> str:
    p = build_plan("/mnt/vol", size="1G", bs="1M", jobs=4, iodepth=8)
    timed = build_plan("/mnt/vol", size="256M", bs="256K", jobs=2, iodepth=4, duration_s=5, direct=False)
    lines = [shlex.join(fio_argv(m, "/mnt/vol/.corral-volume-x/data.bin")) for m in p.modes + timed.modes]
    return "\n".join(lines) + "\n"


def test_fio_argv_matches_golden_file():
    check_golden("volume_fio_argv.txt", _golden_text())


def test_fio_argv_one_pass_random_moves_the_file_size_in_all_jobs():
    m = build_plan("/x", size="1G", jobs=4, modes="randread").modes[0]
    argv = fio_argv(m, "/x/f")
    assert "--io_size=268435456" in argv and "--numjobs=4" in argv and "--iodepth=8" in argv
    assert "--end_fsync=1" not in argv
    w = build_plan("/x", size="1G", modes="seqwrite").modes[0]
    assert "--end_fsync=1" in fio_argv(w, "/x/f") and "--numjobs=1" in fio_argv(w, "/x/f")


@pytest.mark.parametrize(
    "name, mode, mib, iops, p50",
    [
        ("write.json", "seqwrite", 932067555 / 2**20, 888.888889, 7766.016),
        ("randread.json", "randread", 248551348 / 2**20, 60681.481481, 514.048),
    ],
)
def test_parse_recorded_fio_output(name, mode, mib, iops, p50):
    r = parse_fio_json((DATA / name).read_text(), mode)
    assert r.mib_per_s == pytest.approx(mib)
    assert r.iops == pytest.approx(iops)
    assert r.lat_p50_us == pytest.approx(p50)
    assert r.lat_p99_us is not None and r.lat_p99_us >= r.lat_p50_us
    assert r.bytes == 32 << 20
    assert r.mb_per_s == pytest.approx(mib * 2**20 / 1e6)


def test_parse_fio_skips_warnings_and_reads_the_right_direction():
    text = (
        "fio: this platform does not support process shared mutexes, forcing use of threads\n"
        + (DATA / "read.json").read_text()
    )
    r = parse_fio_json(text, "seqread")
    assert r.mib_per_s > 0 and r.bytes == 32 << 20
    rw = parse_fio_json((DATA / "randwrite.json").read_text(), "randwrite")
    assert rw.iops > 0
    with pytest.raises(ValueError):
        parse_fio_json("fio: no such option\n", "seqread")


def test_percentile_nearest_rank():
    xs = list(range(1, 101))
    assert percentile(xs, 50) == 50 and percentile(xs, 99) == 99 and percentile(xs, 100) == 100
    assert percentile([7], 99) == 7 and percentile([], 50) is None


def _run(mode="seqwrite", series=(100.0,) * 5, mib=100.0):
    spec = next(m for m in build_plan("/x", size="64M", modes=mode).modes)
    elapsed = 5.0
    nbytes = int(mib * 2**20 * elapsed)
    return ModeRun(
        spec=spec,
        bytes=nbytes,
        ops=nbytes // spec.bs,
        elapsed_s=elapsed,
        series_mib_per_s=list(series),
        lat_p50_us=10.0,
        lat_p99_us=20.0,
    )


def test_record_has_the_issue_schema_and_explicit_units():
    rec = report.mode_record(_run(), node="n1", limit_mibps=100)
    for key in (
        "node",
        "mode",
        "bs_bytes",
        "jobs",
        "direct",
        "mib_per_s",
        "mb_per_s",
        "iops",
        "lat_p50_us",
        "lat_p99_us",
        "series_mib_per_s",
        "throttle",
        "verdict",
    ):
        assert key in rec
    assert rec["mb_per_s"] == pytest.approx(100 * 2**20 / 1e6)
    assert rec["verdict"] == "at limit" and rec["throttle"] is None
    json.dumps(rec)


def test_record_judges_the_sustained_rate_after_a_burst():
    run = _run(series=[400, 400, 400, 128, 128, 128, 128, 90], mib=230)
    rec = report.mode_record(run, node="n1", limit_mibps=128)
    assert rec["throttle"]["change_at_s"] == 3.0
    assert rec["sustained_mib_per_s"] == pytest.approx(128)
    assert rec["verdict"] == "at limit"


def test_aggregate_sums_nodes_per_mode():
    rs = [report.mode_record(_run(mib=m), node=n, limit_mibps=128) for n, m in (("a", 60.0), ("b", 70.0))]
    (agg,) = report.aggregate(rs, 128)
    assert (
        agg["nodes"] == 2 and agg["mib_per_s"] == pytest.approx(130) and agg["min_node_mib_per_s"] == pytest.approx(60)
    )
    assert agg["verdict"] == "at limit"


def test_table_renders_with_fio_ratios():
    from rich.console import Console

    rec = report.mode_record(_run(), node="n1", limit_mibps=None)
    doc = {
        "path": "/x",
        "results": [rec],
        "fio": [{"node": "n1", "mode": "seqwrite", "mib_per_s": 50.0, "iops": 50.0, "corral_over_fio": 2.0}],
    }
    con = Console(width=200, record=True)
    con.print(report.render_table(doc))
    text = con.export_text()
    assert "seqwrite" in text and "2.00" in text and "100.0" in text


HOSTILE = "-" + HOSTILE_PATH + "\nz:1"  # a leading '-' (an option to a careless argv) and fio's ':' separator


def test_worker_args_round_trip_through_the_worker_parser():
    plan = build_plan(
        HOSTILE,
        size="64M",
        bs="256K",
        jobs=3,
        iodepth=2,
        modes="randwrite,seqread",
        duration_s=2.5,
        direct=False,
        limit_mibps=128,
        compare_fio=True,
    )
    args = worker_args(plan)
    again = plan_from_args(worker_parser().parse_args(args))
    assert again == plan
    # quoted once at the edge, the hostile path survives a shell unchanged
    assert shlex.split(shlex.join(args))[-1] == HOSTILE
    assert f"--filename={HOSTILE[:-2]}\\:1/data.bin" in fio_argv(plan.modes[0], HOSTILE + "/data.bin")


def test_describe_mentions_fsync_and_threads():
    text = "\n".join(describe(build_plan("/x", size="64M")))
    assert "closing fsync counted" in text and "4 job(s) x iodepth 8 = 32 threads" in text and "needs 128M free" in text


def test_merge_takes_each_nodes_document_and_reports_missing_ones(tmp_path):
    plan = build_plan("/x", size="64M", modes="seqwrite", limit_mibps=128)
    docs = {"c": None}
    for node, mib in (("a", 60.0), ("b", 70.0)):
        doc = {"results": [report.mode_record(_run(mib=mib), node=node, limit_mibps=128)], "notices": []}
        docs[node] = json.dumps(doc)
    merged = merge_node_results(str(tmp_path), ["a", "b", "c"], plan, {"c": 2}, docs)
    assert [r["node"] for r in merged["results"]] == ["a", "b"]
    assert merged["aggregate"][0]["mib_per_s"] == pytest.approx(130)
    assert merged["failed_nodes"] and "c: no result (exit status 2)" in merged["failed_nodes"][0]
    with pytest.raises(RunFailed):
        merge_node_results(str(tmp_path), ["c"], plan, {}, {})


def test_cli_help_stays_light():
    import subprocess
    import sys

    code = "import sys; from launcher.cli import main; main(['bench', 'volume', '--help']); print([m for m in ('matplotlib', 'numpy', 'benchmarks.volume.engine') if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.stdout.strip().endswith("[]"), out.stdout[-300:]


def test_dry_run_prints_the_plan_and_fio_lines_without_touching_the_disk(tmp_path, capsys):
    from launcher.cli import main

    target = tmp_path / "vol"
    target.mkdir()
    rc = main(
        ["bench", "volume", str(target), "--size", "64M", "--mode", "seqread,randwrite", "--compare-fio", "--dry-run"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert (
        "seqread: bs 1M, 1 job(s) x iodepth 8" in out and "randwrite: bs 4K, 4 job(s) x iodepth 8 = 32 threads" in out
    )
    assert "fio: fio --name=corral-seqread" in out and "--rw=randwrite" in out
    assert os.listdir(target) == []

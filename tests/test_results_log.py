"""docs/results/: one file per measurement, each run a dated entry in it (perf/results_log.py), and
every results path the docs and perf scripts name exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from perf import overhead_stats, results_log

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
DAY = 86400.0
T0 = 1795000000.0  # 2026-11-18, 11:06:40 UTC


def append(path: Path, value: int, now: float) -> dict:
    return results_log.append_run(
        path, {"value": value}, measurement="m", script="perf/x.py", command="python -m perf.x", now=now
    )


def test_append_creates_the_file_then_adds_dated_runs(tmp_path):
    path = tmp_path / "sub" / "m.json"
    first = append(path, 1, T0)
    second = append(path, 2, T0 + 60)
    third = append(path, 3, T0 + DAY)
    data = results_log.read(path)
    assert (data["schema"], data["measurement"], data["script"]) == (results_log.SCHEMA, "m", "perf/x.py")
    assert [r["id"] for r in data["runs"]] == ["2026-11-18/1", "2026-11-18/2", "2026-11-19/1"]
    assert [r["result"]["value"] for r in data["runs"]] == [1, 2, 3]
    assert first["time"] == "11:06 UTC" and second["date"] == "2026-11-18" and third["date"] == "2026-11-19"
    assert set(first["machine"]) == {"cores", "load_average"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]  # no temporary file left beside it


def test_runs_are_selected_by_id_and_the_newest_is_the_latest(tmp_path):
    path = tmp_path / "m.json"
    for i in range(3):
        append(path, i, T0 + i)
    assert [r["result"]["value"] for r in results_log.select_runs(str(path))] == [0, 1, 2]
    assert [r["result"]["value"] for r in results_log.select_runs(f"{path}@2026-11-18/3,2026-11-18/1")] == [2, 0]
    assert results_log.latest_result(path) == {"value": 2}
    with pytest.raises(ValueError, match="no run 2026-11-18/9"):
        results_log.select_runs(f"{path}@2026-11-18/9")


def test_a_file_of_another_shape_is_refused_not_appended_to(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not a measurement file"):
        append(path, 1, T0)
    assert json.loads(path.read_text()) == {"rows": []}


def test_overhead_stats_pools_named_runs_and_appends_the_pooled_result(tmp_path):
    runs = tmp_path / "overhead.json"
    for seed in (1, 2):
        blocks = {
            "bare": [1.0 + 0.01 * i for i in range(6)],
            "harness_inplace": [1.02 + 0.01 * i for i in range(6)],
            "harness_outofplace": [1.03] * 6,
        }
        append(runs, seed, T0 + seed)
        data = results_log.read(runs)
        data["runs"][-1]["result"] = {"rows": [{"size_bytes": 1 << 20, "block_seconds": blocks}]}
        runs.write_text(json.dumps(data))
    pooled = tmp_path / "pooled.json"
    assert overhead_stats.main([f"{runs}@2026-11-18/1,2026-11-18/2", "--out", str(pooled), "--conditions", "test"]) == 0
    (entry,) = results_log.read(pooled)["runs"]
    assert entry["conditions"] == "test" and entry["command"].startswith("python -m perf.overhead_stats ")
    (row,) = entry["result"]["rows"]
    assert row["comparisons"]["inplace_vs_bare"]["runs"] == 2 and row["comparisons"]["inplace_vs_bare"]["blocks"] == 12


MEASUREMENT_FILES = sorted(RESULTS.glob("*.json"))


@pytest.mark.parametrize("path", MEASUREMENT_FILES, ids=lambda p: p.name)
def test_every_results_file_is_one_measurement_with_dated_runs(path):
    data = results_log.read(path)
    assert data["measurement"] and data["script"] and data["runs"], path
    seen = set()
    for run in data["runs"]:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", run["date"]), run.get("id")
        assert run["id"].startswith(run["date"] + "/") and run["id"] not in seen
        seen.add(run["id"])
        assert run["command"] and "conditions" in run and isinstance(run["result"], dict), run["id"]
    assert [r["date"] for r in data["runs"]] == sorted(r["date"] for r in data["runs"]), "runs oldest first"
    if "log" in data:
        assert (RESULTS / data["log"]).exists(), data["log"]


def test_the_index_names_every_measurement_file():
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in MEASUREMENT_FILES if f"({p.name})" not in index]
    assert not missing, f"docs/results/README.md does not index {missing}"


PLACEHOLDER = re.compile(r"[A-Z]{3,}")
"""A name a reader fills in (``docs/results/NAME.json``, ``gpu-check-STAMP-GPU.json``)."""


def test_every_results_path_named_in_the_docs_and_perf_scripts_exists():
    named = re.compile(r"docs/results/[\w./-]*\w\.(?:json|md|png)")
    sources = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "perf").glob("*.py"))]
    missing = sorted(
        {
            f"{src.relative_to(REPO)}: {m}"
            for src in sources
            for m in named.findall(src.read_text())
            if not (REPO / m).exists() and not PLACEHOLDER.search(m)
        }
    )
    assert not missing, missing


def test_a_product_commands_json_is_appended_as_a_run(tmp_path):
    written = tmp_path / "ar.json"
    written.write_text(json.dumps({"avg_busbw_gbps": 0.4}))
    file = tmp_path / "bench-allreduce-x.json"
    cmd = "corral bench allreduce -c c.yaml --json-out ar.json"
    argv = [str(file), str(written), "--command", cmd, "--measurement", "all-reduce on x", "--conditions", "quiet"]
    assert results_log.main(argv) == 0
    assert results_log.main(argv[:4]) == 0  # the file exists now: no --measurement needed
    data = results_log.read(file)
    assert data["script"] == "corral bench allreduce" and data["measurement"] == "all-reduce on x"
    assert [r["result"] for r in data["runs"]] == [{"avg_busbw_gbps": 0.4}] * 2
    assert [r["conditions"] for r in data["runs"]] == ["quiet", ""]
    with pytest.raises(SystemExit):
        results_log.main([str(tmp_path / "new.json"), str(written), "--command", cmd])


def test_the_recorded_command_is_the_one_that_reproduces_the_run(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert results_log.current_command("perf.x", ["--note", "a b"]) == "python -m perf.x --note 'a b'"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert results_log.current_command("perf.x", ["--blocks", "8"]) == (
        "torchrun --standalone --nproc-per-node 2 -m perf.x --blocks 8"
    )
    monkeypatch.setenv("WORLD_SIZE", "6")
    assert results_log.current_command("perf.x", []).startswith("torchrun --nnodes 3 --nproc-per-node 2 -m perf.x")

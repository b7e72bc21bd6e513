"""`corral bench allreduce`'s stdout must read as nccl-tests output to the tools that parse it.

Three real consumers' rules are re-implemented here and run on corral's output and on a real
nccl-tests log (tests/data/nccl/SOURCE.md names its source). Each re-implementation follows the
real code line for line, including which line it picks where several match, and was checked
against that code: the real parser was run by hand, outside this repository, on the same inputs
as the cases below, and what it read is recorded in ``tests/data/nccl/consumer_reference.json``
(SOURCE.md says at which commits and how). The tests compare each re-implementation with that
record, so a re-implementation that drifts from the real code fails here.

1. Microsoft SuperBench, repository microsoft/superbenchmark, path
   ``superbench/benchmarks/micro_benchmarks/cuda_nccl_bw_performance.py``,
   ``CudaNcclBwBenchmark._process_raw_result``: re-implemented as ``superbench_nccl_bw``.
2. Azure HPC node health checks, repository Azure/azurehpc-health-checks, path
   ``customTests/azure_nccl_allreduce.nhc``, ``check_nccl_allreduce``: re-implemented as
   ``azure_nhc_allreduce``.
3. FlagPerf, repository FlagOpen/FlagPerf, path ``base/toolkits/interconnect-MPI_intraserver/dcu/BW/main.sh``:
   ``grep "# Avg bus bandwidth" LOG | awk '{print $NF}'``, re-implemented as ``flagperf_avg_busbw``
   (a one-line grep, checked by reading it; not in the recorded reference).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.allreduce import table as nccl_table

DATA = Path(__file__).parent / "data" / "nccl"
REAL_LOG = DATA / "all_reduce_perf_h100_2x8.log"
REFERENCE = json.loads((DATA / "consumer_reference.json").read_text(encoding="utf-8"))


@dataclass
class SuperBenchReading:
    """What SuperBench's parser keeps: per size, the busbw/algbw/time it would record, and the marker lines it chose."""

    rows: dict[int, dict[str, float]]
    out_of_place_line: int
    out_of_bounds_line: int


def superbench_nccl_bw(raw_output: str, in_place: bool = False) -> SuperBenchReading | None:
    """SuperBench's ``CudaNcclBwBenchmark._process_raw_result``, followed line for line: repository
    microsoft/superbenchmark, ``superbench/benchmarks/micro_benchmarks/cuda_nccl_bw_performance.py``
    (commit 700d6501f110), checked against that code run on the same inputs (consumer_reference.json).
    None where it logs 'The result format is invalid' and returns False.

    Its rules: the rows lie between the LAST line holding ``out-of-place`` and the LAST line holding
    ``Out of bounds values``; the columns are found by name in the first header line there holding
    ``time`` and ``busbw`` (out-of-place: first occurrence counted from the end; in-place: last); a row is
    a line whose first field starts with a digit; size 0 is skipped; any exception, a missing marker or
    no busbw read makes the output invalid.
    """
    content = raw_output.splitlines()
    recorded: dict[int, dict[str, float]] = {}
    busbw_out = -1.0
    out_of_place_index = -1
    out_of_bound_index = -1
    try:
        for index, line in enumerate(content):
            if "out-of-place" in line:
                out_of_place_index = index
            if "Out of bounds values" in line:
                out_of_bound_index = index
        content = content[out_of_place_index + 1 : out_of_bound_index]
        size_index = -1
        columns: dict[str, int] | None = None
        for line in content:
            if "time" in line and "busbw" in line:
                fields = re.sub(r" +", " ", line[1:].strip(" ")).split(" ")
                size_index = fields.index("size")
                if in_place:
                    columns = {name: -1 - list(reversed(fields)).index(name) for name in ("time", "busbw", "algbw")}
                else:
                    columns = {name: fields.index(name) - len(fields) for name in ("time", "busbw", "algbw")}
                break
        if size_index != -1 and columns is not None:
            for line in content:
                fields = re.sub(r" +", " ", line.strip(" ")).split(" ")
                if len(fields) == 0 or not re.match(r"\d+", fields[0]):
                    continue
                size = int(fields[size_index])
                if size != 0:
                    busbw_out = float(fields[columns["busbw"]])
                    recorded[size] = {name: float(fields[i]) for name, i in columns.items()}
    except BaseException:  # noqa: B036 - the real parser catches BaseException and reports the format invalid
        return None
    if out_of_place_index == -1 or out_of_bound_index == -1 or busbw_out == -1:
        return None
    return SuperBenchReading(recorded, out_of_place_index, out_of_bound_index)


@dataclass
class NhcReading:
    """What Azure NHC's ``check_nccl_allreduce`` concludes from one run's output."""

    out_of_bounds_failed: bool
    avg_bus_bw: str | None
    line: int | None


def azure_nhc_allreduce(output: str) -> NhcReading:
    """Azure NHC's ``check_nccl_allreduce``, followed line for line: repository Azure/azurehpc-health-checks,
    ``customTests/azure_nccl_allreduce.nhc`` (commit 0e0a1ac26a64), checked against that script run in
    bash on the same inputs (consumer_reference.json).

    Its rules: the output split into non-empty lines; going from the top, a line holding ``FAILED`` fails
    the check ('Out of bounds values failed'); the FIRST line holding ``bandwidth`` is split on blanks
    and its sixth word (``${line[5]}``: ``# Avg bus bandwidth : VALUE``) is the measured bus bandwidth,
    compared with the expected one; nothing after that line is read.
    """
    lines = [line for line in output.split("\n") if line]
    for index, line in enumerate(lines):
        if "FAILED" in line:
            return NhcReading(True, None, index)
        if "bandwidth" in line:
            words = line.split()
            return NhcReading(False, words[5] if len(words) > 5 else "", index)
    return NhcReading(False, None, None)


def flagperf_avg_busbw(log_text: str) -> list[str]:
    """FlagPerf's ``grep "# Avg bus bandwidth" LOG | awk '{print $NF}'`` (repository FlagOpen/FlagPerf,
    ``base/toolkits/interconnect-MPI_intraserver/dcu/BW/main.sh``): the last field of each matching line."""
    return [line.split()[-1] for line in log_text.splitlines() if "# Avg bus bandwidth" in line and line.split()]


def sample_result() -> dict:
    from tests.test_collective_math import sample_result as sample

    return sample()


def cases() -> dict[str, str]:
    """The inputs the real consumers were run on (names as in consumer_reference.json)."""
    result = sample_result()
    peak_oop = copy.deepcopy(result)
    peak_oop["peak_inplace"] = False
    wrong = copy.deepcopy(result)
    wrong["rows"][2]["wrong"] = 3
    peak_oop_text = nccl_table.render(peak_oop)
    assert peak_oop_text.rstrip().endswith("B, out of place)")
    return {
        "nccl_tests_log": REAL_LOG.read_text(encoding="utf-8"),
        "corral_default": nccl_table.render(result),
        "corral_peak_out_of_place": peak_oop_text,
        "corral_per_iteration": nccl_table.render(result, per_iteration=True),
        "corral_wrong_values": nccl_table.render(wrong),
        # what corral printed before its peak line was reworded: that line held "out-of-place"
        "corral_before_fix_peak_out_of_place": peak_oop_text.replace("B, out of place)", "B, out-of-place)"),
    }


def header_index(text: str) -> int:
    """Index of the table's first header line (the one naming out-of-place and in-place)."""
    return next(i for i, line in enumerate(text.splitlines()) if line.startswith("#") and "in-place" in line)


def test_the_cases_are_the_recorded_ones():
    assert set(cases()) == set(REFERENCE)


@pytest.mark.parametrize("case", sorted(REFERENCE))
@pytest.mark.parametrize("mode", ["out_of_place", "in_place"])
def test_superbench_reimplementation_agrees_with_the_real_parser(case, mode):
    text = cases()[case]
    expected = REFERENCE[case]["superbench"][mode]
    reading = superbench_nccl_bw(text, in_place=mode == "in_place")
    assert (reading is not None) == expected["valid"], f"{case}: real SuperBench said valid={expected['valid']}"
    if reading is not None:
        assert {str(size): row for size, row in reading.rows.items()} == expected["rows"]
        # the marker it keys on is the table's header, the LAST line holding "out-of-place"
        assert reading.out_of_place_line == header_index(text)
        assert "Out of bounds values" in text.splitlines()[reading.out_of_bounds_line]


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_azure_nhc_reimplementation_agrees_with_the_real_check(case):
    expected = REFERENCE[case]["azure_nhc"]
    reading = azure_nhc_allreduce(cases()[case])
    assert (reading.out_of_bounds_failed, reading.avg_bus_bw) == (
        expected["out_of_bounds_failed"],
        expected["avg_bus_bw"],
    )


def test_the_parsers_read_a_real_nccl_tests_log():
    text = REAL_LOG.read_text(encoding="utf-8")
    out_of_place = superbench_nccl_bw(text)
    assert out_of_place is not None and len(out_of_place.rows) == 31
    assert out_of_place.rows[8589934592]["busbw"] == 338.82 and out_of_place.rows[8]["busbw"] == 0.0
    assert superbench_nccl_bw(text, in_place=True).rows[8589934592]["busbw"] == 337.35
    assert azure_nhc_allreduce(text).avg_bus_bw == "70.742"
    assert flagperf_avg_busbw(text) == ["70.742"]


@pytest.mark.parametrize("peak_inplace", [True, False])
def test_superbench_reads_every_size_of_corral_default_output(peak_inplace):
    """Wherever the peak lies, the line naming it after the table must not hide the rows from SuperBench."""
    result = sample_result()
    result["peak_inplace"] = peak_inplace
    text = nccl_table.render(result)
    for in_place in (False, True):
        parsed = superbench_nccl_bw(text, in_place=in_place)
        assert parsed is not None, "SuperBench would report 'The result format is invalid'"
        expected = {r["size_bytes"]: r for r in result["rows"] if bool(r["inplace"]) == in_place}
        assert parsed.rows.keys() == expected.keys()
        for size, row in parsed.rows.items():
            assert row["busbw"] == pytest.approx(expected[size]["busbw_gbps"], abs=0.01)
            assert row["algbw"] == pytest.approx(expected[size]["algbw_gbps"], abs=0.01)


def test_azure_nhc_reads_the_average_not_the_peak():
    """NHC takes the FIRST line holding 'bandwidth': the average, which corral prints before its peak line."""
    result = sample_result()
    reading = azure_nhc_allreduce(nccl_table.render(result))
    assert not reading.out_of_bounds_failed
    assert float(reading.avg_bus_bw) == pytest.approx(result["avg_busbw_gbps"], rel=1e-5)
    assert float(reading.avg_bus_bw) != pytest.approx(result["peak_busbw_gbps"], rel=1e-3)


def test_wrong_values_fail_the_azure_nhc_check():
    result = sample_result()
    result["rows"][0]["wrong"] = 1
    assert azure_nhc_allreduce(nccl_table.render(result)).out_of_bounds_failed


def test_flagperf_grep_reads_corral_average():
    result = sample_result()
    values = flagperf_avg_busbw(nccl_table.render(result))
    assert len(values) == 1 and float(values[0]) == pytest.approx(result["avg_busbw_gbps"], rel=1e-5)


def test_per_iteration_table_would_break_superbench_so_it_is_not_in_the_default_output():
    result = sample_result()
    assert superbench_nccl_bw(nccl_table.render(result, per_iteration=True)) is None
    assert "p50" not in nccl_table.render(result)


def test_corral_header_lines_up_like_the_real_log():
    """Same header words, in the same order, as nccl-tests' own header."""
    real = [ln for ln in REAL_LOG.read_text().splitlines() if "time" in ln and "busbw" in ln][0]
    ours = [ln for ln in nccl_table.render(sample_result()).splitlines() if "time" in ln and "busbw" in ln][0]
    assert ours.split() == real.split()

"""`corral bench allreduce`'s stdout must read as nccl-tests output to the tools that parse it.

Two real consumers' parsing rules are re-implemented here, faithfully, and run on corral's
default output and on a real nccl-tests log (tests/data/nccl/SOURCE.md names its source):

1. Microsoft SuperBench, ``superbench/benchmarks/micro_benchmarks/cuda_nccl_bw_performance.py``
   (repository microsoft/superbenchmark), ``CudaNcclBwBenchmark._process_raw_result``: the rows
   between the LAST line holding ``out-of-place`` and the LAST line holding ``Out of bounds
   values``; columns found by name in the header line holding ``time`` and ``busbw``
   (out-of-place: first occurrence, counted from the end of the split header; in-place: last);
   a row is a line whose first field starts with a digit; rows of size 0 are skipped; the
   output is invalid unless both markers were found and some busbw was read.
2. FlagPerf (repository FlagOpen/FlagPerf), ``base/toolkits/interconnect-MPI_intraserver/dcu/BW/main.sh``:
   ``grep "# Avg bus bandwidth" LOG | awk '{print $NF}'`` is the result.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.allreduce import table as nccl_table

REAL_LOG = Path(__file__).parent / "data" / "nccl" / "all_reduce_perf_h100_2x8.log"


def superbench_nccl_bw(raw_output: str, in_place: bool = False) -> dict[int, float] | None:
    """SuperBench's rules (see module docstring): {size: busbw}, or None where it reports an invalid format."""
    content = raw_output.splitlines()
    busbw_out = -1.0
    out_of_place_index = -1
    out_of_bound_index = -1
    for index, line in enumerate(content):
        if "out-of-place" in line:
            out_of_place_index = index
        if "Out of bounds values" in line:
            out_of_bound_index = index
    content = content[out_of_place_index + 1 : out_of_bound_index]
    size_index, busbw_index = -1, None
    for line in content:
        if "time" in line and "busbw" in line:
            fields = re.sub(r" +", " ", line[1:].strip(" ")).split(" ")
            size_index = fields.index("size")
            if in_place:
                busbw_index = -1 - list(reversed(fields)).index("busbw")
            else:
                busbw_index = fields.index("busbw") - len(fields)
            break
    found: dict[int, float] = {}
    if size_index != -1 and busbw_index is not None:
        for line in content:
            fields = re.sub(r" +", " ", line.strip(" ")).split(" ")
            if len(fields) == 0 or not re.match(r"\d+", fields[0]):
                continue
            size = int(fields[size_index])
            if size != 0:
                busbw_out = float(fields[busbw_index])
                found[size] = busbw_out
    if out_of_place_index == -1 or out_of_bound_index == -1 or busbw_out == -1:
        return None
    return found


def flagperf_avg_busbw(log_text: str) -> list[str]:
    """FlagPerf's ``grep "# Avg bus bandwidth" | awk '{print $NF}'``: the last field of each matching line."""
    return [line.split()[-1] for line in log_text.splitlines() if "# Avg bus bandwidth" in line and line.split()]


def sample_result() -> dict:
    from tests.test_collective_math import sample_result as sample

    return sample()


def test_the_parsers_read_a_real_nccl_tests_log():
    text = REAL_LOG.read_text(encoding="utf-8")
    out_of_place = superbench_nccl_bw(text)
    assert out_of_place is not None and len(out_of_place) == 31
    assert out_of_place[8589934592] == 338.82 and out_of_place[8] == 0.0
    assert superbench_nccl_bw(text, in_place=True)[8589934592] == 337.35
    assert flagperf_avg_busbw(text) == ["70.742"]


def test_superbench_reads_every_size_of_corral_default_output():
    result = sample_result()
    parsed = superbench_nccl_bw(nccl_table.render(result))
    assert parsed is not None, "SuperBench would report 'The result format is invalid'"
    expected = {r["size_bytes"]: r["busbw_gbps"] for r in result["rows"] if not r["inplace"]}
    assert parsed.keys() == expected.keys()
    for size, busbw in parsed.items():
        assert busbw == pytest.approx(expected[size], abs=0.01)
    in_place = superbench_nccl_bw(nccl_table.render(result), in_place=True)
    assert in_place.keys() == expected.keys()


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

"""All-reduce arithmetic and the nccl-tests-style table, without a process group."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from benchmarks.allreduce import maths as cm
from benchmarks.allreduce import table as nccl_table
from launcher.errors import UserError
from tests.infra.golden import check_golden


def test_size_sweep_like_nccl_tests():
    f = cm.DTYPES["float"]
    assert cm.size_sweep(8, 128, 2, 4) == [8, 16, 32, 64, 128]
    assert cm.make_sweep("8", "64M", 2, f).sizes[-1] == 64 << 20
    assert len(cm.make_sweep("8", "8G", 2, f).sizes) == 31  # all_reduce_perf -b 8 -e 8G -f 2
    assert cm.size_sweep(8, 100, 4, 4) == [8, 32]  # the last step stops below max, as in nccl-tests
    assert cm.size_sweep(6, 48, 2, 4) == [4, 12, 24, 48]  # rounded down to whole elements
    assert cm.size_sweep(1, 4, 2, 2) == [2, 4]  # 1 byte is no half element: dropped, then 2 and 4


@pytest.mark.parametrize(
    "lo, hi, factor, dtype, needle",
    [
        ("64M", "8", 2, "float", "larger than"),
        ("8", "64M", 1, "float", "stepfactor"),
        ("8", "64M", 0, "float", "stepfactor"),
        ("2", "64M", 2, "float", "smaller than one float"),
        ("8X", "64M", 2, "float", "cannot read"),
    ],
)
def test_bad_sweeps_are_user_errors(lo, hi, factor, dtype, needle):
    with pytest.raises(UserError, match=needle):
        cm.make_sweep(lo, hi, factor, cm.resolve_dtype(dtype))


def test_dtype_and_op_names():
    assert cm.resolve_dtype("fp16").name == "half"
    assert cm.resolve_dtype("BF16").torch_name == "bfloat16"
    assert cm.resolve_dtype("float32").itemsize == 4
    with pytest.raises(UserError, match="unknown data type 'float8'"):
        cm.resolve_dtype("float8")
    assert cm.resolve_op("SUM") == "sum"
    with pytest.raises(UserError, match="unknown reduction 'mean'"):
        cm.resolve_op("mean")
    with pytest.raises(UserError, match="gloo backend has no 'avg'"):
        cm.resolve_op("avg", "gloo")
    with pytest.raises(UserError, match="floating-point"):
        cm.check_op_for_dtype("avg", cm.DTYPES["int32"])


def test_bandwidth_formulas():
    assert cm.bus_factor(1) == 0.0
    assert cm.bus_factor(2) == 1.0
    assert cm.bus_factor(8) == 1.75
    assert cm.algbw_gbps(1_000_000_000, 0.5) == 2.0  # GB is 10**9 bytes
    alg = cm.algbw_gbps(64 << 20, 0.0123)
    assert cm.busbw_gbps(alg, 6) == alg * (2 * (6 - 1) / 6)


def test_summarize_times_uses_rank_mean_and_per_iteration_max():
    per_rank = [[1.0, 2.0, 3.0, 10.0], [2.0, 2.0, 2.0, 2.0]]
    s = cm.summarize_times(per_rank)
    assert s.time_s == pytest.approx((4.0 + 2.0) / 2)
    # per-iteration max: [2, 2, 3, 10]
    assert (s.min_s, s.p50_s, s.p99_s, s.max_s) == (2.0, 2.0, 10.0, 10.0)
    mean = 17 / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in (2, 2, 3, 10)) / 4)
    assert s.cv == pytest.approx(sd / mean)
    assert (s.slowest_rank, s.slowest_rank_time_s) == (0, 4.0)
    with pytest.raises(ValueError):
        cm.summarize_times([[1.0], [1.0, 2.0]])


def test_percentile_is_nearest_rank():
    xs = [float(i) for i in range(1, 21)]
    assert cm.percentile(xs, 50) == 10.0 and cm.percentile(xs, 99) == 20.0 and cm.percentile([5.0], 99) == 5.0


@pytest.mark.parametrize("op", ["sum", "prod", "min", "max", "avg"])
@pytest.mark.parametrize("world", [1, 2, 3, 6, 8])
def test_fill_rule_reduces_to_the_expected_period(op, world):
    """Simulate every rank's buffer in plain Python and reduce it: the result is what the check expects."""
    rule = cm.fill_rule(op, world)
    period = cm.expected_period(op, world)
    for i in range(3 * rule.modulus + 1):
        vals = [Fraction(rule.value(r, i)) for r in range(world)]
        got = {"sum": sum(vals), "avg": sum(vals) / world, "prod": math.prod(vals), "min": min(vals), "max": max(vals)}[
            op
        ]
        assert got == period[i % rule.modulus]
    if op == "prod":
        assert set(period) == {2}  # one rank holds the 2: exact in every type


def test_fill_pattern_detects_a_missing_rank():
    """A reduction that lost one rank's contribution differs from the expectation somewhere in a period."""
    for op in ("sum", "prod", "min", "max"):
        world = 3
        rule = cm.fill_rule(op, world)
        period = cm.expected_period(op, world)
        partial = cm.expected_period(op, world - 1) if op != "prod" else [Fraction(1)] * rule.modulus
        assert any(period[i] != partial[i % len(partial)] for i in range(rule.modulus)), op


def test_integer_expectations_wrap_like_hardware():
    assert cm.expected_values("sum", cm.DTYPES["int8"], 100)[0] > -129
    big = cm.expected_values("sum", cm.DTYPES["int8"], 200)  # sums reach ~266: wrap into [-128, 127]
    assert all(-128 <= v <= 127 for v in big)
    assert cm.check_tolerance("sum", cm.DTYPES["float"], 6) == 0.0
    assert cm.check_tolerance("sum", cm.DTYPES["bfloat16"], 512) > 0
    assert cm.check_tolerance("avg", cm.DTYPES["float"], 3) > 0


def sample_result() -> dict:
    """A fixed result (three sizes, six ranks on three nodes) for the golden table."""
    f = cm.DTYPES["float"]
    ranks = [{"rank": r, "pid": 1000 + r, "node": f"node-{'abc'[r // 2]}", "device": "cpu"} for r in range(6)]
    rows = []
    times = {8: (30.5, 29.75), 1 << 20: (2500.0, 2400.0), 64 << 20: (160000.0, 150123.0)}
    for size, (oop_us, ip_us) in times.items():
        for inplace, us in ((False, oop_us), (True, ip_us)):
            t = us / 1e6
            per_rank = [[t * (1 + 0.01 * r)] * 4 for r in range(6)]
            per_rank[4][3] = t * 1.5
            s = cm.summarize_times(per_rank)
            rows.append(
                cm.make_row(
                    size_bytes=size,
                    dtype=f,
                    op="sum",
                    inplace=inplace,
                    world_size=6,
                    timing=s,
                    wrong=0,
                    slowest_node=ranks[s.slowest_rank]["node"],
                )
            )
    peak = cm.peak_row(rows)
    return {
        "world_size": 6,
        "params": {
            "min_bytes": 8,
            "max_bytes": 64 << 20,
            "factor": 2,
            "iters": 4,
            "warmup": 1,
            "dtype": "float",
            "op": "sum",
        },
        "env": {
            "torch": "2.13.0+cpu",
            "nccl": None,
            "cuda": None,
            "backend": "gloo",
            "timing": "wall-clock",
            "backend_note": "falling back to gloo on CPU: no CUDA GPU is visible",
            "interface": "eth0",
            "interface_source": "GLOO_SOCKET_IFNAME",
            "nccl_env": {"NCCL_DEBUG": "WARN"},
            "nnodes": 3,
            "ranks_per_node": 2,
            "ranks": ranks,
        },
        "rows": rows,
        "avg_busbw_gbps": cm.average_busbw(rows),
        "peak_busbw_gbps": peak["busbw_gbps"],
        "peak_size_bytes": peak["size_bytes"],
        "peak_inplace": peak["inplace"],
    }


def test_average_and_peak_follow_nccl_tests():
    r = sample_result()
    busbws = [row["busbw_gbps"] for row in r["rows"]]
    assert r["avg_busbw_gbps"] == pytest.approx(sum(busbws) / 6)  # every row, both placements
    assert r["peak_busbw_gbps"] == max(busbws) and r["peak_size_bytes"] == 64 << 20


def test_a_link_judged_at_its_largest_size_not_its_peak():
    """A shaped link: small messages fit the shaper's burst and reach a high peak, the large ones show its rate."""
    rows = [
        {"size_bytes": 4096, "inplace": False, "busbw_gbps": 0.09},
        {"size_bytes": 4096, "inplace": True, "busbw_gbps": 0.08},
        {"size_bytes": 1 << 20, "inplace": False, "busbw_gbps": 0.004},
        {"size_bytes": 1 << 20, "inplace": True, "busbw_gbps": 0.005},
    ]
    assert cm.peak_row(rows)["busbw_gbps"] == 0.09
    assert cm.large_message_busbw(rows) == (0.005, 1 << 20)  # the better placement at the largest size
    assert cm.large_message_busbw([]) is None


def test_table_matches_golden_file():
    check_golden("allreduce_table.txt", nccl_table.render(sample_result()))


def test_table_columns_line_up_with_nccl_tests():
    lines = nccl_table.table_lines(sample_result()["rows"])
    head, row = lines[1], lines[3]
    # nccl-tests: '#' + 11-wide size, then 2-space separated columns: every data field ends under its title.
    for title in ("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong"):
        end = head.index(title) + len(title)
        assert row[end - 1] != " ", (title, row)
    assert row.split()[:5] == ["8", "2", "float", "sum", "-1"]


def test_fit_keeps_width():
    assert nccl_table.fit(0.001, 6) == "  0.00"
    assert nccl_table.fit(123.456, 6) == "123.46"
    assert nccl_table.fit(1234.5, 6) == "1234.5"
    assert nccl_table.fit(123456.0, 6) == "123456"
    assert nccl_table.fit(12345.678, 7) == "12345.7"


def test_json_schema_is_frozen():
    """The --json keys scripts depend on: a change here must be deliberate (and bump the schema)."""
    from benchmarks.allreduce.worker import SCHEMA, UNITS, build_result

    r = sample_result()
    assert list(r["rows"][0]) == [
        "size_bytes",
        "count",
        "dtype",
        "op",
        "root",
        "inplace",
        "time_us",
        "algbw_gbps",
        "busbw_gbps",
        "wrong",
        "p50_us",
        "p99_us",
        "min_us",
        "max_us",
        "cv",
        "slowest_rank",
        "slowest_node",
        "slowest_rank_time_us",
    ]
    full = build_result(r["rows"], {**r["env"], "world_size": 6}, r["params"])
    assert SCHEMA == "corral.bench.allreduce/1"
    assert list(full) == [
        "schema",
        "units",
        "env",
        "world_size",
        "params",
        "rows",
        "avg_busbw_gbps",
        "peak_busbw_gbps",
        "peak_size_bytes",
        "peak_inplace",
    ]
    assert all(k in UNITS for k in r["rows"][0] if k.endswith(("_us", "_gbps")) or k in ("cv", "wrong", "count"))

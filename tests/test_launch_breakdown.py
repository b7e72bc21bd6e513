"""The launch-breakdown benchmark's pure parts: comp_t decoding, acct_v3 records, CPU profile."""

from __future__ import annotations

import pytest

from perf.launch_breakdown import ACCT_RECORD, CpuSampler, comp_t, parse_acct


def _record(comm: bytes, pid: int, ppid: int, utime: int, stime: int, version: int = 3) -> bytes:
    return ACCT_RECORD.pack(0, version, 0, 0, 0, 0, pid, ppid, 0, 1.5, utime, stime, 0, 0, 0, 0, 0, 0, comm)


def test_record_is_the_64_byte_acct_v3_layout() -> None:
    assert ACCT_RECORD.size == 64


def test_comp_t_mantissa_and_base_8_exponent() -> None:
    assert comp_t(0) == 0
    assert comp_t(8191) == 8191  # largest value without exponent
    assert comp_t((1 << 13) | 5) == 40  # 5 * 8**1
    assert comp_t((2 << 13) | 3) == 192  # 3 * 8**2


def test_parse_acct_reads_each_record_and_sums_user_and_system_time() -> None:
    data = _record(b"torchrun", 10, 1, 150, 25) + _record(b"ssh", 11, 10, (1 << 13) | 20, 0)
    recs = parse_acct(data)
    assert [(r.comm, r.pid, r.ppid) for r in recs] == [("torchrun", 10, 1), ("ssh", 11, 10)]
    assert recs[0].cpu_s == pytest.approx(1.75)
    assert recs[1].cpu_s == pytest.approx(1.60)  # 20 * 8 ticks of 1/100 s


def test_parse_acct_rejects_another_format() -> None:
    with pytest.raises(ValueError, match="version 2"):
        parse_acct(_record(b"x", 1, 0, 0, 0, version=2))


def test_cpu_profile_from_samples() -> None:
    s = CpuSampler()
    s.samples = [(0.0, 0.0), (0.5, 0.5), (1.0, 1.5)]  # 2 cores: half busy, then fully busy
    assert s.busy_between(0.0, 1.0) == (1.5, 1.0)
    assert s.idle_core_s(0.0, 1.0, cores=2) == pytest.approx(0.5)
    assert s.profile(0.0, 1.0, 0.5, cores=2) == [0.5, 1.0]

"""Size parsing and the throttle detector are pure: tested on plain numbers."""

import pytest

from benchmarks.series import detect_throttle, verdict
from launcher.errors import UserError
from launcher.units import format_size, parse_size


@pytest.mark.parametrize(
    "text, n",
    [
        ("8", 8),
        ("64K", 65536),
        ("1M", 1 << 20),
        ("8G", 8 << 30),
        ("1m", 1 << 20),
        ("2MiB", 2 << 20),
        (4096, 4096),
        ("0.5K", 512),
    ],
)
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "1X", "-1", "M", "1.3K"])
def test_parse_size_rejects(text):
    with pytest.raises(UserError):
        parse_size(text)


def test_format_size_roundtrip():
    for n in (8, 1024, 1536, 1 << 20, 3 << 30):
        assert parse_size(format_size(n)) == n


def test_burst_then_cap_is_found():
    series = [400.0, 410, 395, 405, 402, 128, 127, 129, 128, 128, 60]
    t = detect_throttle(series)
    assert t is not None and t.change_at_s == 5.0
    assert t.rate_before == pytest.approx(402.4, rel=0.01) and t.rate_after == pytest.approx(128, rel=0.01)


def test_a_cap_after_an_uneven_start_is_found():
    """Recorded (the net benchmark, a 100 Mbit/s cap applied 3 s in, a busy 2-core machine): the first second
    ran at twice the next two. Fitted on the rates themselves that start was most of the variance and the
    cap went unreported; on their logarithms the drop to a twentieth is the change."""
    series = [9.32, 4.07, 4.06, 0.650, 0.101, 0.0956, 0.0998, 0.0961, 0.0978]
    t = detect_throttle(series)
    assert t is not None and t.change_at_s == 3.0 and t.ratio > 10


def test_steady_or_noisy_series_has_no_throttle():
    assert detect_throttle([100.0, 104, 97, 101, 99, 103, 98, 100]) is None
    assert detect_throttle([100.0, 60, 110, 55, 105, 62, 98]) is None
    assert detect_throttle([100.0, 100]) is None
    assert detect_throttle([100.0, 50, 100, 50, 100, 50, 100, 50]) is None
    assert detect_throttle([100.0, 100, 100, 0, 0, 0, 0]) is None  # a stall is not a cap


def test_verdict():
    assert verdict(127.0, 128) == "at limit"
    assert verdict(80.0, 128) == "below limit"
    assert verdict(300.0, 128) == "above limit"
    assert verdict(1.0, None) is None

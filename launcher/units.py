"""Sizes and rates as people write them: ``8``, ``64K``, ``1M``, ``8G`` (binary suffixes, like nccl-tests and fio)."""

from __future__ import annotations

import re

from launcher.errors import UserError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

MIB = 1 << 20
GB = 10**9


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Bytes from ``'64M'``-style text (K/M/G/T are powers of 1024; 'MiB'/'MB' spellings accepted as binary)."""
    if isinstance(text, int):
        if text < 0:
            raise UserError(f"{what} must not be negative (got {text})")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise UserError(f"{what}: cannot read {text!r} as a size; write e.g. 8, 64K, 1M or 8G")
    value = float(m.group(1)) * _FACTORS[m.group(2).upper()]
    if value != int(value):
        raise UserError(f"{what}: {text!r} is not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """The shortest exact binary spelling: 1048576 -> '1M', 1536 -> '1536'."""
    for suffix in ("T", "G", "M", "K"):
        f = _FACTORS[suffix]
        if n >= f and n % f == 0:
            return f"{n // f}{suffix}"
    return str(n)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | int | float, *, what: str = "duration") -> float:
    """Seconds from ``'30m'``, ``'1h30m'``, ``'90s'``, ``'2.5s'`` or a bare number of seconds."""
    if isinstance(text, bool):
        raise UserError(f"{what}: expected a duration such as 30s, 10m or 1h30m (got {text!r})")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip()
        try:
            seconds = float(s)
        except ValueError:
            parts = _DURATION_PART.findall(s)
            if not parts or _DURATION_PART.sub("", s).strip():
                raise UserError(f"{what}: cannot read {text!r} as a duration; write e.g. 30s, 10m or 1h30m") from None
            seconds = sum(float(n) * _DURATION_FACTORS[u.lower()] for n, u in parts)
    if seconds < 0:
        raise UserError(f"{what} must not be negative (got {text!r})")
    return seconds


def format_duration(seconds: float) -> str:
    """The way people read it: 90 -> '1m30s', 1800 -> '30m', 2.5 -> '2.5s'."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v)

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

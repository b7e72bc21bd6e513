"""Helpers shared by the checkpoint tests: a unique root on a real disk, states to compare."""

from __future__ import annotations

import os
import shutil
import uuid

import torch


def unique_dir(tag: str) -> str:
    """A fresh directory under /var/tmp (a real disk, not /tmp which the checkpointer refuses)."""
    path = os.path.join("/var/tmp", f"corral-test-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(path)
    return path


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def make_state(step: int, scale: int = 1) -> dict:
    """A deterministic state for ``step``: several dtypes and shapes plus Python values."""
    g = torch.Generator().manual_seed(step)
    w = torch.randn(256 * scale, 1024, generator=g)
    return {
        "model": {"w": w, "b": torch.randn(1000, generator=g).to(torch.bfloat16), "t": w[:8, :4].t()},
        "optim": {"step": torch.tensor(step), "m": [torch.randint(0, 1 << 30, (333,), generator=g, dtype=torch.int64)]},
        "step": step,
        "rng": (step, "seed", [step % 7, None, 2.5]),
    }


def assert_same(a, b, path: str = "state") -> None:
    """Exact equality of nested states: tensor dtype, shape and values; Python values by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(_bits(a), _bits(b)), path  # bitwise: NaNs (random bytes as floats) compare too
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)

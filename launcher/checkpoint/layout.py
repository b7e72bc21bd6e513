"""Names inside a checkpoint root: the only place that knows how directories and files are spelled.

    <root>/step-00000500/manifest.json
    <root>/step-00000500/rank-00000-of-00002.bin
    <root>/.staging-step-00000600/      a save in progress (or the leftover of a crashed one)
    <root>/.trash-step-00000100/        a checkpoint being removed by retention
    <root>/LATEST                       newest step, for people; discovery never reads it

Published checkpoints are plain directories; names starting with '.' are never loaded.
"""

from __future__ import annotations

import re

MANIFEST = "manifest.json"
LATEST = "LATEST"
LATEST_TMP = ".LATEST.tmp"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
STEP_DIR = re.compile(r"^step-(\d{8,})$")
RANK_FILE = re.compile(r"^rank-(\d{5,})-of-(\d{5,})\.bin$")
MAX_STEP = 10**12
"""Steps are zero-padded to 8 digits; larger steps still sort numerically (names grow)."""


def step_dirname(step: int) -> str:
    return f"step-{step:08d}"


def parse_step_dirname(name: str) -> int | None:
    """The step of a published checkpoint directory name, or None for anything else."""
    m = STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def staging_dirname(step: int) -> str:
    """Deterministic, so every rank derives the same staging directory without talking."""
    return STAGING_PREFIX + step_dirname(step)


def trash_dirname(step: int) -> str:
    return TRASH_PREFIX + step_dirname(step)


def rank_filename(rank: int, world_size: int) -> str:
    return f"rank-{rank:05d}-of-{world_size:05d}.bin"


def is_leftover(name: str) -> bool:
    """A staging or trash directory, or a temporary LATEST: safe to delete when no save runs."""
    return name.startswith((STAGING_PREFIX, TRASH_PREFIX)) or name == LATEST_TMP

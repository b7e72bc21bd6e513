"""Read-only views of a checkpoint root (list, verify) and retention, shared by the library and the CLI.

Nothing here loads tensors or imports torch: ``corral ckpt verify`` reads files and checksums.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from launcher.checkpoint import layout
from launcher.checkpoint.durable import crc_of_file, remove_tree_atomically
from launcher.checkpoint.manifest import Manifest, read_manifest
from launcher.checkpoint.retention import steps_to_remove


@dataclass
class CheckpointInfo:
    """One ``step-*`` directory and what is wrong with it (each problem names a file)."""

    step: int
    path: str
    manifest: Manifest | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.manifest is not None and not self.problems

    @property
    def size(self) -> int | None:
        return self.manifest.size if self.manifest else None

    def to_json(self) -> dict:
        m = self.manifest
        return {
            "step": self.step,
            "path": self.path,
            "valid": self.valid,
            "created_unix": m.created_unix if m else None,
            "size": self.size,
            "world_size": m.world_size if m else None,
            "metadata": m.metadata if m else None,
            "problems": self.problems,
            "notes": self.notes,
        }


@dataclass
class Scan:
    root: str
    checkpoints: list[CheckpointInfo]
    leftovers: list[str]
    """Staging/trash directories of a save or removal that did not finish (removed by the next save)."""

    @property
    def valid_steps(self) -> list[int]:
        return [c.step for c in self.checkpoints if c.valid]

    @property
    def problems(self) -> list[str]:
        return [p for c in self.checkpoints for p in c.problems]


def step_dirs(root: str) -> list[tuple[int, str]]:
    """(step, name) of every published-looking entry, oldest first."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    found = [(s, n) for n in names if (s := layout.parse_step_dirname(n)) is not None]
    return sorted(found)


def check_checkpoint(root: str, name: str, *, full: bool, ranks: list[int] | None = None) -> CheckpointInfo:
    """Check one checkpoint: manifest intact, every file present with its size (and checksum if ``full``).

    ``ranks`` limits the file checks to those ranks' files (a rank checks its own before loading).
    """
    path = os.path.join(root, name)
    info = CheckpointInfo(layout.parse_step_dirname(name) or 0, path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        kind = (
            "a symlink (not allowed: shared drives do not keep them)" if stat.S_ISLNK(st.st_mode) else "not a directory"
        )
        info.problems.append(f"{path}: is {kind}")
        return info
    mpath = os.path.join(path, layout.MANIFEST)
    try:
        info.manifest = read_manifest(path)
    except FileNotFoundError:
        info.problems.append(f"{mpath}: missing (torn save, or not a corral checkpoint)")
        return info
    except (OSError, ValueError, TypeError) as exc:
        info.problems.append(f"{mpath}: {exc}")
        return info
    m = info.manifest
    if m.step != info.step:
        info.problems.append(f"{mpath}: says step {m.step} but the directory is {name}")
    for rec in m.files:
        if ranks is not None and rec.rank not in ranks:
            continue
        _check_file(os.path.join(path, rec.name), rec.size, rec.crc32, full, info.problems)
    listed = {f.name for f in m.files} | {layout.MANIFEST}
    for extra in sorted(set(os.listdir(path)) - listed):
        info.notes.append(f"{os.path.join(path, extra)}: not listed in the manifest (ignored)")
    return info


def _check_file(fpath: str, size: int, crc: int, full: bool, problems: list[str]) -> None:
    try:
        st = os.lstat(fpath)
    except FileNotFoundError:
        problems.append(f"{fpath}: missing")
        return
    if not stat.S_ISREG(st.st_mode):
        problems.append(f"{fpath}: not a regular file (symlinks are not allowed)")
    elif st.st_size != size:
        what = "truncated" if st.st_size < size else "longer than written"
        problems.append(f"{fpath}: {what}: {st.st_size} bytes, manifest says {size}")
    elif full:
        try:
            _, got = crc_of_file(fpath)
        except OSError as exc:
            problems.append(f"{fpath}: unreadable ({exc.strerror})")
            return
        if got != crc:
            problems.append(f"{fpath}: checksum mismatch (crc32 {got:08x}, manifest says {crc:08x}): corrupted")


def scan(root: str, *, full: bool = False) -> Scan:
    """Every checkpoint under ``root`` with its problems; ``full`` also checksums every data file."""
    root = os.path.abspath(root)
    checkpoints = [check_checkpoint(root, name, full=full) for _, name in step_dirs(root)]
    try:
        leftovers = sorted(os.path.join(root, n) for n in os.listdir(root) if layout.is_leftover(n))
    except FileNotFoundError:
        leftovers = []
    return Scan(root, checkpoints, leftovers)


def remove_checkpoint(root: str, step: int) -> None:
    """Remove one published checkpoint without ever leaving a half-deleted ``step-*`` directory."""
    remove_tree_atomically(root, layout.step_dirname(step), layout.trash_dirname(step))


def prune(root: str, keep_last: int | None, keep_every: int | None = None, *, dry_run: bool = False) -> list[int]:
    """Apply a retention policy to valid checkpoints (sizes checked); corrupt ones are left alone."""
    found = scan(root, full=False)
    doomed = steps_to_remove(found.valid_steps, keep_last, keep_every)
    if not dry_run:
        for step in doomed:
            remove_checkpoint(os.path.abspath(root), step)
    return doomed

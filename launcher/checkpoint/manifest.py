"""The manifest: what a published checkpoint holds, and how to tell it is whole.

Written last into the staging directory (and fsynced) before the directory is renamed into
place. It protects itself with a CRC of its own canonical JSON, so a torn or bit-flipped
manifest is recognised rather than trusted.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from launcher.checkpoint import layout

FORMAT = "corral-checkpoint"
VERSION = 1


@dataclass
class FileRecord:
    """One data file as its writer saw it after fsync."""

    name: str
    rank: int
    size: int
    crc32: int


@dataclass
class Manifest:
    step: int
    world_size: int
    files: list[FileRecord]
    metadata: dict[str, Any] = field(default_factory=dict)
    created_unix: float = field(default_factory=time.time)
    checksum: str = "crc32"
    format: str = FORMAT
    version: int = VERSION

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file_for_rank(self, rank: int) -> FileRecord:
        for f in self.files:
            if f.rank == rank:
                return f
        raise KeyError(rank)

    def body(self) -> dict:
        d = asdict(self)
        return {"format": d.pop("format"), "version": d.pop("version"), **d}

    def to_bytes(self) -> bytes:
        body = self.body()
        body["manifest_crc32"] = _crc_of(body)
        return (json.dumps(body, indent=1, sort_keys=False) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; ValueError says what is wrong."""
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable JSON ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError("not a corral checkpoint manifest")
        claimed = body.pop("manifest_crc32", None)
        if claimed != _crc_of(body):
            raise ValueError("manifest checksum mismatch (torn or corrupted)")
        if body.get("version", 0) > VERSION:
            raise ValueError(
                f"manifest version {body['version']} is newer than this corral ({VERSION}); upgrade corral"
            )
        files = [FileRecord(**f) for f in body.pop("files")]
        return cls(files=files, **body)

    def check_files(self) -> None:
        """Cross-check the file list (ranks 0..world_size-1, sane names); ValueError otherwise."""
        ranks = sorted(f.rank for f in self.files)
        if ranks != list(range(self.world_size)):
            raise ValueError(f"manifest lists ranks {ranks} for world size {self.world_size}")
        for f in self.files:
            if f.name != layout.rank_filename(f.rank, self.world_size):
                raise ValueError(f"unexpected file name {f.name!r} in manifest")


def _crc_of(body: dict) -> int:
    return zlib.crc32(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def read_manifest(step_dir: str) -> Manifest:
    path = os.path.join(step_dir, layout.MANIFEST)
    with open(path, "rb") as f:
        m = Manifest.from_bytes(f.read())
    m.check_files()
    return m

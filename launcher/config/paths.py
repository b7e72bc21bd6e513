"""The one path rule of the config files: a relative path is taken from a base directory, the same on every node."""

from __future__ import annotations

import posixpath


def resolve_path(base_dir: str, path: str) -> str:
    """Absolute, normalised path; relative ones are taken from ``base_dir`` (same on every node)."""
    return posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(base_dir, path))


__all__ = ["resolve_path"]

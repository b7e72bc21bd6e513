"""A test run leaves the checkout as it found it: a pytest plugin (loaded by tests/conftest.py).

At the start of the session it records ``git status --porcelain`` of the checkout pytest runs in (its
rootdir, the repository root here); at the end it
compares. Any entry the run added (an untracked file such as a stray ``slurm-1.out``, a deleted or
modified tracked file) fails the run with exit status 1 and the list of entries. A checkout that was
already dirty is fine: only what changed between start and end counts. Outside a git checkout (an
unpacked sdist) there is nothing to compare and the check is off. Regenerating golden files
(``CORRAL_UPDATE_GOLDEN=1``) modifies tracked files on purpose, so modifications do not count then.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

_BEFORE = pytest.StashKey[frozenset[str] | None]()


def checkout_status(root: Path) -> frozenset[str] | None:
    """The porcelain lines of ``git status`` (every untracked file listed), or None outside a git checkout."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return frozenset(proc.stdout.splitlines()) if proc.returncode == 0 else None


def left_behind(before: frozenset[str], after: frozenset[str], *, updating_golden: bool) -> list[str]:
    """Entries the run added; with golden files being regenerated, modified tracked files are expected."""
    new = sorted(after - before)
    if updating_golden:
        new = [line for line in new if line.startswith("??") or "D" in line[:2]]
    return new


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")  # the controller compares once, for the whole run


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _is_xdist_worker(session.config):
        session.config.stash[_BEFORE] = checkout_status(session.config.rootpath)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None or _is_xdist_worker(session.config):
        return
    after = checkout_status(session.config.rootpath)
    if after is None:
        return
    new = left_behind(before, after, updating_golden=bool(os.environ.get("CORRAL_UPDATE_GOLDEN")))
    if not new:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [
        f"the test run left the checkout {session.config.rootpath} changed (git status --porcelain, entries new since the run started):",
        *(f"    {line}" for line in new),
        "a test wrote into the working tree or the repository: write under a temporary directory and clean up",
    ]
    if reporter is not None:
        for line in lines:
            reporter.write_line(line, red=True, bold=True)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

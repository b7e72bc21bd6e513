"""Golden files: generated artifacts (plans, wrappers, tables, argvs) compared with a reviewed copy.

One helper and one variable: ``CORRAL_UPDATE_GOLDEN=1 python -m pytest TESTS`` rewrites the files
the tests generate; review the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
UPDATE_ENV = "CORRAL_UPDATE_GOLDEN"


def check_golden(relpath: str, text: str) -> None:
    """Assert ``text`` equals ``tests/golden/<relpath>`` (written instead when ``CORRAL_UPDATE_GOLDEN=1``)."""
    path = GOLDEN_DIR / relpath
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[0] or "tests/"
    how = f"{UPDATE_ENV}=1 python -m pytest {test}"
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; create it with {how}"
    assert text == path.read_text(encoding="utf-8"), (
        f"{path} differs from what the code generates; if intended, regenerate with {how} and review the diff"
    )

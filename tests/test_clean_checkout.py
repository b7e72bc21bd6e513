"""The clean-checkout check (tests/infra/clean_checkout.py) run for real: pytest in a scratch git checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.infra.clean_checkout import left_behind

REPO = Path(__file__).resolve().parents[1]


def git(repo: Path, *argv: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *argv],
        check=True,
        capture_output=True,
    )


def scratch_checkout(tmp_path: Path, test_body: str) -> Path:
    repo = tmp_path / "checkout"
    repo.mkdir()
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    (repo / "test_scratch.py").write_text(f"from pathlib import Path\n\n\ndef test_it():\n    {test_body}\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "scratch")
    return repo


def run_pytest(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CORRAL_UPDATE_GOLDEN"}
    environ.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.infra.clean_checkout", "test_scratch.py"],
        cwd=repo,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_file_left_in_the_checkout_fails_the_run(tmp_path):
    repo = scratch_checkout(tmp_path, "Path('slurm-1.out').write_text('stray')")
    proc = run_pytest(repo)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "left the checkout" in proc.stdout and "?? slurm-1.out" in proc.stdout
    assert "1 passed" in proc.stdout  # the test itself passed: the run fails for what it left


def test_a_checkout_dirty_before_the_run_is_not_blamed_on_it(tmp_path):
    repo = scratch_checkout(tmp_path, "assert True")
    (repo / "notes.txt").write_text("the user's own work in progress")
    (repo / "pytest.ini").write_text("[pytest]\n# edited\n")
    proc = run_pytest(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "left the checkout" not in proc.stdout


def test_a_test_that_cleans_up_after_itself_passes(tmp_path):
    repo = scratch_checkout(tmp_path, "p = Path('x.out'); p.write_text('x'); p.unlink()")
    proc = run_pytest(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_deleted_tracked_file_fails_the_run(tmp_path):
    repo = scratch_checkout(tmp_path, "Path('pytest.ini').unlink()")
    proc = run_pytest(repo)
    assert proc.returncode == 1 and " D pytest.ini" in proc.stdout, proc.stdout


def test_left_behind_counts_only_what_the_run_changed():
    before = frozenset({"?? notes.txt", " M README.md"})
    after = before | {"?? slurm-1.out", " M tests/golden/a.txt", " D docs/x.md"}
    assert left_behind(before, after, updating_golden=False) == [
        " D docs/x.md",
        " M tests/golden/a.txt",
        "?? slurm-1.out",
    ]
    # regenerating golden files modifies tracked files on purpose
    assert left_behind(before, after, updating_golden=True) == [" D docs/x.md", "?? slurm-1.out"]

"""``launch --follow`` shows a progress bar on a terminal's stderr until every node runs; nothing of it
off a terminal or in ``--json`` output (real local launches: tmux on a private socket)."""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from launcher.cli import main, output

BAR = "nodes running"


def _files(cluster, root: Path, name: str) -> tuple[Path, Path]:
    cfile, jfile = root / "cluster.yaml", root / f"{name}.yaml"
    cfile.write_text(yaml.safe_dump(cluster.model_dump(mode="json")))
    jfile.write_text(yaml.safe_dump({"name": name, "script": "tests/workers/echo_env.py", "env": {"ECHO_SLEEP": "3"}}))
    return cfile, jfile


def test_follow_shows_node_progress_on_a_terminal_only(local_space, capsys, monkeypatch):
    cluster, root, _ = local_space
    cfile, jfile = _files(cluster, root, "bar")
    terminal = io.StringIO()
    plain_console = output.console

    def console(stderr: bool = False):
        from rich.console import Console

        return Console(file=terminal, force_terminal=True, width=120) if stderr else plain_console(stderr)

    monkeypatch.setattr(output, "console", console)
    assert main(["launch", str(jfile), "-c", str(cfile), "--follow"]) == 0
    out = capsys.readouterr()
    shown = terminal.getvalue()
    assert f"launching bar: {BAR}" in shown and "local running" in shown, shown
    assert BAR not in out.out and "echo worker done" in out.out


def test_follow_off_a_terminal_prints_no_progress(local_space, capsys):
    cluster, root, _ = local_space
    cfile, jfile = _files(cluster, root, "pipe")
    assert main(["launch", str(jfile), "-c", str(cfile), "--follow"]) == 0
    out = capsys.readouterr()
    assert "echo worker done" in out.out
    assert BAR not in out.out + out.err

"""The detached controller's tmux command: quoted once, hostile paths survive the shell intact."""

from __future__ import annotations

import shlex
import subprocess

from launcher.sweep.detach import plan_controller
from launcher.sweep.paths import SweepPaths

HOSTILE = "/var/tmp/we ird'\"$(touch PWNED);`id`\nx"


def test_pane_command_round_trips_hostile_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launch = plan_controller(SweepPaths(tmp_path / HOSTILE.lstrip("/")), tmp_path / "c;l'uster.yaml", "tok" * 8, "lr")
    cmd = launch.pane_command()
    # what the shell in the tmux pane would run: cd DIR && exec env PYTHONPATH=... ARGV
    words = shlex.split(cmd)
    assert words[:3] == ["cd", str(tmp_path), "&&"] and words[3:5] == ["exec", "env"]
    assert words[6:] == launch.argv
    assert "--sweep-dir" in launch.argv and str(tmp_path / HOSTILE.lstrip("/")) in launch.argv
    # and a real shell agrees, executing nothing from the values
    echo = cmd.replace("exec env", "exec printf '%s\\n'", 1)
    out = subprocess.run(["sh", "-c", echo], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / HOSTILE.lstrip("/")) in out and not (tmp_path / "PWNED").exists()


def test_tmux_argv_names_the_session_and_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", "sock1")
    launch = plan_controller(SweepPaths(tmp_path), None, "abcdef0123456789", "lr")
    argv = launch.tmux_argv()
    assert argv[:3] == ["tmux", "-L", "sock1"] and argv[3:7] == ["new-session", "-d", "-s", "corral-sweep-lr-abcdef01"]
    assert argv[-1] == launch.pane_command() and "--cluster" not in launch.argv

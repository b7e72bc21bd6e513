"""The detached controller's tmux command: quoted once, hostile paths survive the shell intact."""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess

import pytest

from launcher.sweep.detach import ControllerLaunch, kill_session, plan_controller, session_exists, start_session
from launcher.sweep.paths import SweepPaths
from tests.infra.hostile import HOSTILE_PATH
from tests.infra.tmux_server import end_server

HOSTILE = HOSTILE_PATH + "\nx"


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


def test_launch_names_the_session_and_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", "sock1")
    launch = plan_controller(SweepPaths(tmp_path), None, "abcdef0123456789", "lr")
    assert launch.socket == "sock1" and launch.session == "corral-sweep-lr-abcdef01" and "--cluster" not in launch.argv


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_session_starts_and_is_killed_on_this_machines_tmux(tmp_path):
    """libtmux drives the local server: start, see, kill; on a socket of this test's own, removed after."""
    socket = f"corral-test-{secrets.token_hex(4)}"
    launch = ControllerLaunch("corral-sweep-t-0123abcd", socket, str(tmp_path), ["sleep", "60"])
    try:
        start_session(launch)
        assert session_exists(launch)
        kill_session(socket, launch.session)
        assert not session_exists(launch)
    finally:
        end_server(socket)

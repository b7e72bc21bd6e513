"""The node agent's own ``_run`` and JSON codec behave as ``subprocess.run`` and ``json`` do, and a launch's
requests (probe, start) load neither those modules nor what they pull in: every node of a launch starts
the agent while its cores are busy starting the job."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from launcher.agent import node_agent
from launcher.agent.remote import BOOTSTRAP, _code_lines


def test_run_returns_status_stdout_and_stderr():
    assert node_agent._run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")


def test_run_reads_both_streams_past_a_pipe_buffer():
    rc, out, err = node_agent._run(["sh", "-c", "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2"])
    assert (rc, len(out), len(err)) == (0, 300000, 200000)


def test_run_gives_127_for_a_missing_command_and_minus_the_signal_for_a_killed_one():
    assert node_agent._run(["corral-no-such-command-here"])[0] == 127
    assert node_agent._run(["sh", "-c", "kill -TERM $$"])[0] == -15


def test_run_passes_the_environment_and_no_stdin():
    rc, out, _ = node_agent._run(["sh", "-c", 'echo "$CORRAL_X"; cat'], env={"CORRAL_X": "1", "PATH": os.defpath})
    assert (rc, out) == (0, "1\n")


def test_run_kills_a_command_past_its_timeout_and_leaves_no_descriptor(tmp_path):
    fds = len(os.listdir("/proc/self/fd"))
    pid_file = tmp_path / "pid"
    t0 = time.monotonic()
    rc, _, err = node_agent._run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=0.5)
    assert (rc, err) == (124, "timed out after 0.5s")
    assert time.monotonic() - t0 < 10
    assert not os.path.exists(f"/proc/{pid_file.read_text().strip()}")  # killed and reaped
    node_agent._run(["true"])
    assert len(os.listdir("/proc/self/fd")) == fds


@pytest.mark.parametrize(
    "value",
    [
        {"op": "start", "files": [{"path": "/a b/é", "content": "#!/bin/bash\n\techo 'x' \"y\"\\\n", "mode": 448}]},
        [1, -2, 3.25, 1e300, 2**70, None, True, False, "", "\u2603\U0001f600", {"nested": {"k": []}}],
        {"float": 0.1, "neg": -0.0, "big": 12345678901234567890},
    ],
)
def test_the_codec_reads_and_writes_what_json_does(value):
    text = json.dumps(value)
    assert node_agent._dumps(value) == text
    assert node_agent._loads(text) == value
    assert node_agent._loads(f"  {text}\n") == value


def test_the_codec_keeps_json_s_constants_and_refusals():
    assert node_agent._dumps([math.inf, -math.inf]) == "[Infinity, -Infinity]"
    assert math.isnan(node_agent._loads("[NaN]")[0])
    with pytest.raises(ValueError):
        node_agent._loads('{"a": 1} {"b": 2}')
    with pytest.raises(ValueError):
        node_agent._loads('{"a": ')
    with pytest.raises(TypeError):
        node_agent._dumps({"a": object()})


LAUNCH_PATH = """
import sys
version, source = sys.stdin.readline().split(), sys.stdin.readline()
g = {"__name__": "corral_agent"}
exec(__import__("marshal").loads(__import__("binascii").a2b_base64(version[1])), g)
req = g["_loads"](sys.stdin.readline())
probe = g["op_probe"]({"op": "probe", "workdir": req["dir"], "venv": req["dir"], "script": "x.py", "port": 29400,
                      "session": "corral-x", "tmux_panes": ["tmux", "-L", req["socket"], "list-panes", "-t", "=corral-x"]})
wrapper = req["dir"] + "/run.sh"
start = g["op_start"]({"op": "start", "state_dir": req["dir"], "log": req["dir"] + "/log", "dirs": [req["dir"]],
                      "files": [{"path": wrapper, "content": "echo $$ $$ $$ > " + req["dir"] + "/pid", "mode": 448}],
                      "steps": [["tmux", "-L", req["socket"], "new-session", "-d", "-s", "corral-x", "bash " + wrapper]],
                      "wait_s": 20})
print(g["_dumps"]({"probe": probe, "start": start, "modules": sorted(sys.modules)}))
"""


def test_a_launch_s_requests_import_neither_json_nor_subprocess(tmp_path):
    socket = f"corral-agent-test-{os.getpid()}"
    request = json.dumps({"dir": str(tmp_path), "socket": socket})
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCH_PATH],
            input=_code_lines() + (request + "\n").encode(),
            capture_output=True,
            timeout=60,
            env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)},  # the port reservation, in this test's directory
        )
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    assert out.returncode == 0, out.stderr.decode()
    got = json.loads(out.stdout)
    assert got["probe"]["tmux"] and got["probe"]["session_state"] == "none" and got["probe"]["port"] == 29400
    assert got["start"]["ok"], got["start"]
    heavy = {"json", "subprocess", "re", "enum", "socket", "selectors", "threading", "glob", "signal"}
    assert heavy.isdisjoint(got["modules"]), heavy & set(got["modules"])


def test_the_bootstrap_ends_without_tearing_down_and_answers_every_request():
    requests = "".join(json.dumps({"op": "read", "paths": [f"/nonexistent/{i}"]}) + "\n" for i in range(3))
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", BOOTSTRAP], input=_code_lines() + requests.encode(), capture_output=True
    )
    assert out.returncode == 0, out.stderr.decode()
    assert [json.loads(line) for line in out.stdout.decode().splitlines()] == [
        {"ok": True, "files": {f"/nonexistent/{i}": None}} for i in range(3)
    ]


def test_the_probe_finds_tmux_s_socket_where_tmux_puts_it():
    name = f"corral-socket-test-{os.getpid()}"
    argv = ["tmux", "-L", name, "list-panes", "-s", "-t", "=corral-x"]
    assert not os.path.exists(node_agent.tmux_socket(argv))
    subprocess.run(["tmux", "-L", name, "new-session", "-d", "-s", "x", "sleep", "30"], check=True)
    try:
        shown = subprocess.run(["tmux", "-L", name, "display", "-p", "#{socket_path}"], capture_output=True, text=True)
        assert node_agent.tmux_socket(argv) == shown.stdout.strip()
        assert os.path.exists(node_agent.tmux_socket(argv))
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)
    assert node_agent.tmux_socket(["tmux", "-S", "/x/y", "ls"]) == "/x/y"
    assert node_agent.tmux_socket(["tmux", "ls"]).endswith(f"/tmux-{os.getuid()}/default")

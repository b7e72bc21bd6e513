"""The node agent's session protocol on localhost: several requests per agent process, kept
sessions shared across calls inside ``kept_sessions``, one-shot agents outside it, and a dead
agent reported as an error naming why (real processes, no ssh)."""

from __future__ import annotations

import asyncio

import pytest

from launcher.agent import remote
from launcher.config import ClusterConfig
from launcher.tools import tmux

CLUSTER = ClusterConfig.model_validate({"nodes": [{"host": "localhost"}]})
NODE = CLUSTER.nodes[0]


def tail(path: str) -> dict:
    return {"op": "tail", "path": path, "lines": 5}


def test_one_session_answers_several_requests_in_order(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\nthree\n")

    async def go():
        s = await remote.AgentSession.open(CLUSTER, NODE)
        try:
            first = await s.request(tail(str(log)), 30)
            missing = await s.request(tail(str(tmp_path / "nope.log")), 30)
            bad = await s.request({"op": "no-such-op"}, 30)
            again = await s.request(tail(str(log)), 30)
        finally:
            await s.close()
        return s, first, missing, bad, again

    s, first, missing, bad, again = asyncio.run(go())
    assert first.ok and first.data["lines"] == ["one", "two", "three"]
    assert missing.ok and missing.data["ok"] is False and "no such log" in missing.data["error"]
    assert not bad.ok and bad.error.startswith("node agent: KeyError")  # the agent survives its own errors
    assert again.ok and again.data == first.data
    assert s.proc.returncode == 0  # end of input: the agent exits cleanly


def test_kept_sessions_reuse_one_agent_and_close_it(tmp_path):
    log = tmp_path / "b.log"
    log.write_text("x\n")
    with remote.kept_sessions():
        r1 = remote.run_sync(remote.call(CLUSTER, NODE, tail(str(log))))
        (session,) = remote._current().sessions.values()
        r2 = remote.run_sync(remote.call_all(CLUSTER, [(NODE, tail(str(log)))]))[0]
        assert list(remote._current().sessions.values()) == [session]
        with remote.kept_sessions():  # nested blocks share the outer sessions
            r3 = remote.run_sync(remote.call(CLUSTER, NODE, tail(str(log))))
            assert list(remote._current().sessions.values()) == [session]
        assert session.proc.returncode is None
    assert r1.data["lines"] == r2.data["lines"] == r3.data["lines"] == ["x"]
    assert session.proc.returncode == 0 and remote._current() is None


def test_outside_kept_sessions_each_call_is_one_shot(tmp_path):
    log = tmp_path / "c.log"
    log.write_text("y\n")
    replies = remote.run_sync(remote.call_all(CLUSTER, [(NODE, tail(str(log)))] * 3))
    assert [r.data["lines"] for r in replies] == [["y"]] * 3


def test_a_dead_agent_is_reported_not_waited_for(tmp_path):
    async def go():
        s = await remote.AgentSession.open(CLUSTER, NODE)
        await s.kill()
        first = await s.request(tail(str(tmp_path / "x")), 30)
        second = await s.request(tail(str(tmp_path / "x")), 30)
        await s.close()
        return first, second

    first, second = asyncio.run(go())
    assert not first.ok and first.error == second.error
    assert "exit status" in first.error  # SIGKILL: no stderr line, so the status is the reason


def test_agent_argv_prefers_the_venv_interpreter():
    remote_node = ClusterConfig.model_validate({"nodes": [{"host": "10.0.0.2"}], "venv": "/opt/my venv"})
    argv = remote.agent_argv(remote_node, remote_node.nodes[0])
    assert argv[:5] == ["sh", "-c", remote.PICK_PYTHON, "corral-agent", "/opt/my venv"]
    no_venv = ClusterConfig.model_validate({"nodes": [{"host": "10.0.0.2"}]})
    assert remote.agent_argv(no_venv, no_venv.nodes[0])[0] == "python3"


def test_tmux_chain_and_trailing_semicolons():
    a = tmux.new_session("s", "corral-x", "/w/dir;")
    assert a[a.index("-c") + 1] == "/w/dir\\;"  # tmux would end the command at a bare trailing ';'
    assert tmux.literal("plain") == "plain" and tmux.literal(";") == "\\;"
    argv = tmux.chain(tmux.new_session(None, "corral-x", "/w"), tmux.set_remain_on_exit(None, "corral-x"))
    assert argv.count("tmux") == 1 and argv[argv.index(";") + 1] == "set-option"
    sock = tmux.chain(tmux.new_session("s", "corral-x", "/w"), tmux.respawn("s", "corral-x", ["bash", "/r.sh"]))
    assert sock[:3] == ["tmux", "-L", "s"] and sock[sock.index(";") + 1 :] == [
        "respawn-pane",
        "-k",
        "-t",
        "=corral-x:",
        "bash",
        "/r.sh",
    ]


def test_kept_sessions_are_per_thread(tmp_path):
    """Two threads each inside their own block (the sweep controller launches trials side by
    side): each gets its own loop and agent, neither runs on the other's loop."""
    import threading

    log = tmp_path / "d.log"
    log.write_text("z\n")
    barrier = threading.Barrier(2)
    out: dict[int, tuple] = {}

    def worker(i: int) -> None:
        with remote.kept_sessions():
            barrier.wait()  # both blocks open at once
            reply = remote.run_sync(remote.call(CLUSTER, NODE, tail(str(log))))
            out[i] = (reply.data.get("lines"), id(remote._current().loop))
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out[0][0] == out[1][0] == ["z"]
    assert out[0][1] != out[1][1]


@pytest.mark.parametrize("magic", ["own", "other"])
def test_the_agent_runs_its_bytecode_where_the_python_matches_and_compiles_its_source_elsewhere(magic):
    import json
    import subprocess
    import sys

    from launcher.agent.remote import BOOTSTRAP, _code_lines

    version, source = _code_lines().decode().splitlines()
    if magic == "other":  # a node whose Python has another bytecode version: the bytecode must not run
        version = "00000000 bm90IGJ5dGVjb2Rl"
    request = {"op": "read", "paths": ["/nonexistent"]}
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", BOOTSTRAP],
        input=f"{version}\n{source}\n{json.dumps(request)}\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"ok": True, "files": {"/nonexistent": None}}, out.stdout

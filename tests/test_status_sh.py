"""The shell rendering of the agent's ``status`` read (launcher/agent/status_sh.py) gives the same answer as the
agent's own ``op_status``, on the same real state: a tmux session (live and dead panes), the wrapper's pid and
exit files, a watchdog file longer than the cap, a hostile path."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from launcher.agent import node_agent, status_sh
from launcher.tools import tmux
from tests.infra.tmux_server import end_server


def both(req: dict) -> tuple[dict, dict]:
    ref = node_agent.op_status(req)
    done = subprocess.run(["sh", "-s"], input=status_sh.script([req]), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    (got,) = status_sh.parse(done.stdout, [req])
    return ref, got


def same(ref: dict, got: dict) -> None:
    ref_mtime, got_mtime = ref.pop("exit_mtime"), got.pop("exit_mtime")
    assert ref == got
    assert (ref_mtime is None) == (got_mtime is None)
    if ref_mtime is not None:
        assert abs(ref_mtime - got_mtime) < 1e-3


@pytest.fixture
def server():
    sock = f"corral-status-sh-{uuid.uuid4().hex[:6]}"
    yield sock
    end_server(sock)


def test_running_ended_and_gone_read_the_same_as_the_agent(tmp_path, server):
    state = tmp_path / "state dir; $(touch PWNED)"
    state.mkdir()
    session = "corral-job-a"
    req = {"op": "status", "state_dir": str(state), "tmux_panes": tmux.list_panes(server, session)}
    same(*both(req))  # nothing yet: no session, no files

    subprocess.run(["tmux", "-L", server, "new-session", "-d", "-s", session, "sleep 300"], check=True)
    pane_pid = subprocess.run(
        ["tmux", "-L", server, "list-panes", "-t", session, "-F", "#{pane_pid}"], capture_output=True, text=True
    ).stdout.strip()
    (state / "pid").write_text(f"{pane_pid} {pane_pid} {pane_pid}\n")
    ref, got = both(req)
    assert ref["session"] and ref["alive"] and ref["pane_dead"] is False
    same(ref, got)

    subprocess.run(["tmux", "-L", server, "set-option", "-t", session, "remain-on-exit", "on"], check=True)
    os.kill(int(pane_pid), 15)
    subprocess.run(["sleep", "0.3"])
    (state / "exit_code").write_text("143\n")
    ref, got = both(req)
    assert ref["exit_code"] == 143 and ref["pane_dead"] is True and not ref["alive"]
    same(ref, got)
    assert not list(tmp_path.rglob("PWNED")) and not os.path.exists("PWNED")


def test_files_are_read_whole_or_by_their_end_as_the_agent_reads_them(tmp_path, server):
    small, big, missing = tmp_path / "events.jsonl", tmp_path / "state.json", tmp_path / "nope"
    small.write_text('{"kind": "hang", "note": "ünïcode \\u0000 and a \'quote\'"}\n')
    line = "x" * 1000 + "\n"
    big.write_text("partial" + line * (node_agent.STATUS_FILE_CAP // len(line) + 5))
    req = {
        "op": "status",
        "state_dir": str(tmp_path / "none"),
        "tmux_panes": tmux.list_panes(server, "absent"),
        "read": {"watchdog_events": str(small), "watchdog_state": str(big), "other": str(missing)},
    }
    ref, got = both(req)
    assert ref["files"]["watchdog_events"] == small.read_text() and ref["files"]["other"] is None
    assert len(ref["files"]["watchdog_state"]) < node_agent.STATUS_FILE_CAP
    same(ref, got)


def test_several_requests_in_one_command_each_get_their_own_answer(tmp_path, server):
    reqs = []
    for i in range(300):  # ~200 kB of script: more than one command-line argument may hold
        state = tmp_path / f"s{i}"
        state.mkdir()
        if i % 3 != 2:
            (state / "exit_code").write_text(f"{i % 3}\n")
        reqs.append({"op": "status", "state_dir": str(state), "tmux_panes": tmux.list_panes(server, f"j{i}")})
    script = status_sh.script(reqs)
    assert len(script) > 128 * 1024
    done = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=120)
    got = status_sh.parse(done.stdout, reqs)
    assert [g["exit_code"] for g in got] == [(i % 3 if i % 3 != 2 else None) for i in range(300)]
    for req, answer in list(zip(reqs, got))[:6]:
        same(node_agent.op_status(req), answer)
    # a section the shell never printed (it ended early) is None, not another request's answer
    cut = done.stdout[: done.stdout.index(f"{status_sh.MARK} 2\n")]
    assert status_sh.parse(cut, reqs)[2] is None and status_sh.parse(cut, reqs)[1] is not None


def test_output_it_does_not_know_is_skipped():
    req = {"op": "status", "state_dir": "/x", "tmux_panes": ["tmux"], "read": {"a": "/y"}}
    out = f"Welcome to the node!\n{status_sh.MARK} 0\npid 1 2\nexit_code x\nfile b 3 YWJj\npanes 0  77\n"
    (got,) = status_sh.parse(out, [req])
    assert got["pid"] is None and got["exit_code"] is None and got["files"] == {"a": None}
    assert got["session"] is True and got["pane_dead"] is False and got["pane_status"] is None


def test_a_ps_block_asks_each_node_once_for_every_job(tmp_path, server, monkeypatch):
    """Inside ``kept_sessions(shell_status=True)`` (``ps``), the status reads of several jobs made at one moment
    reach a node as one shell command, and each job gets its own answer; outside, each read is one command."""
    import asyncio

    from launcher.agent import remote
    from launcher.config import ClusterConfig
    from launcher.tools import ssh

    cluster = ClusterConfig.model_validate({"nodes": [{"host": "localhost"}]})
    node = cluster.nodes[0]
    commands = []
    real_run = ssh.run

    async def counted(cfg, n, argv, **kw):
        commands.append(argv)
        return await real_run(cfg, n, argv, **kw)

    monkeypatch.setattr(ssh, "run", counted)
    reqs = []
    for i in range(4):
        (tmp_path / f"s{i}").mkdir()
        (tmp_path / f"s{i}" / "exit_code").write_text(f"{i}\n")
        reqs.append({"op": "status", "state_dir": str(tmp_path / f"s{i}"), "tmux_panes": tmux.list_panes(server, "x")})

    async def every():
        return await asyncio.gather(*(remote.call(cluster, node, r, timeout=30) for r in reqs))

    with remote.kept_sessions(shell_status=True):
        replies = remote.run_sync(every())
    assert [r.data["exit_code"] for r in replies] == [0, 1, 2, 3] and all(r.ok for r in replies)
    assert len(commands) == 1
    replies = asyncio.run(every())
    assert [r.data["exit_code"] for r in replies] == [0, 1, 2, 3] and len(commands) == 5


def test_an_exit_time_without_nanoseconds_still_reads_in_seconds():
    req = {"op": "status", "state_dir": "/x", "tmux_panes": ["tmux"]}
    (got,) = status_sh.parse(f"{status_sh.MARK} 0\nexit_code 0\nexit_mtime 1765000000.%N\n", [req])
    assert got["exit_code"] == 0 and got["exit_mtime"] == 1765000000.0


def test_a_job_ending_during_the_read_is_seen_exited_never_missing(tmp_path):
    """The wrapper writes its exit file, then ends its session. A read that looked for the file before asking
    tmux could see neither (a job that had just exited read as "missing"); both reads ask tmux first. Here the
    "tmux" command is the job ending at that very moment: it writes the file, and no session is left."""
    ending = ["sh", "-c", f"echo 3 > {tmp_path}/exit_code; exit 1"]
    req = {"op": "status", "state_dir": str(tmp_path), "tmux_panes": ending}
    assert node_agent.op_status(req)["exit_code"] == 3
    (tmp_path / "exit_code").unlink()
    done = subprocess.run(["sh", "-s"], input=status_sh.script([req]), capture_output=True, text=True, timeout=30)
    (got,) = status_sh.parse(done.stdout, [req])
    assert got["exit_code"] == 3 and got["session"] is False

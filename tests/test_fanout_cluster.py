"""The ssh fan-out window and the retries against real sshd (simulated cluster).

* ``ssh.run`` on 6 nodes with ``fanout: 2``: the nodes themselves record when each command ran;
  never more than 2 at once, and 2 at once is reached.
* node agent calls on 6 nodes with ``fanout: 2``: the choke point's own count.
* an sshd that drops every unauthenticated connection beyond one (``MaxStartups 1:100:1``, what a
  busy sshd does under a burst): without retries some connections fail with
  ``kex_exchange_identification``; through ``ssh.run`` every one succeeds.
* a node whose sshd is stopped is named after one attempt, not retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from launcher.agent.remote import call_all
from launcher.config import ClusterConfig
from launcher.tools import ssh
from tests.infra.simcluster import SSHD, SimCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BUSY_PORT = 2222


@pytest.fixture(scope="module")
def six():
    with SimCluster(6) as cluster:
        yield cluster


def config(sim, **ssh_fields) -> ClusterConfig:
    data = sim.cluster_config(workdir=REPO)
    data["ssh"].update(ssh_fields)
    cfg = ClusterConfig.model_validate(data)
    return cfg


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_ssh_run_keeps_to_the_window_as_the_nodes_see_it(six):
    cfg = config(six, fanout=2)
    stamp = six.shared_dir / f"window-{uuid.uuid4().hex[:6]}"
    stamp.mkdir()
    script = 'date +%s.%N > "$1.start"; sleep 1; date +%s.%N > "$1.end"'

    async def main():
        replies = await asyncio.gather(
            *(ssh.run(cfg.ssh, n, ["sh", "-c", script, "sh", str(stamp / n.label)], timeout=60) for n in cfg.nodes)
        )
        return replies, ssh.window(cfg.ssh)

    try:
        replies, window = asyncio.run(main())
        assert all(r.ok for r in replies), [r.error_line() for r in replies if not r.ok]
        intervals = [
            (float((stamp / f"{n.label}.start").read_text()), float((stamp / f"{n.label}.end").read_text()))
            for n in cfg.nodes
        ]
        assert max_overlap(intervals) == 2  # as many as the window allows, never more
        assert window.peak == 2 and window.waited >= 4
    finally:
        ssh.close_masters(cfg.ssh, cfg.nodes)


def test_agent_calls_keep_to_the_window(six):
    cfg = config(six, fanout=2)

    async def main():
        replies = await call_all(cfg, [(n, {"op": "read", "paths": []}) for n in cfg.nodes], timeout=30)
        return replies, ssh.window(cfg.ssh)

    try:
        replies, window = asyncio.run(main())
        assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
        assert window.peak == 2 and window.in_flight == 0
    finally:
        ssh.close_masters(cfg.ssh, cfg.nodes)


@pytest.fixture
def busy_sshd(six):
    """A second sshd on node 1 that drops every unauthenticated connection beyond the first."""
    node = six.nodes[0]
    conf = six.layout.path(f"sshd_busy_{uuid.uuid4().hex[:6]}")
    text = six.layout.sshd_config_text()
    assert "MaxStartups 100:30:200" in text
    conf.write_text(text.replace("MaxStartups 100:30:200", "MaxStartups 1:100:1"))
    proc = six.popen_in_ns(
        node,
        [SSHD, "-D", "-e", "-f", str(conf), "-o", f"ListenAddress={node.addr}:{BUSY_PORT}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((node.addr, BUSY_PORT), timeout=1) as s:
                if s.recv(8).startswith(b"SSH-"):
                    break
        except OSError:
            time.sleep(0.05)
    yield node
    proc.terminate()
    proc.wait(timeout=10)
    conf.unlink()


def test_connections_dropped_during_key_exchange_are_retried(six, busy_sshd, caplog):
    cfg = config(six, port=BUSY_PORT, fanout=16)
    node = next(n for n in cfg.nodes if n.label == busy_sshd.hostname)
    burst = 12

    async def once():  # one attempt each, as before retries existed
        return await asyncio.gather(
            *(ssh._run_once(cfg.ssh, node, ["echo", "ok"], input=None, timeout=30) for _ in range(burst))
        )

    async def retried():
        return await asyncio.gather(*(ssh.run(cfg.ssh, node, ["echo", "ok"], timeout=60) for _ in range(burst)))

    dropped = []
    for _ in range(3):  # a burst that happens to arrive one by one drops nothing: try again
        ssh.close_masters(cfg.ssh, [node])  # no master left from an earlier burst to carry it
        dropped = [r for r in asyncio.run(once()) if not r.ok]
        ssh.close_masters(cfg.ssh, [node])
        if dropped:
            break
    assert dropped, "the busy sshd dropped nothing: the fault was not injected"
    assert all(ssh.transient(r.returncode, r.stderr) for r in dropped), [r.stderr for r in dropped]

    caplog.set_level(logging.DEBUG, logger="launcher.tools.ssh")
    for _ in range(3):
        ssh.close_masters(cfg.ssh, [node])
        replies = asyncio.run(retried())
        ssh.close_masters(cfg.ssh, [node])
        assert all(r.ok and r.stdout.strip() == "ok" for r in replies), [r.stderr for r in replies if not r.ok]
        if "transient ssh failure" in caplog.text:
            break
    assert "transient ssh failure" in caplog.text


def test_a_node_without_sshd_is_named_after_one_attempt(six, caplog):
    cfg = config(six)
    down = six.nodes[5]
    node = next(n for n in cfg.nodes if n.label == down.hostname)
    six.stop_sshd(down)
    caplog.set_level(logging.DEBUG, logger="launcher.tools.ssh")
    try:
        ssh.close_masters(cfg.ssh, [node])  # the master an earlier test left open would answer for it
        reply = asyncio.run(ssh.run(cfg.ssh, node, ["true"], timeout=60))
        assert reply.returncode == 255 and "Connection refused" in reply.stderr
        assert "transient ssh failure" not in caplog.text
    finally:
        six.start_sshd(down)


def test_the_next_command_rides_the_master_this_one_left_open(six):
    """A command in another process leaves its connection open (``ControlPersist``) and the next one here
    finds it: one login per node for ``ps`` under ``watch``, not one per command."""
    cfg = config(six)
    node = next(n for n in cfg.nodes if n.label == six.nodes[2].hostname)
    ssh.close_masters(cfg.ssh, [node])
    code = (
        "import asyncio, json, sys; from launcher.config import ClusterConfig; from launcher.tools import ssh; "
        "cfg = ClusterConfig.model_validate(json.loads(sys.argv[1])); "
        "print(asyncio.run(ssh.run(cfg.ssh, cfg.nodes[2], ['hostname'])).stdout)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg.model_dump(mode="json"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == six.nodes[2].hostname
    try:
        check = subprocess.run(ssh.control_argv(cfg.ssh, node.host, "check"), capture_output=True, text=True)
        assert "Master running" in check.stderr, check.stderr
    finally:
        ssh.close_masters(cfg.ssh, [node])


def test_a_node_whose_network_vanished_under_an_open_master_is_named_within_seconds(six, caplog):
    """Packets to the node dropped, no connection closed: the master a command left open learns of it
    from its keep-alives, and the next command is told after those plus one connect timeout, not after
    its read's deadline (60 s here), and without a retry."""
    cfg = config(six, connect_timeout=3)
    gone = six.nodes[3]
    node = next(n for n in cfg.nodes if n.label == gone.hostname)
    assert asyncio.run(ssh.run(cfg.ssh, node, ["true"])).ok  # leaves its master open
    six.disconnect(gone)
    caplog.set_level(logging.DEBUG, logger="launcher.tools.ssh")
    try:
        t0 = time.monotonic()
        reply = asyncio.run(ssh.run(cfg.ssh, node, ["true"], timeout=60))
        elapsed = time.monotonic() - t0
    finally:
        six.reconnect(gone)
        ssh.close_masters(cfg.ssh, [node])
    assert reply.returncode == 255 and "Connection timed out" in reply.stderr, reply.stderr
    keepalives = ssh.keepalive_interval_s(cfg.ssh) * (ssh.KEEPALIVE_COUNT + 1)
    assert elapsed < keepalives + cfg.ssh.connect_timeout + 10, elapsed
    assert "transient ssh failure" not in caplog.text  # the master's end is not what failed


def test_logs_follow_on_more_nodes_than_the_window(six, capsys):
    """``logs -f`` opens its six streams two at a time and still follows every node to the end."""
    import yaml

    from launcher import api
    from launcher.cli import main as cli_main
    from launcher.config import JobConfig

    data = six.cluster_config(workdir=REPO)
    data["ssh"]["fanout"] = 2
    cfile = six.layout.path(f"fanout-{uuid.uuid4().hex[:6]}.yaml")
    cfile.write_text(yaml.safe_dump(data))
    cfg = ClusterConfig.model_validate(data)
    name = f"fan-{uuid.uuid4().hex[:6]}"
    job = JobConfig.model_validate({"name": name, "script": "tests/workers/echo_env.py", "env": {"ECHO_SLEEP": "3"}})
    try:
        api.launch(job, cfg, plain=True)
        assert cli_main(["logs", name, "-c", str(cfile), "-f"]) == 0
        out = capsys.readouterr().out
        for n in cfg.nodes:
            assert f"[{n.label}] echo worker wrote" in out and f"[{n.label}] corral: exited with status 0" in out
        assert "corral: log stream open" not in out
    finally:
        api.stop(name, cfg, timeout=2)
        ssh.close_masters(cfg.ssh, cfg.nodes)

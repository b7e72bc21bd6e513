"""Pure parts of running commands on many nodes: the fan-out window, which ssh failures are
retried, the backoff, the one-line node summary, node lookups. No ssh here: the window and the
retries against real sshd are in tests/test_fanout_cluster.py."""

from __future__ import annotations

import asyncio
import json
import random
import resource
import subprocess
import sys

import pytest

from launcher.config import ClusterConfig, validate
from launcher.errors import UserError
from launcher.runs.summary import fold, name_list, node_state_label
from launcher.tools import ssh

# Recorded from OpenSSH 9.2 clients (stderr, exit status 255).
KEX_RESET = "kex_exchange_identification: read: Connection reset by peer\r\nConnection reset by 10.213.7.12 port 22\r\n"
KEX_CLOSED = (
    "kex_exchange_identification: Connection closed by remote host\r\nConnection closed by 10.213.7.12 port 22\r\n"
)
BANNER = "Connection timed out during banner exchange\r\nConnection to 10.213.7.12 port 22 timed out\r\n"
REFUSED = "ssh: connect to host 10.213.7.12 port 22: Connection refused\r\n"
TIMED_OUT = "ssh: connect to host 10.213.7.99 port 22: Connection timed out\r\n"
NO_ROUTE = "ssh: connect to host 10.213.7.99 port 22: No route to host\r\n"
DENIED = "root@10.213.7.12: Permission denied (publickey).\r\n"
HOSTKEY = "Host key verification failed.\r\n"
# A shared multiplexing master that died under the command (its node's network gone, keep-alives
# unanswered): ssh falls back to a connection of its own, and that one's failure is the verdict.
MASTER_GONE_THEN_TIMED_OUT = (
    "mux_client_request_session: read from master failed: Broken pipe\r\n"
    "ssh: connect to host 10.213.227.12 port 22: Connection timed out\r\n"
)
MASTER_GONE_THEN_KEX_RESET = "mux_client_request_session: read from master failed: Broken pipe\r\n" + KEX_RESET


@pytest.mark.parametrize("stderr", [KEX_RESET, KEX_CLOSED, BANNER, MASTER_GONE_THEN_KEX_RESET])
def test_failures_before_the_command_started_are_transient(stderr):
    assert ssh.transient(255, stderr)


@pytest.mark.parametrize("stderr", [REFUSED, TIMED_OUT, NO_ROUTE, DENIED, HOSTKEY, "", MASTER_GONE_THEN_TIMED_OUT])
def test_a_dead_or_refusing_node_is_not_retried(stderr):
    assert not ssh.transient(255, stderr)


def test_only_ssh_s_own_exit_status_counts():
    # a remote command that printed the same words and exited 1 is the command's business
    assert not ssh.transient(1, KEX_RESET)
    assert not ssh.transient(0, KEX_RESET)


def _option(argv: list[str], name: str) -> list[str]:
    return [
        argv[i + 1].split("=", 1)[1]
        for i, a in enumerate(argv[:-1])
        if a == "-o" and argv[i + 1].startswith(name + "=")
    ]


@pytest.mark.parametrize(("connect_timeout", "interval"), [(10, "2"), (20, "2"), (4, "2"), (3, "1"), (1, "1")])
def test_a_silent_node_drops_its_master_within_about_six_seconds(connect_timeout, interval):
    # a later command's channel waits on a master until it drops, then ssh connects on its own:
    # a vanished node is named after the keep-alives plus one connect timeout, never the read's deadline
    cfg = ClusterConfig.model_validate({"nodes": [{"host": "a"}], "ssh": {"connect_timeout": connect_timeout}}).ssh
    argv = ssh.ssh_options(cfg, "a")
    assert _option(argv, "ServerAliveInterval") == [interval]
    assert _option(argv, "ServerAliveCountMax") == [str(ssh.KEEPALIVE_COUNT)]
    assert int(interval) * ssh.KEEPALIVE_COUNT <= max(6, connect_timeout)


def test_the_users_own_keepalive_wins():
    cfg = ClusterConfig.model_validate(
        {"nodes": [{"host": "a"}], "ssh": {"options": {"ServerAliveInterval": "30"}}}
    ).ssh
    argv = ssh.ssh_options(cfg, "a")
    assert _option(argv, "ServerAliveInterval") == ["30"] and _option(argv, "ServerAliveCountMax") == []


def test_every_process_names_a_nodes_master_alike(tmp_path):
    """The control socket depends on user, host, port, key and options only, so the next command finds the
    master this one left open; a different key or option is a different connection."""
    data = {"nodes": [{"host": "a"}], "ssh": {"user": "u", "port": 2200, "identity_file": "/k"}}
    here = ssh.control_path(ClusterConfig.model_validate(data).ssh, "a")
    code = (
        "import json, sys; from launcher.config import ClusterConfig; from launcher.tools import ssh; "
        "print(ssh.control_path(ClusterConfig.model_validate(json.loads(sys.argv[1])).ssh, 'a'))"
    )
    there = subprocess.run([sys.executable, "-c", code, json.dumps(data)], capture_output=True, text=True, check=True)
    assert there.stdout.strip() == here
    other_key = {**data, "ssh": {**data["ssh"], "identity_file": "/k2"}}
    other_opt = {**data, "ssh": {**data["ssh"], "options": {"Ciphers": "aes128-ctr"}}}
    assert ssh.control_path(ClusterConfig.model_validate(other_key).ssh, "a") != here
    assert ssh.control_path(ClusterConfig.model_validate(other_opt).ssh, "a") != here
    assert ssh.control_path(ClusterConfig.model_validate(data).ssh, "b") != here


def test_backoff_grows_is_capped_and_jittered():
    rng = random.Random(7)
    draws = [[ssh.backoff_s(a, rng) for _ in range(200)] for a in range(8)]
    for attempt, values in enumerate(draws):
        cap = min(ssh.RETRY_MAX_S, ssh.RETRY_BASE_S * 2**attempt)
        assert all(cap / 2 <= v <= cap for v in values)
        assert len(set(values)) > 100  # clients reset together come back spread out
    assert max(draws[-1]) <= ssh.RETRY_MAX_S


def test_window_never_exceeds_its_size_and_fills_up():
    async def main() -> ssh.Window:
        cfg = ClusterConfig.model_validate({"nodes": [{"host": "a"}], "ssh": {"fanout": 3}}).ssh
        seen = []

        async def job() -> None:
            async with ssh.slot(cfg):
                seen.append(ssh.window(cfg).in_flight)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(job() for _ in range(20)))
        w = ssh.window(cfg)
        assert max(seen) == 3 and w.in_flight == 0
        return w

    w = asyncio.run(main())
    assert w.peak == 3 and w.waited >= 17 - 3


def test_each_event_loop_has_its_own_window():
    cfg = ClusterConfig.model_validate({"nodes": [{"host": "a"}], "ssh": {"fanout": 2}}).ssh

    async def peak() -> int:
        async def job() -> None:
            async with ssh.slot(cfg):
                await asyncio.sleep(0.01)

        await asyncio.gather(*(job() for _ in range(4)))
        return ssh.window(cfg).peak

    assert asyncio.run(peak()) == 2
    assert asyncio.run(peak()) == 2  # a fresh loop: no "bound to a different event loop"


def test_fanout_is_checked():
    assert ClusterConfig.model_validate({"nodes": [{"host": "a"}]}).ssh.fanout == 32
    with pytest.raises(UserError, match=r"ssh.fanout"):
        validate(ClusterConfig, {"nodes": [{"host": "a"}], "ssh": {"fanout": 0}}, "cluster.yaml")


def test_fd_limit_is_raised_for_a_large_window_only_when_needed():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert ssh.raise_fd_limit(1) == soft  # a small window needs nothing
        want = 512 * ssh.FDS_PER_CONNECTION + ssh.FD_RESERVE
        got = ssh.raise_fd_limit(32, kept=480)
        assert got >= min(want, hard if hard != resource.RLIM_INFINITY else want)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_fold_names_the_odd_nodes():
    pairs = [(f"bn{i}", "running") for i in range(1, 33) if i != 17] + [("bn17", "unknown")]
    assert fold(pairs) == "31 running, 1 unknown: bn17"
    assert fold([("a", "running"), ("b", "running")]) == "2 running"
    many = [(f"n{i}", "exited 0") for i in range(20)] + [(f"m{i}", "missing") for i in range(6)]
    assert fold(many) == "20 exited 0, 6 missing: m0, m1, m2, m3 +2 more"
    assert fold([]) == "no nodes"
    assert name_list(["a", "b"]) == "a, b"
    assert node_state_label("exited", 0) == "exited 0" and node_state_label("running", None) == "running"


def test_node_lookup_by_name_or_host_follows_the_node_list():
    cfg = ClusterConfig.model_validate({"nodes": [{"host": f"10.0.0.{i}", "name": f"n{i}"} for i in range(1, 513)]})
    assert cfg.node("n300").host == "10.0.0.300" and cfg.node("10.0.0.7").label == "n7"
    with pytest.raises(KeyError):
        cfg.node("n999")
    cfg.nodes = cfg.nodes[:2]
    with pytest.raises(KeyError):
        cfg.node("n300")  # the index is rebuilt for a new node list


def test_top_names_the_nodes_that_are_not_up_in_its_header():
    from launcher.top.model import Frame, NodeRow
    from launcher.top.render import header

    nodes = [NodeRow(f"bn{i}", f"10.0.0.{i}", True) for i in range(1, 33)]
    assert "32/32 nodes up" in header(Frame(t=0.0, nodes=nodes, stragglers={}), None).plain
    nodes[16] = NodeRow("bn17", "10.0.0.17", False, error="ssh: connect to host: Connection refused")
    text = header(Frame(t=0.0, nodes=nodes, stragglers={}), None).plain
    assert "31/32 nodes up" in text and "31 up, 1 unreachable: bn17" in text

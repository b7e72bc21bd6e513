"""The simulated cluster itself: nodes, ssh, network, faults, teardown.

Layout tests run anywhere; the rest are marked ``cluster`` (root, ip netns, sshd).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.infra.simcluster import (
    MAX_NODES,
    STOCK_SHELL_INIT,
    SimCluster,
    SimLayout,
    find_leftovers,
    process_exited,
    reap_stale_runs,
)

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable  # lives under /work, which every node shares


# ---- pure layout -------------------------------------------------------------


def test_layout_names_fit_interface_limit_and_are_unique() -> None:
    layout = SimLayout.plan(MAX_NODES, "sabcde", "10.213.7.0/24")
    links = [layout.bridge] + [n.host_veth for n in layout.nodes]
    assert all(len(name) <= 15 for name in links), links
    for attr in ("hostname", "netns", "addr", "host_veth"):
        values = [getattr(n, attr) for n in layout.nodes]
        assert len(set(values)) == MAX_NODES, attr
    assert layout.bridge_addr == "10.213.7.1"
    assert [n.addr for n in layout.nodes[:2]] == ["10.213.7.11", "10.213.7.12"]
    assert all(n.netns.startswith("corral-sim-sabcde-") for n in layout.nodes)
    assert layout.run_dir == "/var/tmp/corral-sim-sabcde"


def test_layout_files_list_every_node() -> None:
    layout = SimLayout.plan(2, "sabcde", "10.213.7.0/24")
    hosts = layout.hosts_file_text()
    assert "10.213.7.11\tsabcde-n1\n" in hosts and "10.213.7.12\tsabcde-n2\n" in hosts
    assert "127.0.0.1\tlocalhost" in hosts
    ssh_config = layout.ssh_config_text()
    assert "Host sabcde-n2\n    HostName 10.213.7.12" in ssh_config
    assert "StrictHostKeyChecking yes" in ssh_config
    assert " /tmp/" not in ssh_config  # nodes cannot see the host's /tmp
    assert "-i crl-sabcde-br -o crl-sabcde-br" in " ".join(layout.iptables_rule())
    assert SimLayout.from_json(layout.to_json()) == layout


def test_cluster_config_is_a_valid_corral_cluster_config() -> None:
    layout = SimLayout.plan(3, "sabcde", "10.213.7.0/24")
    config = layout.cluster_config(workdir="/work/x", venv="/work/x/.venv")
    assert config["nodes"][1] == {"host": "10.213.7.12", "name": "sabcde-n2", "addr": "10.213.7.12", "gpus": 0}
    assert config["ssh"]["identity_file"] == "/var/tmp/corral-sim-sabcde/id_ed25519"
    assert config["storage"]["runs"].startswith("/var/tmp/corral-sim-sabcde/")
    cluster_module = pytest.importorskip("launcher.config.cluster", reason="launcher.config not on this branch")
    model = cluster_module.ClusterConfig.model_validate(config)  # strict: extra keys are errors
    assert [n.label for n in model.nodes] == ["sabcde-n1", "sabcde-n2", "sabcde-n3"]


def test_layout_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        SimLayout.plan(0, "sabcde", "10.213.7.0/24")
    with pytest.raises(ValueError):
        SimCluster(MAX_NODES + 1)


# ---- a live cluster -------------------------------------------------------------


@pytest.mark.cluster
def test_each_node_reports_its_own_hostname(sim_cluster: SimCluster) -> None:
    for node in sim_cluster.nodes:
        result = sim_cluster.run(node, ["hostname"], check=True)
        assert result.stdout.strip() == node.hostname


@pytest.mark.cluster
def test_each_node_has_its_own_tmp(sim_cluster: SimCluster) -> None:
    a, b = sim_cluster.nodes[:2]
    probe = f"/tmp/corral-sim-probe-{uuid.uuid4().hex}"
    sim_cluster.run(a, ["sh", "-c", f"echo hi > {probe}"], check=True)
    assert sim_cluster.run(a, ["cat", probe]).stdout == "hi\n"
    assert sim_cluster.run(b, ["test", "-e", probe]).returncode == 1
    assert not Path(probe).exists()
    # ...while the rest of the filesystem is shared with the host.
    assert sim_cluster.run(b, ["test", "-f", str(REPO / "tests" / "infra" / "simcluster.py")]).returncode == 0


@pytest.mark.cluster
def test_private_home_is_per_node_and_copy_on_write(make_sim_cluster) -> None:
    home = Path.home()
    probe = home / f"corral-sim-home-probe-{uuid.uuid4().hex}"
    existing = home / f"corral-sim-home-lower-{uuid.uuid4().hex}"
    try:
        existing.write_text("host\n")  # before the nodes start: what the overlay shows below
        cluster = make_sim_cluster(2, private_home=True)
        a, b = cluster.nodes

        # (its logins stalled 30-60 s under load while nodes read the host's .bashrc: STOCK_SHELL_INIT)
        cluster.run(a, ["sh", "-c", f"echo hi > {probe}"], check=True)
        assert cluster.run(a, ["cat", str(probe)]).stdout == "hi\n"
        assert cluster.run(b, ["test", "-e", str(probe)]).returncode == 1
        assert not probe.exists()  # the host's home is untouched
        assert cluster.run(b, ["cat", str(existing)]).stdout == "host\n"
        layout = cluster.layout
        cluster.close()
        assert find_leftovers(layout) == []
    finally:
        probe.unlink(missing_ok=True)
        existing.unlink(missing_ok=True)


@pytest.mark.cluster
def test_a_node_logs_in_with_a_fresh_vms_shell_init_not_the_hosts(make_sim_cluster) -> None:
    """Root's .bashrc on this machine runs `pyenv init` (~70 processes per ssh session, and a lock file that
    stalled logins on a node with a private home); a node reads Debian's stock files, in a private home too."""
    cluster = make_sim_cluster(1, private_home=True)
    (node,) = cluster.nodes
    for name, stock in STOCK_SHELL_INIT.items():
        if (Path.home() / name).exists() and Path(stock).exists():
            assert cluster.run(node, ["cat", str(Path.home() / name)], check=True).stdout == Path(stock).read_text()
    # what a command over ssh sees: bash read the node's .bashrc (ssh sessions do), which sets nothing
    out = cluster.run(node, 'echo "${PYENV_ROOT:-unset}"', check=True).stdout
    assert out == "unset\n"


@pytest.mark.cluster
def test_node_names_resolve_inside_nodes(sim_cluster: SimCluster) -> None:
    a, b = sim_cluster.nodes[:2]
    out = sim_cluster.run(a, ["getent", "hosts", b.hostname], check=True).stdout
    assert out.split() == [b.addr, b.hostname]


LISTENER = textwrap.dedent("""
    import socket, sys
    srv = socket.socket()
    srv.bind(("0.0.0.0", 0))
    srv.listen()
    print(srv.getsockname()[1], flush=True)
    for _ in range(int(sys.argv[1])):
        conn, _ = srv.accept()
        conn.sendall(socket.gethostname().encode())
        conn.close()
""")

CONNECT = textwrap.dedent("""
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
            print("reply", s.recv(100).decode())
    except OSError as exc:
        print("unreachable", type(exc).__name__)
""")


def _connect_from(cluster: SimCluster, node: object, host: str, port: int, timeout: float = 3.0) -> str:
    return cluster.run(node, [PY, "-c", CONNECT, host, str(port), str(timeout)], check=True).stdout.strip()


@pytest.mark.cluster
def test_node_reaches_a_tcp_port_on_another_node(sim_cluster: SimCluster) -> None:
    a, b = sim_cluster.nodes[:2]
    listener = sim_cluster.popen_in_ns(b, [PY, "-c", LISTENER, "2"], stdout=subprocess.PIPE, text=True)
    port = int(listener.stdout.readline())
    assert _connect_from(sim_cluster, a, b.hostname, port) == f"reply {b.hostname}"
    assert _connect_from(sim_cluster, a, b.addr, port) == f"reply {b.hostname}"
    assert listener.wait(timeout=10) == 0


@pytest.mark.cluster
def test_stopped_sshd_refuses_and_restarted_sshd_serves(sim_cluster: SimCluster) -> None:
    node = sim_cluster.nodes[1]
    probe = f"/tmp/survives-sshd-restart-{uuid.uuid4().hex}"
    sim_cluster.run(node, ["touch", probe], check=True)
    sim_cluster.stop_sshd(node)
    try:
        assert not sim_cluster.sshd_running(node)
        assert sim_cluster.run(node, ["true"]).returncode == 255  # ssh's own failure
        assert sim_cluster.run(sim_cluster.nodes[0], ["true"]).returncode == 0
    finally:
        sim_cluster.start_sshd(node)
    assert sim_cluster.run(node, ["hostname"], check=True).stdout.strip() == node.hostname
    assert sim_cluster.run(node, ["test", "-e", probe]).returncode == 0  # same /tmp, like a VM


@pytest.mark.cluster
def test_disconnected_node_is_unreachable_until_reconnected(sim_cluster: SimCluster) -> None:
    a, b, c = sim_cluster.nodes
    sim_cluster.disconnect(c)
    try:
        assert not sim_cluster.reachable(c, timeout_s=0.5)
        assert _connect_from(sim_cluster, a, c.addr, 22, timeout=0.5) == "unreachable TimeoutError"
        assert _connect_from(sim_cluster, a, b.addr, 22).startswith("reply")  # the rest still talk
    finally:
        sim_cluster.reconnect(c)
    assert sim_cluster.reachable(c, timeout_s=3)
    assert _connect_from(sim_cluster, a, c.hostname, 22).startswith("reply")
    assert sim_cluster.run(c, ["hostname"], check=True).stdout.strip() == c.hostname


def _iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)


@pytest.mark.cluster
def test_node_traffic_survives_a_dockerd_style_forward_drop(sim_cluster: SimCluster) -> None:
    """dockerd sets FORWARD to DROP with br_netfilter loaded; our ACCEPT rule must win.

    Mimicked with a DROP for our bridge only (changing the global policy would
    disturb everything else on the machine), tagged so teardown removes it too.
    """
    if subprocess.run(["which", "iptables"], capture_output=True).returncode != 0:
        pytest.skip("no iptables: nothing filters bridged traffic here")
    nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not nf.exists() or nf.read_text().strip() != "1":
        pytest.skip("br_netfilter not active: bridged traffic bypasses iptables here")
    a, b = sim_cluster.nodes[:2]
    layout = sim_cluster.layout
    drop = ["FORWARD", "-i", layout.bridge, "-o", layout.bridge, "-m", "comment", "--comment", layout.tag, "-j", "DROP"]
    _iptables("-A", *drop)
    try:
        assert _connect_from(sim_cluster, a, b.addr, 22).startswith("reply")
        _iptables("-D", *layout.iptables_rule())  # without our rule, traffic vanishes
        try:
            assert _connect_from(sim_cluster, a, b.addr, 22, timeout=0.5) == "unreachable TimeoutError"
        finally:
            _iptables("-I", *layout.iptables_rule())
    finally:
        _iptables("-D", *drop)
    assert _connect_from(sim_cluster, a, b.addr, 22).startswith("reply")


@pytest.mark.cluster
def test_cluster_config_works_with_a_plain_ssh_command_line(sim_cluster: SimCluster) -> None:
    config = sim_cluster.cluster_config()
    assert [n["name"] for n in config["nodes"]] == [n.hostname for n in sim_cluster.nodes]
    assert {n["gpus"] for n in config["nodes"]} == {0}
    assert config["workdir"] == str(REPO)
    ssh = config["ssh"]
    for node in config["nodes"]:
        # How the launcher calls ssh: -o options, -i, -p, -l, the node's host.
        options = {**ssh["options"], "ConnectTimeout": ssh["connect_timeout"]}
        argv = [
            "ssh",
            *(a for k, v in options.items() for a in ("-o", f"{k}={v}")),
            "-i",
            ssh["identity_file"],
            "-p",
            str(ssh["port"]),
            "-l",
            ssh["user"],
            node["host"],
            "hostname",
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert (result.returncode, result.stdout.strip()) == (0, node["name"]), result.stderr
    for path in config["storage"].values():
        assert sim_cluster.run(0, ["test", "-d", path]).returncode == 0
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(sim_cluster.write_cluster_config().read_text()) == config


@pytest.mark.cluster
def test_parallel_clusters_do_not_share_names_or_subnets(sim_cluster: SimCluster, make_sim_cluster) -> None:
    other = make_sim_cluster(1)
    assert other.prefix != sim_cluster.prefix
    assert other.layout.subnet != sim_cluster.layout.subnet
    assert other.run(0, ["hostname"], check=True).stdout.strip() == other.nodes[0].hostname


# ---- crashes and teardown ------------------------------------------------------------


def _tmux_server_pid(cluster: SimCluster, node: object) -> int:
    cluster.run(node, ["tmux", "new-session", "-d", "-s", "job", "sleep 1000"], check=True)
    return int(cluster.run(node, ["tmux", "display-message", "-p", "#{pid}"], check=True).stdout)


def _alive(pid: int) -> bool:
    # Killed orphans may stay zombies where PID 1 does not reap: dead all the same.
    return not process_exited(pid)


@pytest.mark.cluster
def test_kill_node_processes_is_a_crash_and_start_sshd_a_reboot(make_sim_cluster) -> None:
    cluster = make_sim_cluster(1)
    tmux_pid = _tmux_server_pid(cluster, 0)  # tmux daemonizes: not a child of sshd
    cluster.kill_node_processes(0)
    assert not _alive(tmux_pid)
    assert not cluster.reachable(0, timeout_s=0.5)
    cluster.start_sshd(0)
    assert cluster.run(0, ["hostname"], check=True).stdout.strip() == cluster.nodes[0].hostname
    assert cluster.run(0, ["tmux", "has-session", "-t", "job"]).returncode != 0  # fresh /tmp


@pytest.mark.cluster
def test_teardown_leaves_nothing(make_sim_cluster) -> None:
    cluster = make_sim_cluster(2)
    layout = cluster.layout
    pids = [
        _tmux_server_pid(cluster, 1),
        cluster.popen_in_ns(0, ["sleep", "1000"]).pid,
        *(p.pid for p in cluster._anchors.values()),
        *(p.pid for p in cluster._sshds.values()),
    ]
    assert all(_alive(p) for p in pids)
    if subprocess.run(["which", "iptables"], capture_output=True).returncode == 0:
        assert any(x.startswith("iptables rule") for x in find_leftovers(layout))
    cluster.close()
    assert find_leftovers(layout) == []
    assert not any(_alive(p) for p in pids)
    listing = subprocess.run(["ip", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    assert layout.bridge not in listing
    cluster.close()  # idempotent


def _run_inner_pytest(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Run a generated test file with our conftest as a plugin; return {test name: outcome}."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(body))
    junit = tmp_path / "junit.xml"
    subprocess.run(
        [
            PY,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_inner.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "CI": "", **(env or {})},
    )
    import xml.etree.ElementTree as ET

    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    return outcomes


@pytest.mark.cluster
def test_teardown_runs_when_a_test_fails_midway(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    outcomes = _run_inner_pytest(
        tmp_path,
        f"""
        import json, subprocess
        def test_fails(make_sim_cluster):
            cluster = make_sim_cluster(2)
            cluster.run(1, ["tmux", "new-session", "-d", "sleep 1000"], check=True)
            pid = int(cluster.run(1, ["tmux", "display-message", "-p", "#{{pid}}"], check=True).stdout)
            with open({str(record)!r}, "w") as f:
                f.write(json.dumps({{"layout": cluster.layout.to_json(), "pid": pid}}))
            assert False, "boom"
    """,
    )
    assert outcomes == {"test_fails": "failure"}
    data = json.loads(record.read_text())
    assert find_leftovers(SimLayout.from_json(data["layout"])) == []
    assert not _alive(data["pid"])


@pytest.mark.cluster
def test_stale_run_of_a_killed_process_is_reaped(tmp_path: Path) -> None:
    record = tmp_path / "layout.json"
    script = textwrap.dedent(f"""
        import time
        from tests.infra.simcluster import SimCluster
        cluster = SimCluster(2).start()
        open({str(record)!r}, "w").write(cluster.layout.to_json())
        time.sleep(1000)
    """)
    owner = subprocess.Popen([PY, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 30
        while not record.exists() or not record.read_text().endswith("}"):
            assert owner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        layout = SimLayout.from_json(record.read_text())
        assert layout.prefix not in reap_stale_runs()  # its owner is alive
    finally:
        owner.send_signal(signal.SIGKILL)  # no atexit, no finalizer
        owner.wait()
    assert find_leftovers(layout) != []  # sshds and namespaces outlive their owner
    reap_stale_runs()  # (a parallel session's reaper may have beaten us to it: fine)
    assert find_leftovers(layout) == []


def test_skips_for_missing_facilities_fail_on_ci(tmp_path: Path) -> None:
    body = """
        import pytest
        @pytest.mark.cluster
        def test_cluster(): pytest.skip("missing facility: no sshd")
        @pytest.mark.docker
        def test_docker(): pytest.skip("engine gone")
        def test_facility(): pytest.skip("missing facility: no ip netns")
        @pytest.mark.gpu
        def test_gpu(): pytest.skip("no CUDA GPU")
        def test_plain(): pytest.skip("not relevant here")
        @pytest.mark.cluster
        @pytest.mark.xfail(reason="known")
        def test_xfail(): assert False
    """
    on_ci = _run_inner_pytest(tmp_path, body, {"CI": "true"})
    # A failure in setup (the docker marker's own facility check) is reported as an error.
    loud = {name for name, outcome in on_ci.items() if outcome in ("failure", "error")}
    assert loud == {"test_cluster", "test_docker", "test_facility"}, on_ci
    assert on_ci["test_gpu"] == on_ci["test_plain"] == on_ci["test_xfail"] == "skipped"
    assert set(_run_inner_pytest(tmp_path, body).values()) == {"skipped"}


ALL_REDUCE = textwrap.dedent("""
    import socket
    import torch
    import torch.distributed as dist
    dist.init_process_group("gloo")
    t = torch.full((4,), float(dist.get_rank() + 1))
    dist.all_reduce(t)
    print(f"rank {dist.get_rank()}/{dist.get_world_size()} on {socket.gethostname()}: {t[0].item()}")
    dist.destroy_process_group()
""")


@pytest.mark.cluster
@pytest.mark.slow
def test_torchrun_c10d_rendezvous_across_nodes(make_sim_cluster) -> None:
    """What the cluster is for: torchrun on two nodes finds its peer by hostname."""
    pytest.importorskip("torch")
    cluster = make_sim_cluster(2)
    script = cluster.shared_dir / "all_reduce.py"
    script.write_text(ALL_REDUCE)
    first = cluster.nodes[0]
    torchrun = [
        PY,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"{first.hostname}:29400",
        "--rdzv-id",
        cluster.prefix,
        "--rdzv-conf",
        "join_timeout=60",
        str(script),
    ]
    procs = [
        subprocess.Popen(
            cluster.ssh_argv(n, torchrun),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in cluster.nodes
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    lines = sorted(line for out, _ in outputs for line in out.splitlines() if line.startswith("rank"))
    assert lines == [
        f"rank 0/2 on {cluster.nodes[0].hostname}: 3.0",
        f"rank 1/2 on {cluster.nodes[1].hostname}: 3.0",
    ] or lines == [f"rank 0/2 on {cluster.nodes[1].hostname}: 3.0", f"rank 1/2 on {cluster.nodes[0].hostname}: 3.0"], (
        lines
    )


def test_missing_facility_names_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.infra import simcluster

    monkeypatch.setattr(simcluster.os, "geteuid", lambda: 1000)
    assert "root" in simcluster.missing_facility()

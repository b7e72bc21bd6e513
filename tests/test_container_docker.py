"""Builder-generated container runs against a real Docker engine (marked ``docker``).

Image: ``corral-test-base:1`` (tests/infra/docker_fixtures.py), with the venv and its base interpreter
bind-mounted read-only. Every container carries ``corral.test=<run id>`` and is removed afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from container.facts import IbPaths
from container.plan import RunContext
from container.render import render_docker_argv, render_sdk_kwargs
from container.runtime import container_states, gather_facts, prepare, remove_job_containers
from launcher.config.job import ContainerConfig
from launcher.errors import UserError
from tests.infra.docker_fixtures import TEST_LABEL, python_mounts

pytestmark = pytest.mark.docker

UVERBS_MAJOR, UVERBS_MINOR = 231, 192  # what the mlx5 uverbs0 node uses; no driver here, so open() gives ENXIO

WORKER = """\
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.full((4,), float(rank + 1))
dist.all_reduce(t)
print("ALLREDUCE", rank, world, t.tolist(), flush=True)
if rank == 0:
    torch.save({"step": 1, "t": t}, os.path.join(os.environ["CORRAL_CKPT_DIR"], "step_1.pt"))
dist.destroy_process_group()
"""

INSPECT = """\
import errno, json, os, stat
out = {}
st = os.stat("/dev/infiniband/uverbs0")
out["uverbs0"] = [stat.S_ISCHR(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)]
try:
    open("/dev/infiniband/uverbs0", "rb")
    out["open"] = "ok"
except OSError as e:
    out["open"] = errno.errorcode[e.errno]   # ENXIO: the cgroup let us through; EPERM: it did not
out["nccl_conf"] = open("/etc/nccl.conf").read()
try:
    open("/etc/nccl.conf", "a").write("x")
    out["nccl_conf_write"] = "ok"
except OSError as e:
    out["nccl_conf_write"] = errno.errorcode[e.errno]
out["nccl_dir"] = sorted(os.listdir("/etc/nccl"))
ck = os.environ["CORRAL_CKPT_DIR"]
open(os.path.join(ck, "from_container.txt"), "w").write("saved inside the container")
import resource
out["memlock"] = resource.getrlimit(resource.RLIMIT_MEMLOCK)
out["stack"] = resource.getrlimit(resource.RLIMIT_STACK)
print("INSPECT " + json.dumps(out), flush=True)
"""


def make_ib_standins(root: Path) -> IbPaths:
    ib = IbPaths.under(root / "ib")
    Path(ib.dev_dir).mkdir(parents=True)
    os.mknod(f"{ib.dev_dir}/uverbs0", 0o666 | 0o020000, os.makedev(UVERBS_MAJOR, UVERBS_MINOR))
    # No sysfs stand-in: the container's /sys is a read-only sysfs, and a bind target must exist
    # in it (on an IB node /sys/class/infiniband does). Its absence exercises the "missing" note.
    Path(ib.nccl_dir).mkdir(parents=True)
    Path(ib.nccl_dir, "topo.xml").write_text("<system/>\n")
    Path(ib.nccl_conf).write_text("NCCL_IB_HCA=mlx5_0\n")
    return ib


def run_context(host_dir: Path, run_id: str, node: str, command: tuple[str, ...], **kw) -> RunContext:
    work = host_dir / "work"
    work.mkdir(exist_ok=True)
    job = f"dk-{run_id}"
    ckpt = host_dir / "ckpt" / job
    return RunContext(
        job=job,
        node=node,
        command=command,
        workdir=str(work),
        venv=sys.prefix,
        run_dir=str(host_dir / "runs" / job),
        ckpt_dir=str(ckpt),
        env={"CORRAL_CKPT_DIR": str(ckpt), "PYTHONUNBUFFERED": "1"},
        labels={TEST_LABEL: run_id},
        **kw,
    )


def container_cfg(image: str, facts=None, **kw) -> ContainerConfig:
    """The job's container section; memlock at what the node grants (the preflight says what works here)."""
    memlock = "unlimited"
    if facts is not None and facts.rlimits and not facts.rlimits.can_raise and facts.rlimits.memlock_hard != -1:
        memlock = facts.rlimits.memlock_hard
    return ContainerConfig(**({"image": image, "mounts": python_mounts(), "ulimits": {"memlock": memlock}} | kw))


def prepared(cfg_kw: dict, ctx: RunContext, docker, image: str, ib: IbPaths = IbPaths()):
    probe_cfg = container_cfg(image, **cfg_kw)
    facts = gather_facts(probe_cfg, ctx, docker, ib=ib)
    return prepare(container_cfg(image, facts, **cfg_kw), ctx, docker, facts)


def test_generated_config_runs_with_ib_devices_nccl_mounts_and_host_checkpoints(
    docker_cli, test_image, docker_run_id, host_dir
):
    run_id, _ = docker_run_id
    ib = make_ib_standins(host_dir)
    ctx = run_context(host_dir, run_id, "n0", ("python", "-c", INSPECT))
    p = prepared({}, ctx, docker_cli, test_image, ib)
    assert [d.container for d in p.plan.devices] == ["/dev/infiniband/uverbs0"]
    assert len(p.plan.notes) == 1 and f"{ib.sys_dir} (missing, expected a directory)" in p.plan.notes[0]
    out = docker_cli.run(render_docker_argv(p.plan), timeout=120).stdout
    seen = json.loads(out.split("INSPECT ", 1)[1])
    assert seen["uverbs0"] == [True, UVERBS_MAJOR, UVERBS_MINOR]
    assert seen["open"] == "ENXIO", "the device cgroup must allow the --device node (EPERM means it did not)"
    assert seen["nccl_conf"] == "NCCL_IB_HCA=mlx5_0\n" and seen["nccl_conf_write"] == "EROFS"
    assert seen["nccl_dir"] == ["topo.xml"]
    assert seen["stack"] == [64 << 20, 64 << 20]
    landed = Path(ctx.ckpt_dir, "from_container.txt")
    assert landed.read_text() == "saved inside the container", "the checkpoint must land on the host path"
    states = container_states(docker_cli, ctx.job)
    assert [(s["node"], s["state"], s["exit_code"]) for s in states] == [("n0", "exited", 0)]


def test_sdk_kwargs_run_the_same_plan(docker_cli, test_image, docker_run_id, host_dir):
    import docker as docker_sdk

    run_id, _ = docker_run_id
    ctx = run_context(
        host_dir,
        run_id,
        "n0",
        ("python", "-c", "import os; open(os.environ['CORRAL_CKPT_DIR'] + '/sdk.txt', 'w').write('sdk')"),
    )
    p = prepared({}, ctx, docker_cli, test_image)
    client = docker_sdk.from_env()
    try:
        container = client.containers.run(**render_sdk_kwargs(p.plan))
        assert container.wait(timeout=120)["StatusCode"] == 0, container.logs().decode()
        assert Path(ctx.ckpt_dir, "sdk.txt").read_text() == "sdk"
        attrs = client.api.inspect_container(p.plan.name)["HostConfig"]
        assert attrs["NetworkMode"] == "host" and attrs["IpcMode"] == "host" and attrs["CapAdd"] == ["IPC_LOCK"]
        assert not attrs["Privileged"]
    finally:
        client.close()


def test_two_containers_run_a_gloo_allreduce_with_torchrun(
    docker_cli, test_image, docker_run_id, docker_network, host_dir
):
    run_id, _ = docker_run_id
    (host_dir / "work").mkdir()
    (host_dir / "work" / "worker.py").write_text(WORKER)
    plans = []
    for rank, node in enumerate(("n0", "n1")):
        torchrun = (
            "torchrun",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(rank),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            "n0:29400",
            "--rdzv-id",
            run_id,
            "--rdzv-conf",
            "join_timeout=90",
            "worker.py",
        )
        ctx = run_context(host_dir, run_id, node, torchrun)
        plans.append(prepared({"network": docker_network}, ctx, docker_cli, test_image).plan)
    for plan in plans:
        docker_cli.run(render_docker_argv(plan, detach=True))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = container_states(docker_cli, plans[0].labels["corral.job"])
        if len(states) == 2 and all(s["state"] == "exited" for s in states):
            break
        time.sleep(1)
    logs = {p.node: docker_cli.run(["logs", p.name]).stdout + docker_cli.run(["logs", p.name]).stderr for p in plans}
    assert [(s["node"], s["exit_code"]) for s in states] == [("n0", 0), ("n1", 0)], logs
    assert "ALLREDUCE 0 2 [3.0, 3.0, 3.0, 3.0]" in logs["n0"] and "ALLREDUCE 1 2 [3.0, 3.0, 3.0, 3.0]" in logs["n1"], (
        logs
    )
    import torch

    saved = torch.load(Path(host_dir, "ckpt", plans[0].labels["corral.job"], "step_1.pt"))
    assert saved["step"] == 1 and saved["t"].tolist() == [3.0] * 4


def test_stop_leaves_no_container(docker_cli, test_image, docker_run_id, host_dir):
    run_id, _ = docker_run_id
    ctx = run_context(host_dir, run_id, "n0", ("python", "-c", "import time; time.sleep(300)"))
    p = prepared({}, ctx, docker_cli, test_image)
    docker_cli.run(render_docker_argv(p.plan, detach=True))
    assert [s["state"] for s in container_states(docker_cli, ctx.job)] == ["running"]
    removed = remove_job_containers(docker_cli, ctx.job, timeout=2)
    assert removed == [p.plan.name]
    assert docker_cli.containers({"corral.job": ctx.job}) == []


def test_every_problem_is_reported_before_anything_starts(docker_cli, test_image, docker_run_id, host_dir):
    run_id, _ = docker_run_id
    not_a_device = host_dir / "not-a-device"
    not_a_device.write_text("")
    ctx = run_context(host_dir, run_id, "n0", ("python", "-c", "print(1)"))
    bad = ContainerConfig(
        image=f"corral-test-absent-{run_id}:1",
        pull="missing",
        mounts=[{"source": str(host_dir / "no-such-dir")}],
        devices=[str(not_a_device)],
        ulimits={"memlock": "unlimited"},
        gpus="all",
    )
    facts = gather_facts(bad, ctx, docker_cli).with_gpus(1)  # the node claims a GPU: Docker must be able to give it
    with pytest.raises(UserError) as info:
        prepare(bad, ctx, docker_cli, facts)
    text = str(info.value)
    assert "nothing was started" in text
    assert "is not present on the node and could not be pulled" in text
    assert f"mount source {host_dir / 'no-such-dir'} (extra) does not exist" in text
    assert f"device {not_a_device} is a regular file, not a device node" in text
    assert "install the NVIDIA Container Toolkit" in text
    if facts.rlimits and not facts.rlimits.can_raise and facts.rlimits.memlock_hard != -1:
        assert "container.ulimits.memlock unlimited is above the node's hard limit" in text
    assert docker_cli.containers({"corral.job": ctx.job}) == []


@pytest.mark.parametrize("what", ["gpus", "memlock"])
def test_docker_refusals_become_sentences(docker_cli, test_image, docker_run_id, host_dir, what):
    """Where the preflight could be bypassed, docker's own error is turned into the same advice."""
    from container.docker import DockerError

    run_id, _ = docker_run_id
    ctx = run_context(host_dir, run_id, "n0", ("python", "-c", "print(1)"))
    facts = gather_facts(container_cfg(test_image), ctx, docker_cli)
    if what == "memlock" and (facts.rlimits is None or facts.rlimits.can_raise or facts.rlimits.memlock_hard == -1):
        pytest.skip("this host grants unlimited memlock: nothing to refuse")
    from container.builder import build_plan

    cfg = container_cfg(test_image, facts) if what == "gpus" else container_cfg(test_image, gpus="none")
    plan = build_plan(cfg, ctx, facts.with_gpus(1 if what == "gpus" else 0))
    with pytest.raises(DockerError) as info:
        docker_cli.run(render_docker_argv(plan), timeout=120)
    text = str(info.value)
    assert ("install the NVIDIA Container Toolkit" if what == "gpus" else "container.ulimits.memlock") in text, text

"""The pure container builder and its renderers: golden files, rules, quoting, preflight and error sentences."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from container.builder import build_plan, container_name
from container.docker import explain
from container.facts import DockerFacts, IbPaths, NodeFacts, Rlimits
from container.launch import node_argv
from container.plan import RunContext
from container.preflight import check_plan
from container.render import render_docker_argv, render_sdk_kwargs, render_shell, sdk_gaps
from launcher.config import JobConfig, validate
from launcher.config.job import ContainerConfig
from launcher.errors import ConfigError, UserError
from tests.infra import golden
from tests.infra.hostile import HOSTILE_PATH

MIB = 1 << 20

IB = IbPaths()
IB_DEVICES = {f"/dev/infiniband/uverbs{i}": "char" for i in range(2)} | {"/dev/infiniband/rdma_cm": "char"}
ALL_IB_PATHS = {"/dev/infiniband": "dir", "/sys/class/infiniband": "dir", "/etc/nccl": "dir", "/etc/nccl.conf": "file"}
NO_IB_PATHS = {p: "missing" for p in ALL_IB_PATHS}
RUN_PATHS = {"/home/u/code": "dir", "/home/u/venv": "dir", "/mnt/runs/train-1": "dir", "/mnt/ckpt/train-1": "dir"}
DOCKER_NVIDIA = DockerFacts(
    server_version="24.0.7", runtimes=("nvidia", "runc"), images={"nvcr.io/nvidia/pytorch:24.05-py3": True}
)
GOOD_LIMITS = Rlimits(memlock_hard=-1, stack_hard=-1, can_raise=True, source="dockerd (pid 1)")


def ctx(**kw) -> RunContext:
    base = dict(
        job="train-1",
        node="gpu1",
        command=("torchrun", "--nnodes", "2", "train.py", "--lr", "0.1"),
        workdir="/home/u/code",
        venv="/home/u/venv",
        run_dir="/mnt/runs/train-1",
        ckpt_dir="/mnt/ckpt/train-1",
        env={"NCCL_DEBUG": "INFO"},
    )
    return RunContext(**(base | kw))


def facts(node="gpu1", gpus=8, ib=True, paths=None, **kw) -> NodeFacts:
    base = dict(
        node=node,
        gpu_count=gpus,
        ib=IB,
        paths={**(ALL_IB_PATHS if ib else NO_IB_PATHS), **RUN_PATHS, **(paths or {})},
        devices={"/dev/infiniband": IB_DEVICES if ib else {}},
        rlimits=GOOD_LIMITS,
        docker=DOCKER_NVIDIA,
        tools={"nvidia-container-runtime-hook": "/usr/bin/nvidia-container-runtime-hook"},
    )
    return NodeFacts(**(base | kw))


def cfg(**kw) -> ContainerConfig:
    return ContainerConfig(**({"image": "nvcr.io/nvidia/pytorch:24.05-py3"} | kw))


def golden_text(plan) -> str:
    sections = [
        "# docker run (shell)",
        render_shell(plan, multiline=True),
        "# docker SDK containers.run kwargs",
        json.dumps(render_sdk_kwargs(plan), indent=2),
        "# notes",
        *(list(plan.notes) + [f"sdk: {g}" for g in sdk_gaps(plan)] or ["(none)"]),
    ]
    return "\n".join(sections) + "\n"


def check_golden(name: str, text: str) -> None:
    golden.check_golden(f"container/{name}.txt", text)


HOSTILE = HOSTILE_PATH
CASES = {
    "gpu_node_with_ib": lambda: build_plan(cfg(), ctx(), facts()),
    "node_without_ib": lambda: build_plan(cfg(), ctx(), facts(ib=False)),
    "cpu_only_node": lambda: build_plan(
        cfg(gpus="all", ulimits={"memlock": "8M"}), ctx(node="cpu1", venv=None), facts(node="cpu1", gpus=0, ib=False)
    ),
    "extra_mounts_hostile_values": lambda: build_plan(
        cfg(
            gpus=[0, 3],
            user="1000:1000",
            network="train-net",
            ipc="private",
            shm_size="16G",
            cap_add=["SYS_PTRACE"],
            mounts=[{"source": HOSTILE, "target": "/data", "read_only": True}, {"source": "/scratch/a,b=c"}],
            devices=["/dev/fuse"],
            env={"WANDB_NOTES": 'it\'s "quoted"; $(echo no)\nsecond line'},
            labels={"team": "vision & speech"},
            extra_args=["--security-opt", "seccomp=unconfined"],
        ),
        ctx(env={"GREETING": "a b  c"}, aliases=("10.0.0.1",)),
        facts(paths={HOSTILE: "dir", "/scratch/a,b=c": "dir", "/dev/fuse": "char"}),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_configuration(case):
    check_golden(case, golden_text(CASES[case]()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_shell_form_splits_back_to_the_exact_argv(case):
    plan = CASES[case]()
    argv = render_docker_argv(plan)
    assert shlex.split(render_shell(plan)) == argv
    # the copy-paste form: a real shell (line continuations included) must see the same argv
    script = "printf '%s\\0' " + render_shell(plan, multiline=True).removeprefix("docker run ")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:-1] == argv[2:]


def test_gpu_node_with_ib_follows_the_cloud_guidance():
    plan = build_plan(cfg(), ctx(), facts())
    argv = render_docker_argv(plan)
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "--device"]
    assert devices == [f"{p}:{p}:rwm" for p in sorted(IB_DEVICES)]
    mounts = {m.target: (m.source, m.read_only) for m in plan.mounts}
    assert mounts["/dev/infiniband"] == ("/dev/infiniband", False)
    assert mounts["/sys/class/infiniband"] == ("/sys/class/infiniband", False)
    assert mounts["/etc/nccl"] == ("/etc/nccl", False)
    assert mounts["/etc/nccl.conf"] == ("/etc/nccl.conf", True)
    # checkpoints and runs at the same paths on the host disk, venv read-only
    assert mounts["/mnt/ckpt/train-1"] == ("/mnt/ckpt/train-1", False)
    assert mounts["/mnt/runs/train-1"] == ("/mnt/runs/train-1", False)
    assert mounts["/home/u/venv"] == ("/home/u/venv", True)
    assert ["--network", "host"] == argv[argv.index("--network") : argv.index("--network") + 2]
    assert "--privileged" not in argv and "IPC_LOCK" in argv and "--gpus" in argv
    assert plan.ulimits == {"memlock": -1, "stack": 64 * MIB}
    assert plan.labels["corral.job"] == "train-1" and plan.labels["corral.node"] == "gpu1"
    assert plan.notes == ()


def test_missing_ib_paths_are_reported_not_fatal_unless_required():
    plan = build_plan(cfg(), ctx(), facts(ib=False))
    assert not plan.devices and len(plan.notes) == 1 and "/etc/nccl.conf" in plan.notes[0]
    with pytest.raises(UserError, match=r"node gpu1: container.infiniband is 'required' .*/dev/infiniband"):
        build_plan(cfg(infiniband="required"), ctx(), facts(ib=False))
    partial = facts(paths={"/etc/nccl.conf": "dir"})  # a directory where a file belongs
    plan = build_plan(cfg(), ctx(), partial)
    assert "/etc/nccl.conf" not in {m.target for m in plan.mounts} and "expected a file" in plan.notes[0]


def test_infiniband_off_adds_nothing():
    plan = build_plan(cfg(infiniband="off"), ctx(), facts())
    assert not plan.devices and not any(m.why in ("infiniband", "nccl") for m in plan.mounts) and not plan.notes


def test_gpus_rules():
    assert build_plan(cfg(gpus="none"), ctx(), facts()).gpus is None
    assert build_plan(cfg(gpus="all"), ctx(), facts(gpus=0)).gpus is None
    assert build_plan(cfg(gpus=[1, 2]), ctx(), facts()).gpus == (1, 2)
    with pytest.raises(UserError, match=r"lists GPU\(s\) \[8\] but the node has 8"):
        build_plan(cfg(gpus=[8]), ctx(), facts())


def test_privileged_only_when_asked_and_extra_mount_cannot_shadow_run_paths():
    assert "--privileged" in render_docker_argv(build_plan(cfg(privileged=True), ctx(), facts()))
    plan = build_plan(cfg(mounts=[{"source": "/elsewhere", "target": "/mnt/ckpt/train-1"}]), ctx(), facts())
    assert [m.source for m in plan.mounts if m.target == "/mnt/ckpt/train-1"] == ["/mnt/ckpt/train-1"]


def test_container_name_is_safe_and_stable():
    assert container_name("train-1", "gpu1") == "corral-train-1-gpu1"
    assert container_name("j", "user@host.x") == "corral-j-user-host.x"


def test_mount_argument_is_csv_docker_can_read():
    plan = CASES["extra_mounts_hostile_values"]()
    argv = render_docker_argv(plan)
    mount_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    parsed = [dict(f.split("=", 1) if "=" in f else (f, True) for f in next(csv.reader([m]))) for m in mount_args]
    assert {"type": "bind", "source": HOSTILE, "target": "/data", "readonly": True} in parsed
    assert {"type": "bind", "source": "/scratch/a,b=c", "target": "/scratch/a,b=c"} in parsed


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s and "\r" not in s))
def test_any_value_survives_shell_quoting(value):
    plan = build_plan(
        cfg(env={"X": value}, labels={"v": value}, mounts=[{"source": "/" + value, "target": "/t"}]),
        ctx(command=("python", value)),
        facts(paths={"/" + value: "dir"}),
    )
    assert shlex.split(render_shell(plan)) == render_docker_argv(plan)


def test_sdk_kwargs_carry_the_same_plan():
    plan = build_plan(cfg(gpus=[0, 1]), ctx(), facts())
    kw = render_sdk_kwargs(plan)
    assert kw["network_mode"] == "host" and kw["ipc_mode"] == "host" and kw["privileged"] is False
    assert kw["device_requests"] == [{"Driver": "", "Capabilities": [["gpu"]], "DeviceIDs": ["0", "1"]}]
    assert kw["ulimits"] == [
        {"Name": "memlock", "Soft": -1, "Hard": -1},
        {"Name": "stack", "Soft": 64 * MIB, "Hard": 64 * MIB},
    ]
    assert [m["Target"] for m in kw["mounts"]] == [m.target for m in plan.mounts]
    assert kw["devices"] == [f"{p}:{p}:rwm" for p in sorted(IB_DEVICES)]
    assert kw["command"] == list(plan.command) and kw["labels"] == plan.labels


# ---- preflight: facts in, problems out ---------------------------------------------------------


def problems_for(c: ContainerConfig, f: NodeFacts, **kw) -> list[str]:
    return check_plan(build_plan(c, ctx(), f), f, **kw)


def test_preflight_passes_a_good_node():
    assert problems_for(cfg(), facts()) == []


def test_preflight_image_missing():
    f = facts(docker=DockerFacts(server_version="24", runtimes=("runc",), images={}))
    (p,) = [x for x in problems_for(cfg(), f) if "image" in x]
    assert "not present on the node and could not be pulled" in p and "docker load" in p
    assert not [x for x in problems_for(cfg(), f, image_pullable=True) if "image" in x]


def test_preflight_mount_source_missing_and_device_not_a_device():
    f = facts(paths={"/data": "missing", "/dev/fuse": "file"})
    out = problems_for(cfg(mounts=[{"source": "/data"}], devices=["/dev/fuse"]), f)
    assert any("mount source /data (extra) does not exist" in p and "container.mounts" in p for p in out)
    assert any("device /dev/fuse is a regular file, not a device node" in p for p in out)


def test_preflight_gpus_without_nvidia_toolkit():
    f = facts(tools={}, docker=DockerFacts(server_version="20.10", runtimes=("runc",), images=DOCKER_NVIDIA.images))
    (p,) = problems_for(cfg(), f)
    assert "install the NVIDIA Container Toolkit" in p and "container.gpus" in p
    assert problems_for(cfg(gpus="none"), f) == []


def test_preflight_memlock_above_the_hard_limit_says_what_works():
    capped = Rlimits(memlock_hard=8 * MIB, stack_hard=-1, can_raise=False, source="dockerd (pid 7)")
    (p,) = problems_for(cfg(), facts(rlimits=capped))
    assert "container.ulimits.memlock unlimited is above the node's hard limit of 8M" in p
    assert "set container.ulimits.memlock: 8M" in p
    assert problems_for(cfg(ulimits={"memlock": "8M"}), facts(rlimits=capped)) == []
    assert problems_for(cfg(), facts(rlimits=Rlimits(8 * MIB, -1, True, "x"))) == []  # CAP_SYS_RESOURCE can raise it


RECORDED_STDERR = {  # docker 20.10 on the development machine (see docs/CONTAINERS.md)
    "gpu": 'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].',
    "memlock": "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: runc create failed: "
    "unable to start container process: error during container init: error setting rlimits for ready process: "
    "error setting rlimit type 8: operation not permitted: unknown",
    "device": 'docker: Error response from daemon: error gathering device information while adding custom device "/etc/hostname": not a device node',
    "image": "Unable to find image 'nonexist-img:3' locally\ndocker: Error response from daemon: Get \"https://example.invalid/v2/\": dial tcp: no such host",
    "mount": 'docker: Error response from daemon: invalid mount config for type "bind": bind source path does not exist: /nonexist/path.',
}


@pytest.mark.parametrize(
    "key,words",
    [
        ("gpu", "install the NVIDIA Container Toolkit"),
        ("memlock", "container.ulimits.memlock"),
        ("device", "/etc/hostname is not a device node"),
        ("image", "could not be pulled"),
        ("mount", "/nonexist/path. does not exist"),
    ],
)
def test_docker_errors_become_sentences(key, words):
    message, hint = explain(RECORDED_STDERR[key])
    assert words in f"{message} {hint}"


# ---- config and the launch seam --------------------------------------------------------------------


def test_container_config_validation():
    bad = {
        "name": "j",
        "script": "t.py",
        "container": {
            "image": "x",
            "shm_size": "1G",
            "gpus": "some",
            "infiniband": "yes",
            "ulimits": {"memlock": "lots"},
        },
    }
    with pytest.raises(ConfigError) as info:
        validate(JobConfig, bad, "job.yaml")
    text = "\n".join(info.value.problems)
    for field in ("container.gpus", "container.infiniband", "container.ulimits.memlock"):
        assert field in text, text
    ok = validate(
        JobConfig,
        {"name": "j", "script": "t.py", "container": {"image": "x", "ipc": "private", "shm_size": "1G"}},
        "job.yaml",
    )
    assert ok.container.ulimits.stack == 64 * MIB
    with pytest.raises(ConfigError, match="shm_size has no effect with ipc: host"):
        validate(JobConfig, {"name": "j", "script": "t.py", "container": {"image": "x", "shm_size": "1G"}}, "job.yaml")


def test_launch_seam_passes_env_by_name_only():
    argv = node_argv(
        cfg(),
        ["torchrun", "t.py"],
        node="n1",
        env_names=["HF_TOKEN", "CORRAL_RUN_DIR"],
        workdir="/w",
        gpus=0,
        mounts=["/r/j", "/c/j"],
        job_name="j",
        venv="/v",
    )
    assert argv[-3:] == ["nvcr.io/nvidia/pytorch:24.05-py3", "torchrun", "t.py"]
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert (
        "HF_TOKEN" in envs
        and "CORRAL_RUN_DIR" in envs
        and "PATH=/v/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in envs
    )
    assert "--gpus" not in argv and "--device" not in argv  # no facts gathered: no IB, CPU node


def test_container_config_command_prints_both_forms_and_explains_bad_input(tmp_path, capsys, monkeypatch):
    from launcher.cli import main

    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text("name: j\nscript: t.py\n")
    assert main(["container", "config", str(job)]) == 2
    assert "the job has no container section" in capsys.readouterr().err
    job.write_text("name: j\nscript: t.py\ncontainer: {image: 'img:1', gpus: none, infiniband: 'off'}\n")
    assert main(["container", "config", str(job), "--format", "yaml"]) == 2
    assert main(["container", "config", str(job), "--node", "nope"]) == 2
    assert "no such node" in capsys.readouterr().err
    assert main(["container", "config", str(job)]) == 0
    out = capsys.readouterr().out
    argv = shlex.split(out.replace("\\\n", ""))
    assert argv[:4] == ["docker", "run", "--name", "corral-j-local"] and argv[-2:] == ["torchrun", "t.py"]
    assert main(["container", "config", str(job), "--format", "json"]) == 0
    kw = json.loads(capsys.readouterr().out)
    assert kw["name"] == "corral-j-local" and kw["network_mode"] == "host" and kw["command"] == ["torchrun", "t.py"]
    assert not (tmp_path / "runs").exists(), "printing a configuration must not create the run directories"

"""The Slurm plan and its scripts are pure: golden files (GPU job, CPU job, hostile values), the
cluster file's slurm section, and the node wrapper run for real in bash with hostile arguments."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from launcher.backends.slurm.script import (
    build_slurm_plan,
    describe_slurm,
    render_batch_script,
    render_command,
    render_node_wrapper,
)
from launcher.config import ClusterConfig, JobConfig, validate
from launcher.errors import ConfigError, UserError
from tests.infra import golden

HOSTILE = ["--note=it's $(touch /tmp/pwned) `id`; echo x", "a b\nc", "$HOME", "\\", '"q"', "--flag"]


def check_golden(name: str, text: str) -> None:
    golden.check_golden(f"slurm/{name}", text)


def cluster(**slurm) -> ClusterConfig:
    return ClusterConfig.model_validate(
        {
            "slurm": {"partition": "gpu", **slurm},
            "workdir": "/shared/code",
            "venv": "/shared/venv",
            "storage": {"runs": "/shared/runs", "checkpoints": "/shared/ckpt"},
            "env": {"NCCL_DEBUG": "WARN"},
        }
    )


def job(**kw) -> JobConfig:
    return JobConfig.model_validate({"name": "train", "script": "train.py", "nnodes": 2, **kw})


def plan_of(j: JobConfig, c: ClusterConfig, secrets: tuple[str, ...] = ()):
    return build_slurm_plan(
        j, c, name=j.name, run_id=f"{j.name}-0001", base_dir="/home/u", local_venv=None, secret_names=secrets
    )


def test_gpu_job_golden():
    c = cluster(
        account="proj",
        qos="high",
        time="1-00:00:00",
        gpus_per_node=8,
        exclusive=True,
        signal_before_s=300,
        sbatch_args=["--mem=0", "--comment=corral"],
    )
    p = plan_of(job(args=["--lr", "0.1"], checkpoint={"keep_last": 3}), c, ("HF_TOKEN",))
    assert p.backend == "nccl" and p.nproc_per_node == 8
    check_golden("gpu_job.sbatch", render_batch_script(p))
    check_golden("gpu_node.sh", render_node_wrapper(p))


def test_cpu_job_golden():
    p = plan_of(job(max_restarts=1), cluster(requeue=False))
    assert p.backend == "gloo" and p.nproc_per_node == 2
    check_golden("cpu_job.txt", describe_slurm(p) + "\n")


def test_hostile_values_golden_and_quoted_once():
    p = plan_of(job(args=HOSTILE, env={"WEIRD": "x'; rm -rf / #\n$(id)"}), cluster())
    check_golden("hostile_node.sh", render_node_wrapper(p))
    cmd = render_command(p)
    assert '"$SLURM_NNODES"' in cmd and '"$CORRAL_RDZV_ENDPOINT"' in cmd and '"$CORRAL_RDZV_ID"' in cmd


def test_torchrun_flags_and_env_shared_with_the_ssh_plan():
    p = plan_of(job(max_restarts=2), cluster())
    assert p.command_prefix[:3] == ["torchrun", "--nnodes", "@NNODES@"]
    assert p.command_prefix[p.command_prefix.index("--max-restarts") + 1] == "2"
    assert p.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"  # the ssh plan's rule for restarts
    assert p.env["NCCL_DEBUG"] == "WARN" and p.env["CORRAL_CKPT_DIR"] == "/shared/ckpt/train"
    assert p.env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == "[rank${rank}]: "
    wrapper = render_node_wrapper(p)
    assert 'CORRAL_SLURM_JOB_ID="$SLURM_JOB_ID"' in wrapper and 'CORRAL_NODE_RANK="$SLURM_NODEID"' in wrapper


def test_batch_script_asks_for_the_signal_and_requeue():
    text = render_batch_script(plan_of(job(), cluster(signal_before_s=90)))
    assert "#SBATCH --signal=B:USR1@90" in text and "#SBATCH --requeue" in text and "#SBATCH --nodes=2" in text
    assert 'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1' in text


def test_nnodes_must_be_a_number_and_containers_are_refused():
    with pytest.raises(UserError, match="nnodes: on a Slurm cluster"):
        plan_of(job(nnodes="all"), cluster())
    with pytest.raises(UserError, match="container: jobs in containers are not supported on a Slurm cluster"):
        plan_of(job(container={"image": "img"}), cluster())


def test_cluster_file_has_exactly_one_of_nodes_or_slurm():
    with pytest.raises(ConfigError, match="not both"):
        validate(ClusterConfig, {"slurm": {"partition": "p"}, "nodes": [{"host": "a"}]}, "c.yaml")
    with pytest.raises(ConfigError, match="has neither"):
        validate(ClusterConfig, {"workdir": "."}, "c.yaml")
    with pytest.raises(ConfigError, match="slurm.partition: Field required"):
        validate(ClusterConfig, {"slurm": {}}, "c.yaml")
    with pytest.raises(ConfigError, match="slurm.sbatch_args: item 0"):
        validate(ClusterConfig, {"slurm": {"partition": "p", "sbatch_args": ["mem=0"]}}, "c.yaml")
    with pytest.raises(ConfigError, match="slurm.partiton: unknown key"):
        validate(ClusterConfig, {"slurm": {"partition": "p", "partiton": "q"}}, "c.yaml")
    assert all(f.description for f in type(cluster().slurm).model_fields.values())


def test_node_wrapper_passes_hostile_arguments_literally(tmp_path: Path):
    """The real wrapper in bash, with printf standing in for torchrun: every argument arrives as written."""
    c = ClusterConfig.model_validate(
        {"slurm": {"partition": "p"}, "workdir": str(tmp_path), "storage": {"runs": str(tmp_path / "runs")}}
    )
    p = build_slurm_plan(
        job(args=HOSTILE, env={"WEIRD": "x'; $(id)"}),
        c,
        name="train",
        run_id="r1",
        base_dir=str(tmp_path),
        local_venv=None,
    )
    p = dataclasses.replace(p, command_prefix=["bash", "-c", 'printf "<%s>\\n" "$WEIRD" "$@"', "argv0"], entry=HOSTILE)
    wrapper = tmp_path / "node.sh"
    wrapper.write_text(render_node_wrapper(p))
    env = {
        "PATH": os.environ["PATH"],
        "SLURMD_NODENAME": "n1",
        "SLURM_NODEID": "0",
        "SLURM_NNODES": "1",
        "SLURM_JOB_ID": "7",
    }
    r = subprocess.run(["bash", str(wrapper)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "runs" / "train" / "logs" / "n1.log").read_text()
    expected = "".join(f"[n1] {line}\n" for line in "\n".join(f"<{a}>" for a in ["x'; $(id)", *HOSTILE]).split("\n"))
    assert log == expected + "[n1] corral: exited with status 0\n"
    assert (tmp_path / "runs" / "train" / "nodes" / "n1" / "exit_code").read_text() == "0 0\n"
    assert not Path("/tmp/pwned").exists()


def test_login_host_runs_the_clients_over_ssh_quoted_once():
    import shlex

    from launcher.tools.slurm import full_argv

    argv = full_argv(cluster(login="user@login1"), ["squeue", "-h", "--name=a b; id"])
    assert argv[0] == "ssh" and argv[-2] == "user@login1" and argv[-1] == shlex.join(["squeue", "-h", "--name=a b; id"])
    assert full_argv(cluster(), ["sinfo"]) == ["sinfo"]

"""The CLI's surface is frozen here: a change to commands or config fields must be deliberate."""

from __future__ import annotations

import subprocess
import sys

from launcher.config import ClusterConfig, JobConfig
from launcher.config.job import ContainerConfig

EXPECTED_COMMANDS = {
    "launch", "ps", "logs", "attach", "stop", "preflight", "demo",
    "bench allreduce", "bench net", "bench volume", "bench node",
    "container config",
    "ckpt ls", "ckpt verify", "ckpt prune",
    "sweep run", "sweep status", "sweep stop",
    "config check", "config schema",
}  # fmt: skip


def _commands() -> set[str]:
    from typer.main import get_command

    from launcher.cli.app import app

    root = get_command(app)
    found = set()
    for name, cmd in root.commands.items():
        sub = getattr(cmd, "commands", None)
        if sub:
            found |= {f"{name} {s}" for s in sub}
        else:
            found.add(name)
    return found


def test_command_surface_is_frozen():
    assert _commands() == EXPECTED_COMMANDS


def test_every_command_has_help_with_an_example():
    from typer.main import get_command

    from launcher.cli.app import app

    root = get_command(app)
    for full in EXPECTED_COMMANDS:
        parts = full.split()
        cmd = root.commands[parts[0]]
        if len(parts) == 2:
            cmd = cmd.commands[parts[1]]
        assert cmd.help and "Example: corral" in cmd.help, full


def test_config_fields_are_frozen():
    assert list(ClusterConfig.model_fields) == ["nodes", "slurm", "ssh", "workdir", "venv", "rendezvous", "storage", "env"]
    from launcher.config import SlurmConfig

    assert list(SlurmConfig.model_fields) == [
        "partition", "account", "qos", "time", "constraint", "gpus_per_node", "exclusive", "signal_before_s", "requeue", "sbatch_args", "login",
    ]  # fmt: skip
    assert list(JobConfig.model_fields) == [
        "name", "script", "module", "args", "nproc_per_node", "nnodes", "backend", "max_restarts", "env", "env_file", "container", "checkpoint",
    ]  # fmt: skip
    assert list(ContainerConfig.model_fields) == [
        "image", "pull", "mounts", "devices", "env", "gpus", "infiniband", "network", "ipc", "shm_size", "ulimits", "cap_add",
        "privileged", "user", "labels", "extra_args",
    ]  # fmt: skip


def test_every_config_field_has_a_description():
    def walk(model, seen=None):
        seen = set() if seen is None else seen
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for arg in getattr(field.annotation, "__args__", ()) + (field.annotation,):
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    walk(arg, seen)

    walk(ClusterConfig)
    walk(JobConfig)


def test_help_and_config_check_import_no_heavy_modules():
    code = (
        "import sys; from launcher.cli import main; "
        "main(['--help']); main(['config', 'check', 'configs/local.yaml']); "
        "heavy = [m for m in ('torch', 'docker', 'pynvml', 'libtmux', 'optuna') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out

"""The CLI's surface is frozen here: a change to commands or config fields must be deliberate."""

from __future__ import annotations

import subprocess
import sys

from launcher.config import ClusterConfig, JobConfig
from launcher.config.job import ContainerConfig, WatchdogConfig

EXPECTED_COMMANDS = {
    "launch",
    "ps",
    "logs",
    "attach",
    "stop",
    "rm",
    "preflight",
    "demo",
    "top",
    "bench allreduce",
    "bench net",
    "bench volume",
    "bench node",
    "bench cluster",
    "container config",
    "ckpt ls",
    "ckpt verify",
    "ckpt prune",
    "sweep run",
    "sweep status",
    "sweep stop",
    "config check",
    "config schema",
}


TABLE_COMMANDS = {
    "ps",
    "preflight",
    "top",
    "bench allreduce",
    "bench net",
    "bench volume",
    "bench node",
    "bench cluster",
    "ckpt ls",
    "ckpt verify",
    "sweep run",
    "sweep status",
}
"""Commands that print a table: each takes ``--json`` (JSON on stdout) and ``--json-out PATH``."""


def _command(full: str):
    from launcher.cli.app import build_command

    cmd = build_command(everything=True)
    for part in full.split():
        cmd = cmd.commands[part]
    return cmd


def _commands() -> set[str]:
    from launcher.cli.app import build_command

    root = build_command(everything=True)
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
    from launcher.cli.app import build_command

    root = build_command(everything=True)
    for full in EXPECTED_COMMANDS:
        parts = full.split()
        cmd = root.commands[parts[0]]
        if len(parts) == 2:
            cmd = cmd.commands[parts[1]]
        assert cmd.help and "Example: corral" in cmd.help, full


def test_config_fields_are_frozen():
    assert list(ClusterConfig.model_fields) == [
        "nodes",
        "slurm",
        "backend",
        "ssh",
        "workdir",
        "venv",
        "rendezvous",
        "storage",
        "env",
    ]
    from launcher.config import SlurmConfig

    assert list(SlurmConfig.model_fields) == [
        "partition",
        "account",
        "qos",
        "time",
        "constraint",
        "gpus_per_node",
        "exclusive",
        "signal_before_s",
        "requeue",
        "sbatch_args",
        "login",
    ]
    assert list(JobConfig.model_fields) == [
        "name",
        "script",
        "module",
        "args",
        "nproc_per_node",
        "nnodes",
        "backend",
        "max_restarts",
        "env",
        "env_file",
        "container",
        "checkpoint",
        "watchdog",
    ]
    assert list(WatchdogConfig.model_fields) == [
        "enabled",
        "hang_after",
        "first_step_grace",
        "on_hang",
        "check_every",
        "straggler_after",
        "flight_recorder",
    ]
    assert list(ContainerConfig.model_fields) == [
        "image",
        "pull",
        "mounts",
        "devices",
        "env",
        "gpus",
        "infiniband",
        "network",
        "ipc",
        "shm_size",
        "ulimits",
        "cap_add",
        "privileged",
        "user",
        "labels",
        "extra_args",
    ]


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


def test_json_means_the_same_everywhere():
    for full in TABLE_COMMANDS | {"launch"}:
        opts = {o: p for p in _command(full).params for o in p.opts}
        assert opts["--json"].is_flag, f"{full}: --json must be a flag that prints JSON on stdout"
        if full != "launch":
            assert not opts["--json-out"].is_flag, f"{full}: --json-out takes a PATH"


def test_help_shows_flags_as_flags_and_choices_as_choices(capsys):
    from launcher.cli import main

    for full in sorted(EXPECTED_COMMANDS):
        assert main([*full.split(), "--help"]) == 0
        out = capsys.readouterr().out
        assert "<bool>" not in out, f"corral {full} --help shows a flag as <bool>"
    main(["config", "check", "--help"])
    assert "<auto|cluster|job>" in capsys.readouterr().out
    main(["bench", "net", "--help"])
    assert "<auto|all|ring>" in capsys.readouterr().out


def test_bad_choice_is_one_sentence_and_exit_2(capsys):
    from launcher.cli import main

    assert main(["config", "check", "--kind", "node", "configs/local.yaml"]) == 2
    err = capsys.readouterr().err
    assert "'node' is not one of 'auto', 'cluster', 'job'" in err and "Traceback" not in err


def test_help_paragraphs_are_not_broken_mid_phrase():
    """The terminal wraps help text at its width; a hard line break inside a paragraph of the
    source would split a phrase wherever the source line happened to end."""
    for full in EXPECTED_COMMANDS:
        for paragraph in (_command(full).help or "").split("\n\n"):
            assert "\n" not in paragraph, f"corral {full}: {paragraph!r}"


def test_a_command_builds_and_imports_only_itself():
    """``corral ps`` neither imports the other commands' modules nor builds their click commands."""
    code = (
        "import sys; from launcher.cli import main; main(['ps', '--help']); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('launcher.cli.') and m.endswith('_cmd'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "launcher.cli.jobs_cmd"

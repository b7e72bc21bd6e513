"""``corral ps`` runs without typer (``launcher.cli.quick``) when its argv is made only of the options that
path knows. Both parsers must read every such argv alike, and the quick one must hand everything else to
typer: checked here against the typer command itself, so the two cannot drift apart."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import quick
from launcher.cli.app import build_command

REPO = Path(__file__).resolve().parents[1]

READ_ALIKE = [
    ["ps"],
    ["ps", "--all"],
    ["ps", "-a", "--nodes"],
    ["ps", "--json"],
    ["ps", "-c", "cluster.yaml"],
    ["ps", "--cluster", "c.yaml", "--json-out", "out.json"],
    ["ps", "--cluster=c.yaml", "--json-out=o.json", "--nodes", "-a", "--json"],
    ["-v", "ps", "-c", "x.yaml"],
    ["-q", "--debug", "ps", "--all"],
    ["--verbose", "--quiet", "ps"],
    ["launch", "job.yaml"],
    ["launch", "job.yaml", "-c", "cluster.yaml"],
    ["launch", "-c", "cluster.yaml", "job.yaml"],
    ["-v", "launch", "--cluster=c.yaml", "--name", "run1", "job.yaml", "--json"],
    ["launch", "j.yaml", "--set", "max_restarts=2", "--set=args.0=--lr=0.1", "--set", "nnodes=2"],
    ["launch", "j.yaml", "--dry-run", "-f"],
    ["launch", "j.yaml", "--follow", "--exclude", "n1", "--exclude=n2", "--exclude-from", "report.json"],
    ["--debug", "launch", "x"],
]

LEFT_TO_TYPER = [
    [],
    ["ps", "--help"],
    ["ps", "-h"],
    ["ps", "--bogus"],
    ["ps", "-c"],
    ["ps", "-c", "--json"],
    ["ps", "--json", "--json"],
    ["ps", "-c", "a.yaml", "--cluster", "b.yaml"],
    ["ps", "--all=yes"],
    ["ps", "-ac", "x.yaml"],
    ["ps", "--", "x"],
    ["ps", "extra"],
    ["--version", "ps"],
    ["-v", "-v", "ps"],
    ["launch"],
    ["launch", "--help"],
    ["launch", "job.yaml", "-h"],
    ["launch", "a.yaml", "b.yaml"],
    ["launch", "job.yaml", "--name"],
    ["launch", "job.yaml", "--name", "a", "--name", "b"],
    ["launch", "job.yaml", "--set"],
    ["launch", "job.yaml", "--set", "--dry-run"],
    ["launch", "job.yaml", "--dry-run=yes"],
    ["launch", "job.yaml", "-fc", "c.yaml"],
    ["launch", "--", "job.yaml"],
    ["launch", "-", "-c", "c.yaml"],
    ["launch", "job.yaml", "--nodes"],
    ["stop", "job"],
    ["logs", "job", "-f"],
]


def typer_reading(args: list[str]) -> tuple[str, dict, dict]:
    """(command, root flags, its parameters) as the typer command binds them."""
    root = build_command()
    ctx = root.make_context("corral", list(args))
    rest = [*ctx._protected_args, *ctx.args]  # the subcommand and its argv, as click keeps them
    sub = root.get_command(ctx, rest[0])
    params = sub.make_context(rest[0], rest[1:], parent=ctx).params
    flags = {k: v for k, v in ctx.params.items() if k != "version" and v}
    return rest[0], flags, {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


@pytest.mark.parametrize("args", READ_ALIKE, ids=" ".join)
def test_quick_reads_like_typer(args):
    assert quick.parse(args) == typer_reading(args)


@pytest.mark.parametrize("args", LEFT_TO_TYPER, ids=lambda a: " ".join(a) or "(none)")
def test_anything_else_goes_to_typer(args):
    assert quick.parse(args) is None
    assert quick.quick_command(args) is None


@pytest.mark.parametrize("command", sorted(quick.SPECS))
def test_the_quick_tables_name_every_option_of_the_command_and_the_root(command):
    spec = quick.SPECS[command]
    root = build_command()
    cmd = root.get_command(None, command)
    opts = {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}
    assert opts == set(spec.flags) | set(spec.values) | set(spec.lists)
    assert [p.name for p in cmd.params if p.param_type_name == "argument"] == ([spec.argument] if spec.argument else [])
    assert {p.name: p.default for p in cmd.params if p.param_type_name == "option"} == {
        k: v for k, v in spec.defaults.items() if k != spec.argument
    }
    root_opts = {o for p in root.params for o in (*p.opts, *p.secondary_opts)}
    assert root_opts - {"--version"} == set(quick.ROOT_FLAGS)


def test_ps_starts_without_typer_and_prints_as_before(tmp_path):
    """The quick path imports neither typer nor any command module, and its table and JSON are the typer path's."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(json.dumps({"nodes": [{"host": "localhost"}], "storage": {"runs": str(tmp_path / "runs")}}))
    code = (
        "import sys; from launcher.cli import main; rc = main(sys.argv[1:]); "
        "print(sorted(m for m in sys.modules if m == 'typer' or m.endswith('_cmd')), rc)"
    )
    for extra in ([], ["--json"]):
        quick_run = subprocess.run(
            [sys.executable, "-c", code, "ps", "-c", str(cluster), *extra], cwd=REPO, capture_output=True, text=True
        )
        assert quick_run.stdout.splitlines()[-1] == "[] 0", quick_run.stdout + quick_run.stderr
        # `-a` twice is typer's to read: the same command through the typer app
        typer_run = subprocess.run(
            [sys.executable, "-c", code, "ps", "-a", "-a", "-c", str(cluster), *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert "'typer'" in typer_run.stdout.splitlines()[-1], typer_run.stdout + typer_run.stderr
        assert quick_run.stdout.splitlines()[:-1] == typer_run.stdout.splitlines()[:-1]
        assert quick_run.stdout.splitlines()[:-1], "ps printed nothing"


def test_launch_starts_without_typer_or_rich_and_plans_as_before():
    """A plain ``launch`` argv imports neither typer, nor any command module, nor rich (its output has no
    terminal), and its dry run (the real plan) is the typer path's, in text and JSON, but for the run ids."""
    code = (
        "import sys; from launcher.cli import main; rc = main(sys.argv[1:]); "
        "print(sorted(m for m in sys.modules if m in ('typer', 'rich') or m.endswith('_cmd')), rc)"
    )
    job = "configs/demo.yaml"
    for extra in ([], ["--json"]):
        quick_run = subprocess.run(
            [sys.executable, "-c", code, "launch", job, "--dry-run", *extra], cwd=REPO, capture_output=True, text=True
        )
        assert quick_run.stdout.splitlines()[-1] == "[] 0", quick_run.stdout + quick_run.stderr
        # `--dry-run` twice is typer's to read: the same command through the typer app
        typer_run = subprocess.run(
            [sys.executable, "-c", code, "launch", job, "--dry-run", "--dry-run", *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert "'typer'" in typer_run.stdout.splitlines()[-1], typer_run.stdout + typer_run.stderr

        def plan(text: str) -> list[str]:
            return re.sub(r"demo-[0-9a-f]{8}", "demo-RUNID", text).splitlines()[:-1]

        assert plan(quick_run.stdout) == plan(typer_run.stdout)
        assert any("torchrun" in line for line in plan(quick_run.stdout)), quick_run.stdout


def test_a_user_error_on_the_quick_path_is_one_line_and_exit_2(tmp_path, capsys):
    from launcher.cli import main

    assert main(["ps", "-c", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.yaml" in err and "Traceback" not in err


def test_the_corral_program_exits_with_mains_code_and_all_its_output(tmp_path):
    """``python -m launcher.cli`` (and the ``corral`` script) skip the interpreter's teardown: the exit code
    and every line still come through a pipe."""
    run = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "launch", "configs/demo.yaml", "--dry-run", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["nodes"], run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "ps", "-c", str(tmp_path / "missing.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "missing.yaml" in bad.stderr, bad.stderr

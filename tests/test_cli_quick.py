"""``corral ps`` runs without typer (``launcher.cli.quick``) when its argv is made only of the options that
path knows. Both parsers must read every such argv alike, and the quick one must hand everything else to
typer: checked here against the typer command itself, so the two cannot drift apart."""

from __future__ import annotations

import json
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
]

LEFT_TO_TYPER = [
    [],
    ["launch", "job.yaml"],
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
    ["--debug", "launch", "x"],
]


def typer_reading(args: list[str]) -> tuple[dict, dict]:
    """(root flags, ps parameters) as the typer command binds them."""
    root = build_command()
    ctx = root.make_context("corral", list(args))
    rest = [*ctx._protected_args, *ctx.args]  # the subcommand and its argv, as click keeps them
    assert rest[0] == "ps"
    sub = root.get_command(ctx, "ps")
    params = sub.make_context("ps", rest[1:], parent=ctx).params
    flags = {k: v for k, v in ctx.params.items() if k != "version" and v}
    return flags, params


@pytest.mark.parametrize("args", READ_ALIKE, ids=" ".join)
def test_quick_reads_like_typer(args):
    assert quick.parse_ps(args) == typer_reading(args)


@pytest.mark.parametrize("args", LEFT_TO_TYPER, ids=lambda a: " ".join(a) or "(none)")
def test_anything_else_goes_to_typer(args):
    assert quick.parse_ps(args) is None
    assert quick.quick_command(args) is None


def test_the_quick_tables_name_every_option_of_ps_and_the_root():
    root = build_command()
    ps = root.get_command(None, "ps")
    ps_opts = {o for p in ps.params for o in (*p.opts, *p.secondary_opts)}
    assert ps_opts == set(quick.PS_FLAGS) | set(quick.PS_VALUES)
    assert {p.name for p in ps.params} == set(quick.PS_DEFAULTS)
    assert {p.name: p.default for p in ps.params} == quick.PS_DEFAULTS
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


def test_a_user_error_on_the_quick_path_is_one_line_and_exit_2(tmp_path, capsys):
    from launcher.cli import main

    assert main(["ps", "-c", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.yaml" in err and "Traceback" not in err

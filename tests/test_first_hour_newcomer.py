"""The first hour, second round: what a newcomer still tripped over (fresh clone, README only, an own
training script in an own repository), each as the user meets it: the CLI's words, on the real
local path where a run is involved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.cli import main

REPO = Path(__file__).resolve().parents[1]


def check(tmp_path: Path, capsys, text: str, *args: str, name: str = "c.yaml") -> tuple[int, str]:
    f = tmp_path / name
    f.write_text(text)
    rc = main(["config", "check", *args, str(f)])
    out = capsys.readouterr()
    return rc, out.out + out.err


# ----------------------------------------------------------------------------- which kind a file is


def test_a_slurm_cluster_file_is_a_cluster(tmp_path, capsys):
    rc, out = check(tmp_path, capsys, "slurm:\n  partition: debug\nworkdir: /srv/train\n")
    assert rc == 0, out
    assert "ok (cluster), read as a cluster file: it has 'slurm:'" in out
    assert "Slurm partition debug" in out and "0 node(s)" not in out


def test_a_misspelt_nodes_key_is_still_read_as_a_cluster_with_the_close_key(tmp_path, capsys):
    rc, out = check(tmp_path, capsys, "node:\n  - host: a\nworkdir: /srv/train\n")
    assert rc == 2
    assert "read as a cluster file: it has no 'nodes:' or 'slurm:', but 'node' (like 'nodes')" in out
    assert "node: unknown key; did you mean nodes? (`corral config schema cluster` lists the keys)" in out
    assert "name: Field required" not in out and "workdir: unknown key" not in out


def test_a_job_file_says_why_it_is_one_and_suggests_keys_at_any_depth(tmp_path, capsys):
    text = "name: j\nscript: t.py\nnproc_per_nod: 2\ncontainer:\n  image: x\n  mount:\n    - source: /data\n"
    rc, out = check(tmp_path, capsys, text)
    assert rc == 2
    assert "(read as a job file: it has no 'nodes:' or 'slurm:')" in out
    assert "nproc_per_nod: unknown key; did you mean nproc_per_node? (`corral config schema job`" in out
    assert "container.mount: unknown key; did you mean mounts?" in out


def test_a_cluster_file_with_a_nested_typo_gets_the_close_key(tmp_path, capsys):
    rc, out = check(tmp_path, capsys, "nodes:\n  - host: a\n    gpu: 8\nslurm_x: 1\nstorage:\n  run: ./r\n")
    assert rc == 2
    assert "nodes.0.gpu: unknown key; did you mean gpus?" in out
    assert "storage.run: unknown key; did you mean runs?" in out


def test_a_job_file_given_as_the_cluster_says_so(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "j", "script": "t.py", "nproc_per_node": 1}))
    assert main(["launch", str(job), "-c", str(job), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "this looks like a job file, not a cluster file ('name', 'nproc_per_node', 'script')" in err
    assert "give it as the job argument, and the cluster file with -c" in err
    rc, out = check(tmp_path, capsys, job.read_text(), "--kind", "cluster", name="job2.yaml")
    assert rc == 2 and "(read as a cluster file: --kind cluster)" in out and "this looks like a job file" in out


# ----------------------------------------------------------------------------- type errors in plain words


@pytest.mark.parametrize(
    "text, expected",
    [
        ("nproc_per_node: two", "nproc_per_node: expected a whole number or 'auto' (got 'two')"),
        ("nnodes: eight", "nnodes: expected a whole number, 'all' or a range MIN:MAX such as 2:4 (got 'eight')"),
        ("max_restarts: 1.5", "max_restarts: expected a whole number (got 1.5)"),
        ("backend: mpi", "backend: expected 'auto', 'nccl' or 'gloo' (got 'mpi')"),
        ("args: --lr", "args: expected a list (got '--lr')"),
        ("env: [A]", "env: expected a mapping (key: value lines) (got a list)"),
        ("container:\n  image: x\n  devices: [dev/x]", "container.devices.0: expected an absolute path"),
    ],
)
def test_type_errors_read_as_one_plain_sentence(tmp_path, capsys, text, expected):
    rc, out = check(tmp_path, capsys, f"name: j\nscript: t.py\n{text}\n")
    assert rc == 2
    assert expected in out
    assert "Input should" not in out and "unable to parse" not in out


# ----------------------------------------------------------------------------- an unreachable node, said once and whole


@pytest.fixture
def unreachable_cluster(tmp_path):
    """A cluster file whose one node refuses ssh: a loopback port that was free a moment ago (nothing listens)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    f = tmp_path / "cluster.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "nodes": [{"host": "127.0.0.2", "name": "far"}],  # loopback, but not a localhost name: reached over ssh
                "ssh": {"port": port, "connect_timeout": 2, "options": {"StrictHostKeyChecking": "no"}},
                "workdir": str(tmp_path),
                "storage": {"runs": str(tmp_path / "runs"), "checkpoints": str(tmp_path / "ckpt")},
            }
        )
    )
    return f, port


def test_top_off_a_terminal_prints_whole_reasons(unreachable_cluster, capsys):
    cfile, port = unreachable_cluster
    assert main(["top", "-c", str(cfile), "--once"]) == 0
    out = capsys.readouterr().out
    assert "unreachable" in out
    reason = f"far: unreachable: ssh: connect to host 127.0.0.2 port {port}: Connection refused"
    assert reason in " ".join(out.split()), out  # whole, though the table's cell is cut to its width


def test_an_ssh_failure_says_ssh_once(unreachable_cluster, capsys):
    cfile, port = unreachable_cluster
    assert main(["preflight", "-c", str(cfile)]) != 0
    out = capsys.readouterr()
    line = next(ln for ln in (out.out + out.err).splitlines() if "Connection refused" in ln)
    assert line.count("ssh:") == 1 and line.startswith("far: ssh: cannot reach 127.0.0.2:"), line


# ----------------------------------------------------------------------------- help text


@pytest.mark.parametrize(
    "argv, usage, absent",
    [
        (["config", "check"], "Usage: corral config check [OPTIONS] FILE...", "{files}"),
        (["rm"], "Usage: corral rm [OPTIONS] [NAME]...", "[names]"),
        (["launch"], "Usage: corral launch [OPTIONS] JOB", "{job}"),
        (["preflight"], "Usage: corral preflight [OPTIONS] [JOB]", "[job]"),
        (["sweep", "status"], "Usage: corral sweep status [OPTIONS] NAME", "{name}"),
    ],
)
def test_usage_lines_name_arguments_as_people_write_them(capsys, argv, usage, absent):
    main([*argv, "--help"])
    out = capsys.readouterr().out
    assert usage in out and absent not in out
    assert "<list[" not in out


def test_list_options_show_what_one_value_is(capsys):
    main(["launch", "--help"])
    assert "--set              KEY=VALUE" in capsys.readouterr().out
    main(["bench", "volume", "--help"])
    out = capsys.readouterr().out
    assert "NODE" in out and "<list[str]>" not in out


def test_sweep_status_plot_help_says_metric_against_step(capsys):
    main(["sweep", "status", "--help"])
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "metric against step" in out and "the metric per trial" not in out

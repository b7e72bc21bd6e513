"""The first hour, second round: what a newcomer still tripped over (fresh clone, README only, an own
training script in an own repository), each as the user meets it: the CLI's words, on the real
local path where a run is involved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.cli import main
from tests.infra.tmux_server import end_server

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


def test_a_misspelt_nodes_key_alone_is_read_as_a_cluster(tmp_path, capsys):
    """'node' is closer to the cluster's 'nodes' than to the job's 'nnodes': a one-key file is a cluster too."""
    rc, out = check(tmp_path, capsys, "node:\n  - host: 10.0.0.5\n")
    assert rc == 2 and "read as a cluster file" in out and "did you mean nodes?" in out, out
    assert "name: Field required" not in out


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


def test_the_help_example_checks_clean(monkeypatch, capsys):
    """`corral config check configs/local.yaml configs/demo.yaml` (its --help example): the embedded cluster named
    is the embedded cluster, its workdir the project, where the demo's script is; no warning."""
    monkeypatch.chdir(REPO)
    assert main(["config", "check", "configs/local.yaml", "configs/demo.yaml"]) == 0
    out = capsys.readouterr()
    assert "ok (cluster)" in out.out and "ok (job)" in out.out
    assert "not found" not in out.out + out.err


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
    assert line.count("ssh:") == 1 and line.startswith("far: ssh: cannot reach 127.0.0.2 over ssh (connect to host"), (
        line
    )


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
    assert "--set KEY=VALUE" in " ".join(capsys.readouterr().out.split())
    main(["bench", "volume", "--help"])
    out = capsys.readouterr().out
    assert "NODE" in out and "<list[str]>" not in out


def test_sweep_status_plot_help_says_metric_against_step(capsys):
    main(["sweep", "status", "--help"])
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "metric against step" in out and "the metric per trial" not in out


# ----------------------------------------------------------------------------- a run in the user's own repository


@pytest.fixture
def own_project(monkeypatch):
    """The user's own git repository with a training script, as the working directory; a private tmux server."""
    import shutil
    import subprocess
    import uuid

    token = uuid.uuid4().hex[:8]
    root = Path("/var/tmp") / f"corral-own-project-{token}"
    (root / "src").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copy(REPO / "examples" / "train_demo.py", root / "src" / "train.py")
    (root / "job.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "mine",
                "script": "src/train.py",
                "args": ["--steps", "3", "--step-time", "0"],
                "nproc_per_node": 1,
            }
        )
    )
    sock = f"corral-test-{token}"
    monkeypatch.setenv("CORRAL_TMUX_SOCKET", sock)
    monkeypatch.chdir(root)
    yield root
    end_server(sock)
    shutil.rmtree(root, ignore_errors=True)


def untracked(root: Path) -> set[str]:
    import subprocess

    out = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    return {line[3:] for line in out.stdout.splitlines()}


def test_a_run_in_the_users_repository_writes_only_runs_and_checkpoints(own_project, capsys):
    assert main(["launch", "job.yaml", "--follow"]) == 0
    # what the user wrote, and the two directories the docs name (README, "Using it"); nothing else
    assert untracked(own_project) == {"job.yaml", "src/", "runs/", "checkpoints/"}
    # the docs' suggestion works: ignored, they leave `git status` to the user's own files
    readme = (REPO / "README.md").read_text()
    assert "runs/\ncheckpoints/" in readme and ".gitignore" in readme
    (own_project / ".gitignore").write_text("runs/\ncheckpoints/\n")
    assert untracked(own_project) == {"job.yaml", "src/", ".gitignore"}


def test_stopping_a_job_that_already_ended_says_so(local_space, capsys):
    from launcher import api
    from launcher.config import JobConfig

    cluster, root, token = local_space
    cfile = write_cluster(cluster, root)
    api.launch(JobConfig.model_validate({"name": "over", "script": "tests/workers/echo_env.py"}), cluster).wait(60)
    capsys.readouterr()
    assert main(["stop", "over", "-c", str(cfile)]) == 0
    out = capsys.readouterr().out
    assert "over had already ended (exited: local exited 0); " in out
    assert "stopped (0 process(es)" not in out and "tmux session corral-over removed" not in out
    api.launch(
        JobConfig.model_validate({"name": "busy", "script": "tests/workers/echo_env.py", "env": {"ECHO_SLEEP": "60"}}),
        cluster,
    )
    assert main(["stop", "busy", "-c", str(cfile), "--timeout", "5"]) == 0  # a running one is still stopped
    out = capsys.readouterr().out
    assert "stopped busy on 1 node(s)" in out and "no process of busy remains on any node" in out


# ----------------------------------------------------------------------------- corral on the PATH


def test_printed_commands_say_how_to_reach_corral_when_it_is_not_on_the_path(monkeypatch):
    import sys

    from launcher.cli.common import corral_invocation

    venv_bin = Path(sys.executable).parent
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a fresh shell after `make demo`: no venv on the PATH
    shown, note = corral_invocation(REPO)
    assert shown == str((venv_bin / "corral").relative_to(REPO))  # .venv/bin/corral, after `cd REPO`
    assert note is not None and f"source {venv_bin.relative_to(REPO)}/activate" in note and shown in note
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")  # activated
    assert corral_invocation(REPO) == ("corral", None)
    readme = (REPO / "README.md").read_text()
    assert "source .venv/bin/activate" in readme and "`.venv/bin/corral`" in readme


# ----------------------------------------------------------------------------- ps groups sweep trials


def write_cluster(cluster, root: Path) -> Path:
    cfile = root / "cluster.yaml"
    cfile.write_text(yaml.safe_dump(cluster.model_dump(mode="json")))
    return cfile


def test_ps_shows_a_sweep_as_one_line_and_its_trials_with_all(local_space, capsys):
    import json

    from launcher import api
    from launcher.config import JobConfig

    cluster, root, token = local_space
    cfile = write_cluster(cluster, root)
    sweep = root / "lr.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "lr",
                "job": {"script": "tests/sweep_trial.py", "args": ["--sleep", "0.1"], "nproc_per_node": 1},
                "method": "grid",
                "parameters": {"lr": {"values": [0.01, 0.02, 0.05]}},
                "metric": {"name": "loss", "goal": "minimize"},
                "plain": True,
                "poll_interval": 0.2,
            }
        )
    )
    assert main(["sweep", str(sweep), "-c", str(cfile), "--foreground"]) == 0
    api.launch(
        JobConfig.model_validate({"name": "solo", "script": "tests/workers/echo_env.py"}), cluster, plain=True
    ).wait(timeout=60)
    capsys.readouterr()
    assert main(["ps", "-c", str(cfile)]) == 0
    table = capsys.readouterr().out
    line = next(ln for ln in table.splitlines() if "lr (sweep)" in ln)
    assert line.split()[:7] == ["lr", "(sweep)", "ended", "3", "trials", "3", "exited"], table
    assert "corral sweep status lr" in " ".join(table.split())
    assert "solo" in table and "lr-" not in table  # no trial's own line
    assert main(["ps", "-c", str(cfile), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["kind"], r["state"]) for r in rows] == [("solo", "job", "exited"), ("lr", "sweep", "ended")]
    assert rows[1]["trials"] == {"exited": 3}
    assert main(["ps", "-c", str(cfile), "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    trials = [r for r in rows if r["kind"] == "trial"]
    assert (
        len(trials) == 3 and {r["sweep"] for r in trials} == {"lr"} and all(r["name"].startswith("lr-") for r in trials)
    )
    assert not [r for r in rows if r["kind"] == "sweep"]


# ----------------------------------------------------------------------------- bayes sweeps: dry run and status

BAYES = {
    "name": "tpe",
    "job": {"script": "train.py", "nproc_per_node": 1},
    "method": "bayes",
    "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}},
    "metric": {"name": "loss"},
    "run_cap": 6,
    "max_concurrent": 2,
}


def test_bayes_dry_run_is_one_consistent_statement(tmp_path, capsys):
    import json

    f = tmp_path / "tpe.yaml"
    f.write_text(yaml.safe_dump(BAYES))
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"nodes": [{"host": "h1", "name": "n1"}], "storage": {"runs": str(tmp_path)}}))
    assert main(["sweep", str(f), "-c", str(cluster), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 trial(s)" not in out and out.count("trial(s)") == 1
    assert "sweep tpe (dry run): bayes, 6 trial(s) of 1 node(s) each, at most 2 at once" in out
    assert "lr: FloatDistribution(0.0001, 0.1, log=True)" in out
    assert main(["sweep", str(f), "-c", str(cluster), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (
        plan["run_cap"] == 6
        and plan["trials"] == []
        and plan["space"] == ["lr: FloatDistribution(0.0001, 0.1, log=True)"]
    )


def test_status_of_a_bayes_sweep_calls_no_trial_stale(tmp_path, capsys):
    import optuna

    from launcher.config import ClusterConfig
    from launcher.sweep.config import sweep_from_mapping
    from launcher.sweep.controller import Controller, load_spec, save_spec
    from launcher.sweep.paths import sweep_paths
    from launcher.sweep.study import SweepStudy
    from perf.sweep_objective import PARAMETERS, SyntheticBackend

    cluster = ClusterConfig.model_validate({"nodes": [{"host": "h1"}], "storage": {"runs": str(tmp_path / "runs")}})
    paths = sweep_paths(cluster, "tpe")
    save_spec(paths, sweep_from_mapping({**BAYES, "parameters": PARAMETERS, "poll_interval": 0.1}, "tpe.yaml"))
    spec = load_spec(paths)
    backend = SyntheticBackend(tmp_path / "runs", max_steps=3, steps_per_poll=3)
    study = SweepStudy(spec.config, optuna.storages.InMemoryStorage())
    assert Controller(spec, cluster, backend, paths, sleep=lambda s: None, study=study).run() == 0
    cfile = tmp_path / "cluster.yaml"
    cfile.write_text(yaml.safe_dump(cluster.model_dump(mode="json")))
    assert main(["sweep", "status", "tpe", "-c", str(cfile), "--json"]) == 0
    import json

    st = json.loads(capsys.readouterr().out)
    assert st["counts"]["done"] == 6 and [r["error"] for r in st["trials"]] == [None] * 6
    assert main(["sweep", "status", "tpe", "-c", str(cfile)]) == 0
    assert "earlier version" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- a library's logging stays quiet


def test_a_detached_sweep_prints_no_library_log_lines(local_space, capsys):
    from launcher.config import load_cluster
    from launcher.sweep.controller import load_spec
    from launcher.sweep.paths import sweep_paths
    from launcher.sweep.status import build_status
    from tests.infra.waiting import wait_for

    cluster, root, token = local_space
    cfile = write_cluster(cluster, root)
    sweep = root / "quiet.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "quiet",
                "job": {"script": "tests/sweep_trial.py", "args": ["--sleep", "0.1"], "nproc_per_node": 1},
                "method": "grid",
                "parameters": {"lr": {"values": [0.01]}},
                "metric": {"name": "loss", "goal": "minimize"},
                "plain": True,
                "poll_interval": 0.2,
            }
        )
    )
    assert main(["sweep", str(sweep), "-c", str(cfile)]) == 0
    out = capsys.readouterr()
    assert "controller running detached in tmux session" in out.out
    assert "libtmux" not in out.out + out.err and "INFO" not in out.err
    paths = sweep_paths(load_cluster(cfile), "quiet")

    def finished():
        st = build_status(load_spec(paths), paths)
        return st["finished"] and not st["controller"]["alive"]

    wait_for(finished, 60, "the sweep to finish")  # its tmux server goes with local_space


# ----------------------------------------------------------------------------- early termination acts as reports arrive


def test_a_prune_reaches_a_fast_trial_before_its_end_and_status_says_why(local_space, capsys):
    """Two trials one after the other, reporting a step every 0.1 s for 40 steps; the second is worse at the
    first milestone (step 3). The controller's round is 5 s, longer than a whole trial: pruning only at its
    rounds, the second would finish all 40 steps first."""
    import json

    cluster, root, token = local_space
    cfile = write_cluster(cluster, root)
    sweep = root / "fast.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "fast",
                "job": {
                    "script": "tests/sweep_objective_trial.py",
                    "args": ["--steps", "40", "--step-sleep", "0.1"],
                    "nproc_per_node": 1,
                },
                "method": "grid",
                "parameters": {"lr": {"values": [0.001, 1e-9]}},  # the second learns nothing: worse at step 3
                "metric": {"name": "loss", "goal": "minimize"},
                "early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 3},
                "max_concurrent": 1,
                "plain": True,
                "poll_interval": 5.0,
            }
        )
    )
    assert main(["sweep", str(sweep), "-c", str(cfile), "--foreground"]) == 0
    capsys.readouterr()
    assert main(["sweep", "status", "fast", "-c", str(cfile), "--json"]) == 0
    rows = {r["params"]["lr"]: r for r in json.loads(capsys.readouterr().out)["trials"]}
    good, bad = rows[0.001], rows[1e-9]
    assert good["state"] == "done" and bad["state"] == "pruned", bad
    assert bad["pruned_at_step"] == 3
    assert 3 <= bad["stopped_at_step"] < 40  # stopped on its way, and the step it got to is recorded
    assert f"its run stopped at step {bad['stopped_at_step']}" in bad["error"]
    assert "pruned at step 3 by early_terminate (successive_halving): loss=" in bad["error"]
    assert main(["sweep", "status", "fast", "-c", str(cfile)]) == 0
    table = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "pruned at step 3 by early_terminate" in table


def test_a_retried_trial_counts_once_in_its_sweeps_line_by_its_latest_attempt():
    from types import SimpleNamespace

    from launcher.cli.ps_view import sweep_rows

    runs = {"t1-a1": ("t1", 1, "failed"), "t1-a2": ("t1", 2, "exited"), "t2-a1": ("t2", 1, "exited")}
    statuses = [SimpleNamespace(name=n, state=st) for n, (_, _, st) in runs.items()]
    [row] = sweep_rows(statuses, dict.fromkeys(runs, "lr"), {n: (t, a) for n, (t, a, _) in runs.items()})
    assert row["trials"] == {"exited": 2} and row["state"] == "ended"

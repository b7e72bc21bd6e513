"""corral on a real Slurm cluster: slurmctld on the host, one slurmd per simulated node (tests.infra.slurmcluster).

One 2-node cluster (2 CPUs each) for the module. Jobs are tiny training runs of examples/train_demo.py
on gloo; the nodes share the machine's file system, as a Slurm cluster shares its drive.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from itertools import permutations
from pathlib import Path

import pytest
import yaml

from benchmarks.cluster.run import ALLOCATION_NET_NOTE
from launcher import api
from launcher.cli import main as cli_main
from launcher.config import ClusterConfig, JobConfig
from tests.infra.waiting import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"


@pytest.fixture(scope="module")
def work(slurm_cluster) -> Path:
    d = slurm_cluster.sim.shared_dir / "work"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def cfile(slurm_cluster, work) -> Path:
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(slurm_cluster.cluster_config(workdir=REPO, venv=VENV)))
    return path


@pytest.fixture(scope="module")
def cl(slurm_cluster) -> ClusterConfig:
    return ClusterConfig.model_validate(slurm_cluster.cluster_config(workdir=REPO, venv=VENV))


@pytest.fixture
def names(cl):
    """Unique job names; every job named here is cancelled after the test, pass or fail."""
    made: list[str] = []

    def new(prefix: str) -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:6]}")
        return made[-1]

    yield new
    for name in made:
        try:
            api.stop(name, cl, timeout=2)
        except Exception:  # noqa: BLE001 - never submitted, or already gone
            pass


def train_job(
    name: str, *, nnodes: int = 2, steps: int = 60, step_time: float = 0.0, nproc: int = 2, **extra
) -> JobConfig:
    return JobConfig.model_validate(
        {
            "name": name,
            "script": "examples/train_demo.py",
            "nnodes": nnodes,
            "nproc_per_node": nproc,
            "args": ["--steps", str(steps), "--step-time", str(step_time), "--plain-sgd", *extra.pop("more_args", [])],
            "env": {"PYTHONPATH": str(REPO)},
            **extra,
        }
    )


def write_job(work: Path, job: JobConfig) -> Path:
    path = work / f"{job.name}.yaml"
    path.write_text(yaml.safe_dump(job.model_dump(mode="json", exclude_none=True)))
    return path


def results(handle) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((handle.run_dir / "results").glob("rank*.json"))]


def job_pids(run_id: str) -> list[int]:
    """PIDs whose environment carries this run's id (the simulated nodes share one PID space)."""
    marker = f"CORRAL_RUN_ID={run_id}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if marker in (p / "environ").read_bytes().split(b"\0"):
                found.append(int(p.name))
        except OSError:
            continue
    return found


def slurm_jobs(slurm_cluster) -> list[str]:
    return slurm_cluster.client(["squeue", "-h", "-o", "%i %j"]).stdout.splitlines()


def ps_rows(capsys, cfile: Path, name: str) -> list[dict]:
    capsys.readouterr()
    assert cli_main(["ps", "-c", str(cfile), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    return [r for r in rows if r["name"] == name]


def test_training_2x2_ps_pending_running_exited_and_logs(slurm_cluster, cfile, work, names, capsys):
    name = names("train")
    slurm_cluster.client(["scontrol", "update", "PartitionName=debug", "State=DOWN"])
    try:
        capsys.readouterr()
        # preflight refuses a down partition, so this submission skips it: the job waits in the queue
        handle = api.launch(
            train_job(name), ClusterConfig.model_validate(yaml.safe_load(cfile.read_text())), preflight=False
        )
        rows = wait_for(lambda: ps_rows(capsys, cfile, name), 30, "the job in ps")
        assert [n["state"] for n in rows[0]["nodes"]] == ["pending"], rows
        assert "PartitionDown" in rows[0]["nodes"][0]["detail"], rows
    finally:
        slurm_cluster.client(["scontrol", "update", "PartitionName=debug", "State=UP"])
    seen: set[str] = set()

    def states() -> bool:
        nodes = ps_rows(capsys, cfile, name)[0]["nodes"]
        seen.update(n["state"] for n in nodes)
        return all(n["state"] == "exited" for n in nodes)

    wait_for(states, 300, "the job to end", interval=0.5)
    assert "running" in seen, seen
    status = handle.status()
    assert status.ok and len(status.nodes) == 2 and all(n.exit_code == 0 for n in status.nodes), status.to_json()
    assert {n.node for n in status.nodes} == set(slurm_cluster.node_names)
    res = results(handle)
    assert sorted(r["rank"] for r in res) == [0, 1, 2, 3] and all(r["world_size"] == 4 for r in res)
    assert {r["node"] for r in res} == set(slurm_cluster.node_names)
    capsys.readouterr()
    assert cli_main(["logs", name, "-c", str(cfile), "-n", "1000"]) == 0
    out = capsys.readouterr().out
    for node in slurm_cluster.node_names:
        assert f"[{node}] corral: exited with status 0" in out, out[-2000:]
    for rank in range(4):
        assert re.search(rf"^\[[^\]]+\] \[rank{rank}\]: rank {rank}/4 ready", out, re.M), out[-3000:]


def test_stop_leaves_no_process_and_spares_the_job_beside_it(cl, cfile, names, capsys):
    a, b = names("long"), names("beside")
    ha = api.launch(train_job(a, nnodes=2, steps=100000, step_time=0.05, nproc=1), cl)
    hb = api.launch(train_job(b, nnodes=1, steps=100000, step_time=0.05, nproc=1), cl)
    wait_for(
        lambda: len(job_pids(ha.record.run_id)) > 2 and len(job_pids(hb.record.run_id)) > 1, 120, "both jobs' processes"
    )
    wait_for(lambda: all(n.state == "running" for n in ha.status().nodes + hb.status().nodes), 60, "both jobs running")
    capsys.readouterr()
    assert cli_main(["stop", a, "-c", str(cfile), "--timeout", "5"]) == 0
    assert "no process of" in capsys.readouterr().out
    assert job_pids(ha.record.run_id) == []
    assert job_pids(hb.record.run_id), "the other job lost its processes"
    assert all(n.state == "running" for n in hb.status().nodes), hb.status().to_json()
    assert cli_main(["stop", b, "-c", str(cfile), "--timeout", "5"]) == 0
    assert job_pids(hb.record.run_id) == []


def checkpoint_steps(ckpt_dir: Path) -> list[int]:
    """Published checkpoints only: a ``.staging-step-…`` directory is a save in progress, not one to resume from."""
    from launcher.checkpoint.layout import parse_step_dirname

    return sorted(s for p in ckpt_dir.glob("*") if (s := parse_step_dirname(p.name)) is not None)


def test_requeue_resumes_from_the_latest_checkpoint(slurm_cluster, cl, names):
    name = names("requeue")
    every = 10
    handle = api.launch(train_job(name, steps=120, step_time=0.1, more_args=["--ckpt-every", str(every)]), cl)
    wait_for(lambda: any(s >= 2 * every for s in checkpoint_steps(handle.ckpt_dir)), 240, "a checkpoint at step 20")
    before = max(checkpoint_steps(handle.ckpt_dir))
    job_id = handle.record.backend_state["job_id"]
    slurm_cluster.client(["scontrol", "requeue", job_id])
    status = handle.wait(timeout=400)
    assert status.ok, status.to_json()
    res = results(handle)
    assert len(res) == 4, res
    # resumed from a checkpoint at least as late as the one seen before the requeue: at most one interval lost
    assert all(r["resumed_from"] >= before + 1 for r in res), (before, res)
    info = slurm_cluster.client(["scontrol", "show", "job", "-o", job_id]).stdout
    assert "Restarts=1" in info, info


def test_preflight_refusals_are_one_sentence_exit_2_nothing_submitted(
    slurm_cluster, cfile, work, names, capsys, monkeypatch
):
    before = slurm_jobs(slurm_cluster)
    too_many = write_job(work, train_job(names("toomany"), nnodes=3))
    capsys.readouterr()
    assert cli_main(["launch", str(too_many), "-c", str(cfile)]) == 2
    err = capsys.readouterr().err
    assert "asks for 3 nodes but partition 'debug' has 2" in err and "nothing was submitted" in err, err

    bad_part = work / "badpart.yaml"
    data = yaml.safe_load(cfile.read_text())
    data["slurm"]["partition"] = "nosuch"
    bad_part.write_text(yaml.safe_dump(data))
    ok_job = write_job(work, train_job(names("badpart")))
    assert cli_main(["launch", str(ok_job), "-c", str(bad_part)]) == 2
    err = capsys.readouterr().err
    assert "partition 'nosuch' does not exist" in err and "debug" in err, err

    monkeypatch.setenv("PATH", str(work / "no-slurm-here"))
    assert cli_main(["launch", str(ok_job), "-c", str(cfile)]) == 2
    err = capsys.readouterr().err
    assert "Slurm client(s) sbatch, squeue, scontrol, scancel, srun, sinfo are not installed" in err, err
    monkeypatch.undo()
    assert slurm_jobs(slurm_cluster) == before
    for err_line in (err,):
        assert "Traceback" not in err_line


def test_dry_run_prints_the_scripts_and_submits_nothing(slurm_cluster, cfile, work, names, capsys):
    job = write_job(work, train_job(names("dry")))
    before = slurm_jobs(slurm_cluster)
    capsys.readouterr()
    assert cli_main(["launch", str(job), "-c", str(cfile), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        "#SBATCH --partition=debug" in out
        and 'torchrun --nnodes "$SLURM_NNODES"' in out
        and "nothing was submitted" in out
    )
    assert slurm_jobs(slurm_cluster) == before


def test_preflight_command_checks_paths_on_a_node(cfile, work, capsys):
    capsys.readouterr()
    assert cli_main(["preflight", "-c", str(cfile)]) == 0
    out = capsys.readouterr().out
    assert "paths: ok" in out and "partition: ok" in out, out
    data = yaml.safe_load(cfile.read_text())
    data["workdir"] = str(work / "missing-dir")
    bad = work / "badpaths.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert cli_main(["preflight", "-c", str(bad)]) == 2
    assert "missing-dir does not exist on" in capsys.readouterr().out


def test_sigusr1_before_the_time_limit_saves_requeues_and_resumes(slurm_cluster, cl, names):
    """What ``--signal=B:USR1@S`` does near the time limit, sent now: the batch script passes SIGUSR1 on,
    the demo's workers save a checkpoint and leave, the job is requeued and resumes from that step."""
    name = names("usr1")
    handle = api.launch(train_job(name, steps=150, step_time=0.1, more_args=["--ckpt-every", "1000"]), cl)
    wait_for(
        lambda: "step 0 loss" in "".join(p.read_text() for p in (handle.run_dir / "logs").glob("*.log")),
        240,
        "training to start",
    )
    time.sleep(
        1.5
    )  # a dozen steps past step 0 (0.1 s each): the save on SIGUSR1 is then not the periodic one at step 0
    job_id = handle.record.backend_state["job_id"]
    slurm_cluster.client(["scancel", "--batch", "--signal=USR1", job_id])
    status = handle.wait(timeout=400)
    assert status.ok, status.to_json()
    res = results(handle)
    # the periodic checkpoints are at step 0 only (--ckpt-every 1000): a later one was saved on SIGUSR1,
    # at the step every rank stopped at, and the next attempt resumed right after it (no step lost)
    resumed = {r["resumed_from"] for r in res}
    assert len(res) == 4 and len(resumed) == 1 and min(resumed) > 1, res
    assert checkpoint_steps(handle.ckpt_dir)[-1] == 149
    assert "Restarts=1" in slurm_cluster.client(["scontrol", "show", "job", "-o", job_id]).stdout


def test_bench_allreduce_on_a_two_node_allocation(slurm_cluster, cfile, work, capsys):
    """The benchmark's job asks for every node of the partition (nnodes: all -> 2) and passes its data checks."""
    out = work / "allreduce.json"
    capsys.readouterr()
    rc = cli_main(
        [
            "bench",
            "allreduce",
            "-c",
            str(cfile),
            "--nproc-per-node",
            "2",
            "-b",
            "1K",
            "-e",
            "16K",
            "-f",
            "4",
            "-n",
            "3",
            "-w",
            "1",
            "--json-out",
            str(out),
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:]
    result = json.loads(out.read_text())
    assert result["env"]["nnodes"] == 2 and result["env"]["ranks_per_node"] == 2
    assert set(result["env"]["devices_by_node"]) == set(slurm_cluster.node_names)
    assert sorted({r["size_bytes"] for r in result["rows"]}) == [1024, 4096, 16384]
    assert all(r["wrong"] == 0 and r["busbw_gbps"] > 0 for r in result["rows"])


def test_launch_follow_streams_every_node_then_attach_explains_the_job_has_ended(
    slurm_cluster, cfile, work, names, capsys
):
    name = names("follow")
    job = write_job(work, train_job(name, steps=20, nproc=1))
    capsys.readouterr()
    assert cli_main(["launch", str(job), "-c", str(cfile), "--follow"]) == 0
    printed = capsys.readouterr()
    out = printed.out + printed.err
    assert "submitted" in out and "every node exited 0" in out, out[-2000:]
    for node in slurm_cluster.node_names:
        assert f"[{node}] corral: exited with status 0" in out
    assert cli_main(["logs", name, "-c", str(cfile), "--node", slurm_cluster.node_names[1], "-n", "5"]) == 0
    tail = capsys.readouterr().out.splitlines()
    assert len(tail) == 5 and all(line.startswith(f"[{slurm_cluster.node_names[1]}] ") for line in tail)
    assert cli_main(["attach", name, "-c", str(cfile)]) == 2
    assert "there is no running allocation to open a shell in" in capsys.readouterr().err


def test_attach_opens_a_step_inside_the_running_allocation(slurm_cluster, cl, names):
    from launcher.backends.slurm.backend import attach_argv

    name = names("attach")
    handle = api.launch(train_job(name, nnodes=2, steps=100000, step_time=0.05, nproc=1), cl)
    wait_for(lambda: all(n.state == "running" for n in handle.status().nodes), 120, "the job to run")
    second = slurm_cluster.node_names[1]
    argv = attach_argv(handle.record, cl, second)
    job_id = handle.record.backend_state["job_id"]
    assert argv == [
        "srun",
        f"--jobid={job_id}",
        "--overlap",
        f"--nodelist={second}",
        "--nodes=1",
        "--ntasks=1",
        "--pty",
        "bash",
        "-i",
    ]
    # the same step without a terminal: it runs on that node, inside the job, beside the training
    probe = [a for a in argv if a != "--pty"][:-2] + ["bash", "-c", 'echo "$(hostname) $SLURM_JOB_ID"']
    assert slurm_cluster.client(probe, timeout=60).stdout.split() == [second, job_id]
    assert all(n.state == "running" for n in handle.status().nodes)


def test_bench_volume_runs_on_every_node_of_the_allocation(slurm_cluster, cfile, work, capsys):
    shared = work / "vol"
    shared.mkdir()
    out = work / "volume.json"
    capsys.readouterr()
    rc = cli_main(
        ["bench", "volume", str(shared), "-c", str(cfile), "--size", "8M", "--mode", "seqwrite", "--json-out", str(out)]
    )
    assert rc == 0, capsys.readouterr().err[-3000:]
    doc = json.loads(out.read_text())
    assert sorted(r["node"] for r in doc["results"]) == sorted(slurm_cluster.node_names) and not doc["failed_nodes"]
    assert {a["mode"]: a["nodes"] for a in doc["aggregate"]} == {"seqwrite": 2}
    assert list(shared.iterdir()) == []


def test_bench_node_probes_every_node_of_the_allocation(slurm_cluster, cfile, work, capsys):
    out = work / "node.json"
    capsys.readouterr()
    code = cli_main(["bench", "node", "-c", str(cfile), "--quick", "--json-out", str(out), "--timeout", "240"])
    report = json.loads(out.read_text())
    assert code == 0, report["summary"]
    assert sorted(n["host"] for n in report["nodes"]) == sorted(slurm_cluster.node_names)
    for node in report["nodes"]:
        checks = {c["name"]: c for c in node["checks"]}
        assert "probe" not in checks, checks.get("probe")
        assert node["host_info"]["hostname"] == node["host"]  # the probe ran on that node, not here


def test_bench_cluster_quick_on_the_allocation(slurm_cluster, cfile, work, capsys):
    """The quick level as Slurm jobs: node probe, network, all-reduce and volume in the allocation. The cluster
    file names no nodes, so the network pairs are measured by one job whose first node coordinates them; the
    report names the allocation's nodes."""
    out = work / "accept"
    vol = work / "accept-vol"
    vol.mkdir()
    capsys.readouterr()
    code = cli_main(["bench", "cluster", "-c", str(cfile), "--out", str(out), "--volume-path", str(vol)])
    err = capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert code == 0, (err[-3000:], [n["findings"] for n in report["nodes"]])
    assert sorted(n["name"] for n in report["nodes"]) == sorted(slurm_cluster.node_names)
    steps = {s["name"]: s for s in report["steps"]}
    assert all(steps[s]["complete"] for s in ("node", "net", "allreduce", "volume")), steps
    assert steps["net"]["note"] == ALLOCATION_NET_NOTE
    net = report["measurements"]["net"]
    assert sorted(n["name"] for n in net["nodes"]) == sorted(slurm_cluster.node_names)
    assert {(p["src"], p["dst"]) for p in net["pairs"]} == set(permutations(slurm_cluster.node_names, 2))
    assert all(p["gbps"] > 0 and not p["error"] for p in net["pairs"]), net["pairs"]
    assert all(n["addr"] != "127.0.0.1" for n in net["nodes"])  # the addresses the peers reached, not loopback
    assert report["measurements"]["allreduce"]["world_size"] == 2
    assert sorted(report["figures"]) == sorted(slurm_cluster.node_names)
    assert all(
        "volume_seqwrite_mibps" in f and "cpu_gemm_gflops" in f and "net_rx_gbps" in f
        for f in report["figures"].values()
    )
    assert list(vol.iterdir()) == []


def test_nnodes_all_is_the_partition_and_needs_the_clients(slurm_cluster, cfile, work, names, capsys, monkeypatch):
    job = work / "all.yaml"
    data = train_job(names("all")).model_dump(mode="json", exclude_none=True)
    data["nnodes"] = "all"
    job.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert cli_main(["launch", str(job), "-c", str(cfile), "--dry-run"]) == 0
    assert "#SBATCH --nodes=2" in capsys.readouterr().out
    monkeypatch.setenv("PATH", str(work / "no-slurm-here"))
    assert cli_main(["launch", str(job), "-c", str(cfile)]) == 2
    assert "are not installed on this machine" in capsys.readouterr().err


def test_job_outlives_its_killed_launcher(cfile, work, names, cl):
    """No tmux needed: the launcher following the logs is SIGKILLed with its process group; the Slurm job finishes."""
    import os
    import signal
    import subprocess
    import sys

    name = names("orphan")
    job = write_job(work, train_job(name, steps=40, step_time=0.05, nproc=1))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "launch", str(job), "-c", str(cfile), "--follow"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: b"submitted" in launcher.stdout.readline(), 120, "the submission")
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    status = api.wait(name, cl, timeout=300)
    assert status.ok and len(status.nodes) == 2, status.to_json()


def test_a_batch_job_without_output_writes_into_the_cluster_dir_not_the_checkout(slurm_cluster):
    """sbatch's default is slurm-<id>.out in the submitter's directory: the test clients submit from the
    cluster's state directory, so a job recorded by hand (as tests/fixtures/slurm/ was) leaves the checkout clean."""
    job_id = slurm_cluster.client(["sbatch", "--parsable", "--wrap", "echo recorded"]).stdout.strip().split(";")[0]
    wait_for(lambda: job_id not in slurm_cluster.client(["squeue", "-h", "-o", "%i"]).stdout.split(), 60, "the job")
    out = slurm_cluster.state_dir / f"slurm-{job_id}.out"
    wait_for(out.exists, 10, f"{out}")
    assert out.read_text().strip() == "recorded"
    assert not (REPO / f"slurm-{job_id}.out").exists()

"""bench allreduce / bench net on the command line: bad input stops before anything launches (exit 2)."""

from __future__ import annotations

import json

import pytest
import yaml

from benchmarks.allreduce.run import build_job, min_busbw_failure, validate
from launcher.cli import main
from launcher.config import ClusterConfig


def write_cluster(tmp_path, nodes: list[dict]) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"nodes": nodes, "storage": {"runs": str(tmp_path / "runs")}}))
    return str(path)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-b", "64M", "-e", "8"], "larger than -e/--maxbytes"),
        (["-f", "1"], "stepfactor must be 2 or more"),
        (["-d", "float8"], "unknown data type 'float8'"),
        (["-o", "mean"], "is not one of"),
        (["-o", "avg", "--backend", "gloo"], "gloo backend has no 'avg'"),
        (["--backend", "mpi"], "is not one of"),
        (["-n", "0"], "-n/--iters must be at least 1"),
        (["--backend", "nccl"], "nodes.1 (cpu1) has no GPUs"),
        (["--backend", "nccl", "--nproc-per-node", "16"], "more than the 8 GPU(s) of nodes.0 (gpu0)"),
    ],
)
def test_allreduce_bad_input_exits_2_before_launch(tmp_path, capsys, args, needle):
    nodes = [{"host": "10.9.0.1", "name": "gpu0", "gpus": 8}, {"host": "10.9.0.2", "name": "cpu1", "gpus": 0}]
    if "--nproc-per-node" in args:
        nodes[1]["gpus"] = 8
    rc = main(["bench", "allreduce", "-c", write_cluster(tmp_path, nodes), *args])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err
    assert not (tmp_path / "runs").exists()  # nothing was launched: no run record


def test_net_bad_input_exits_2(tmp_path, capsys):
    no_addr = write_cluster(
        tmp_path, [{"host": "10.9.0.1", "name": "a", "addr": "10.9.0.1"}, {"host": "g2", "name": "b"}]
    )
    assert main(["bench", "net", "-c", no_addr]) == 2
    assert "nodes.1 (b): no private address" in capsys.readouterr().err
    ok = write_cluster(
        tmp_path,
        [{"host": "10.9.0.1", "name": "a", "addr": "10.9.0.1"}, {"host": "10.9.0.2", "name": "b", "addr": "10.9.0.2"}],
    )
    assert main(["bench", "net", "-c", ok, "--pairs", "star"]) == 2
    assert main(["bench", "net", "-c", ok, "--duration", "-1"]) == 2


def test_dry_runs_print_plans(tmp_path, capsys):
    ok = write_cluster(
        tmp_path,
        [{"host": "10.9.0.1", "name": "a", "addr": "10.9.0.1"}, {"host": "10.9.0.2", "name": "b", "addr": "10.9.0.2"}],
    )
    assert main(["bench", "net", "-c", ok, "--pairs", "ring", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "a -> b (10.9.0.2):" in out and "b -> a (10.9.0.1):" in out and "- recv --bind 10.9.0.2 --port PORT" in out
    assert main(["bench", "allreduce", "-c", ok, "-b", "1K", "-e", "8K", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "node a (ssh 10.9.0.1)" in out and "-m benchmarks.allreduce.worker -b 1024 -e 8192" in out
    assert "sizes: 1024 2048 4096 8192" in out


def test_job_for_the_worker():
    cluster = ClusterConfig.model_validate({"nodes": [{"host": "localhost"}]})
    req = validate(
        cluster,
        min_bytes="8",
        max_bytes="1M",
        factor=4,
        iters=7,
        warmup=1,
        dtype="bf16",
        op="max",
        backend="auto",
        nproc_per_node=None,
    )
    job = build_job(req, "bench-allreduce-x")
    assert job.module == "benchmarks.allreduce.worker" and job.nproc_per_node == "auto" and job.backend == "auto"
    assert job.args == [
        "-b",
        "8",
        "-e",
        "1048576",
        "-f",
        "4",
        "-n",
        "7",
        "-w",
        "1",
        "-d",
        "bfloat16",
        "-o",
        "max",
        "--backend",
        "auto",
    ]
    json.dumps(job.model_dump())


def test_min_busbw_message_says_by_how_much():
    result = {"peak_busbw_gbps": 38.0}
    assert min_busbw_failure(result, None) is None and min_busbw_failure(result, 38.0) is None
    assert min_busbw_failure(result, 40.0) == "peak busbw 38.000 GB/s is below --min-busbw 40 GB/s by 2.000 GB/s (5.0%)"


def test_progress_is_silent_off_a_terminal(capsys):
    from launcher.cli.progress import progress

    with progress("sizes", total=3) as update:
        update(completed=2, note="a running")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_volume_dry_run_on_a_cluster_prints_the_launch_plan(tmp_path, capsys):
    ok = write_cluster(tmp_path, [{"host": "10.9.0.1", "name": "a"}, {"host": "10.9.0.2", "name": "b"}])
    assert (
        main(
            ["bench", "volume", "/mnt/vol", "-c", ok, "--node", "b", "--size", "64M", "--mode", "seqread", "--dry-run"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "node b (ssh 10.9.0.2)" in out and "node a" not in out
    assert "command: python3 -m benchmarks.volume.worker --size 67108864" in out and "-- /mnt/vol" in out

"""One contract, every backend: ssh + tmux (on localhost), Slurm (a real 2-node cluster) and ``procs``,
a backend that exists only in the tests (tests/infra/procs_backend/: ranks as local processes, no tmux).

``procs`` becomes a backend with the one ``register`` line in its fixture and nothing else: the
commands, the API, the run record and the routing by the record take it as they take the other two.
Each backend launches the same small job through ``launcher.api`` / ``corral``, and must: describe
it without touching anything, run it to its exit code on every node, hand back the files it wrote
and its log lines, name itself in the run record (read back by ``backend_of``), stop a running job
leaving no process, refuse to attach to an ended one with a sentence, and pass its own preflight.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from launcher import api, backends
from launcher.cli import main as cli_main
from launcher.config import ClusterConfig, JobConfig
from launcher.errors import UserError
from launcher.jobs import follow, job_env, read_files
from launcher.runs.record import load
from tests.infra.procs_backend import REGISTRATION
from tests.infra.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"


def _ssh(request):
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed")
    cluster, root, _ = request.getfixturevalue("local_space")
    return cluster, root


def _slurm(request):
    sc = request.getfixturevalue("slurm_cluster")
    data = sc.cluster_config(workdir=REPO, venv=VENV)
    return ClusterConfig.model_validate(data), Path(data["storage"]["runs"]).parent


def _procs(request):
    backends.register(*REGISTRATION)
    request.addfinalizer(lambda: backends.unregister(REGISTRATION[0]))
    root = Path("/var/tmp") / f"corral-procs-test-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    cluster = ClusterConfig.model_validate(
        {
            "backend": "procs",
            "nodes": [{"host": "localhost", "name": "local"}],
            "workdir": str(REPO),
            "storage": {"runs": str(root / "runs"), "checkpoints": str(root / "ckpt")},
        }
    )
    return cluster, root


SETUPS = {"ssh": _ssh, "slurm": _slurm, "procs": _procs}


@pytest.fixture(
    params=[
        "ssh",
        pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.slow]),
        "procs",
    ]
)
def where(request):
    """(backend name, cluster, storage root); every job named through ``names`` is stopped afterwards."""
    cluster, root = SETUPS[request.param](request)
    return request.param, cluster, root


@pytest.fixture
def names(where):
    made: list[str] = []

    def new(prefix: str) -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:6]}")
        return made[-1]

    yield new
    _, cluster, _ = where
    for name in made:
        try:
            api.stop(name, cluster, timeout=2)
        except UserError:
            pass  # never launched


def contract_job(name: str, sleep_s: float, code: int) -> JobConfig:
    return JobConfig.model_validate(
        {"name": name, "script": "tests/workers/contract_job.py", "args": [str(sleep_s), str(code)], "nnodes": 1}
    )


def test_the_cluster_file_picks_the_backend_and_describe_touches_nothing(where, names):
    name_of, cluster, root = where
    backend = backends.backend_for(cluster)
    assert backend.name == name_of
    name = names("describe")
    desc = api.dry_run(contract_job(name, 0, 0), cluster, name=name, plain=True)
    assert desc.text and desc.data and desc.run_dir.endswith(f"/{name}")
    assert bool(desc.nodes) is not backend.capabilities.places_nodes
    assert not Path(desc.run_dir).exists()


def test_a_job_runs_to_its_exit_code_and_the_record_routes_to_its_backend(where, names):
    name_of, cluster, _ = where
    name = names("exit")
    handle = api.launch(contract_job(name, 0, 3), cluster, name=name, plain=True)
    raw = json.loads((handle.run_dir / "run.json").read_text())
    assert raw["backend"] == name_of and "slurm" not in raw
    record = load(api.runs_dir(cluster), name)
    assert backends.backend_of(record).name == name_of
    env = job_env(record)
    assert env["CORRAL_RUN_ID"] == record.run_id and env["CORRAL_JOB_NAME"] == name
    status = handle.wait(timeout=120)
    assert status.nodes and all(n.state == "exited" and n.exit_code == 3 for n in status.nodes), status.to_json()
    assert status.state == "failed"
    got = read_files(record, cluster, ["contract-{node}.json"])
    assert set(got) == {n.node for n in status.nodes}
    for node, by_path in got.items():
        env = json.loads(by_path["contract-{node}.json"])
        assert env["CORRAL_RUN_ID"] == record.run_id and env["CORRAL_JOB_NAME"] == name and env["CORRAL_NODE"] == node
    tails = handle.log_tails(20)
    assert any("contract job on" in line for lines in tails.values() for line in lines), tails
    with pytest.raises(UserError, match=name):
        backends.backend_of(record).attach(record, cluster, None)
    # following an ended job prints its log and returns its final status, as `corral logs -f` does
    out = io.StringIO()
    final = asyncio.run(follow(record, cluster, None, 50, until_done=True, out=out))
    assert final is not None and final.state == "failed"
    assert "contract job on" in out.getvalue()
    api.clean_up(name, cluster)  # what run_to_completion does at the end: nothing of the job is left
    assert api.status(name, cluster).state == "failed"


def test_stop_ends_a_running_job_and_leaves_no_process(where, names, capsys):
    name_of, cluster, root = where
    name = names("stop")
    handle = api.launch(contract_job(name, 300, 0), cluster, name=name, plain=True)
    wait_for(lambda: handle.status().running, 90, f"{name} to run on {name_of}")
    results = handle.stop(timeout=5)
    assert results and not any(r.error or r.remaining for r in results), results
    assert handle.status().state == "stopped"
    # the CLI reads the same record from disk and routes by it
    cfile = root / f"{name}-cluster.yaml"
    cfile.write_text(yaml.safe_dump(cluster.model_dump(mode="json", exclude_none=True, exclude_defaults=True)))
    assert cli_main(["ps", "-c", str(cfile), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[name]["state"] == "stopped"


def test_preflight_passes_on_a_working_cluster(where, capsys):
    _, cluster, root = where
    view = backends.backend_for(cluster).preflight(None, cluster)
    assert view.failure is None, view.lines
    assert view.lines or view.rows

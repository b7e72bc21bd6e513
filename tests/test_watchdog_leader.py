"""The leader's bookkeeping, in process: samples in, orders out, one event per hang, stragglers.

The real ``Leader`` object on this machine (its own node has no workers: the run id is unique),
fed the messages followers send (``receive``), without sockets between them; what it writes
(events, state, stacks, the log line) is read back from a temporary run directory."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from launcher.watchdog import node


@pytest.fixture
def leader(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))  # port claims in a private place
    cfg = node.Config(
        run_id=f"t-{uuid.uuid4().hex[:8]}",
        name="t",
        node="n1",
        node_rank=0,
        nnodes=3,
        run_dir=str(tmp_path / "run"),
        log_path=str(tmp_path / "run" / "logs" / "n1.log"),
        leader_host="127.0.0.1",
        port=0,  # an ephemeral port: nothing else may be disturbed
        hang_after=5,
        first_step_grace=5,
        on_hang="dump",
        interval=1,
        max_restarts=0,
        straggler_after=0.3,
        native=False,
    )
    lead = node.Leader(cfg, node.Sampler(cfg))
    yield lead
    lead.close()


def sample(n: str, rank: int, *, step: int, age: float, state: str = "S") -> dict:
    r = {"node": n, "rank": rank, "local_rank": 0, "pid": 10_000_000 + rank, "state": state, "step": step}
    return {"node": n, "ranks": [r | {"step_age_s": age, "phase": "step", "phase_age_s": None}], "log_quiet_s": 0.0}


def send(lead, n: str, op: str, **body) -> dict:
    return lead.receive({"run_id": lead.cfg.run_id, "node": n, "op": op, **body})


def test_strangers_are_refused_and_hello_takes_no_orders(leader):
    assert leader.receive({"run_id": "other", "node": "n2", "op": "sample"}) is None
    leader.orders["n2"] = [{"do": "dump", "hang": "x"}]
    assert send(leader, "n2", "hello") == {"ok": True}
    assert send(leader, "n2", "sample", sample=sample("n2", 1, step=3, age=0.1))["orders"] == [
        {"do": "dump", "hang": "x"}
    ]


def test_one_hang_one_event_with_every_nodes_stacks(leader):
    send(leader, "n2", "sample", sample=sample("n2", 1, step=40, age=9, state="T"))
    send(leader, "n3", "sample", sample=sample("n3", 2, step=40, age=9))
    leader.tick()  # hung: dumps ordered from n2 and n3
    assert leader.hang is not None and leader.hang.waiting == {"n2", "n3"}
    for n, r in (("n2", 1), ("n3", 2)):
        reply = send(leader, n, "sample", sample=sample(n, r, step=40, age=10))
        assert reply["orders"] == [{"do": "dump", "hang": leader.hang.id}]
    hang_id = leader.hang.id
    send(leader, "n2", "dumped", hang=hang_id, stacks={"1": {"text": None, "error": "py-spy: stopped"}})
    send(leader, "n3", "dumped", hang=hang_id, stacks={"2": {"text": 'Thread 1 (idle): "MainThread"\n', "error": None}})
    leader.tick()  # every dump in: the event
    events = [json.loads(x) for x in Path(leader.wd_dir, "events.jsonl").read_text().splitlines()]
    assert len(events) == 1 and events[0]["nodes"] == ["n2"] and events[0]["action"] == "dump"
    assert events[0]["not_dumped"] == {"n2-rank1": "py-spy: stopped"}
    stacks = sorted(p.name for p in Path(events[0]["stacks"]).iterdir())
    assert stacks == ["n2-rank1.txt", "n3-rank2.txt"]
    assert json.loads(Path(leader.wd_dir, "state.json").read_text())["state"] == "hung"
    assert "corral watchdog: hang" in Path(leader.cfg.log_path).read_text()
    # still hung: no second event for the same hang
    send(leader, "n2", "sample", sample=sample("n2", 1, step=40, age=20, state="T"))
    leader.settle_until = 0
    leader.tick()
    assert len(Path(leader.wd_dir, "events.jsonl").read_text().splitlines()) == 1
    # it advances again: watching, and a later hang would be a new event
    send(leader, "n2", "sample", sample=sample("n2", 1, step=41, age=0.2))
    leader.tick()
    assert json.loads(Path(leader.wd_dir, "state.json").read_text())["state"] == "watching"


def test_a_node_behind_for_straggler_after_becomes_one_event(leader):
    for _ in range(2):
        send(leader, "n2", "sample", sample=sample("n2", 1, step=50, age=0.1))
        send(leader, "n3", "sample", sample=sample("n3", 2, step=47, age=0.1))
        leader.tick()
        time.sleep(0.4)
    leader.tick()
    events = [json.loads(x) for x in Path(leader.wd_dir, "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["nodes"]) for e in events] == [("straggler", ["n3"])]

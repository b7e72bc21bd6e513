"""The launch plan's typed container section, and the one-call container state rows (pure; no docker)."""

from __future__ import annotations

import json

from container.docker import parse_state_row
from container.facts import NodeFacts
from launcher.plan import ContainerSection, JobPlan, build_plan
from tests.test_plan import cluster, inputs, job


def test_a_job_with_a_container_section_has_a_typed_container_section_that_round_trips():
    cl = cluster()
    plan = build_plan(
        job(container={"image": "img:1", "gpus": "none"}),
        cl,
        cl.nodes,
        inputs(container_facts={n.label: NodeFacts(node=n.label, gpu_count=0) for n in cl.nodes}),
    )
    assert plan.container == ContainerSection(
        image="img:1",
        names={n.label: f"corral-{plan.name}-{n.label}" for n in cl.nodes},
        labels={"corral.job": plan.name},
    )
    assert all(n.command[:2] == ["docker", "run"] and f"corral-{plan.name}-{n.node}" in n.command for n in plan.nodes)
    assert JobPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_a_job_without_container_has_none_and_old_records_read_as_none():
    cl = cluster()
    plan = build_plan(job(), cl, cl.nodes, inputs())
    assert plan.container is None
    data = plan.to_dict()
    del data["container"]  # a run record written before the section existed
    assert JobPlan.from_dict(data).container is None


def test_state_rows_from_one_docker_ps():
    row = parse_state_row("corral-j-n1\texited\tExited (137) 2 seconds ago\timg:1\tn1")
    assert row == {
        "node": "n1",
        "name": "corral-j-n1",
        "state": "exited",
        "exit_code": 137,
        "status": "Exited (137) 2 seconds ago",
        "image": "img:1",
    }
    assert parse_state_row("corral-j-n2\trunning\tUp 3 minutes\timg:1\tn2")["exit_code"] is None
    assert parse_state_row("x\tcreated\tCreated\timg\t")["node"] == "?"

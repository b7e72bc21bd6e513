"""``corral bench cluster``'s pure parts: the plan, the judge's references, localization, bisection, exclusion."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmarks.cluster import judge as J
from benchmarks.cluster import levels, localize
from launcher.config import ClusterConfig
from launcher.config.exclude import LeftOut, exclude_nodes, exclusions, read_exclude_report
from launcher.errors import UserError

TH = J.Thresholds()


def pair(src, dst, gbps, error=None):
    return {"src": src, "dst": dst, "gbps": None if error else gbps, "error": error}


# ---------------------------------------------------------------------------- plan


def test_quick_plan_runs_the_four_benchmarks_with_budgets():
    plan = levels.build_plan("quick", ["a", "b", "c", "d"], gpus=False, volume_path="/data")
    assert [s.name for s in plan.steps] == ["node", "net", "allreduce", "volume"]
    assert plan.step("net").params == {"pairs": "ring", "duration_s": 2.0}
    assert all(s.budget_s > 0 for s in plan.steps) and plan.budget_s == sum(s.budget_s for s in plan.steps)
    text = levels.describe(plan, ["left out: e (--exclude)"])
    assert "left out: e (--exclude)" in text and "4 node(s) (a, b, c, d)" in text and "budget" in text


def test_standard_measures_all_pairs_up_to_16_nodes_then_the_ring():
    assert (
        levels.build_plan("standard", list("abcd"), gpus=False, volume_path=None).step("net").params["pairs"] == "all"
    )
    many = [f"n{i}" for i in range(17)]
    assert levels.build_plan("standard", many, gpus=False, volume_path=None).step("net").params["pairs"] == "ring"


def test_burn_in_needs_a_duration_and_gpu_nodes_get_the_single_node_allreduce():
    with pytest.raises(UserError, match="--duration"):
        levels.build_plan("burn-in", ["a", "b"], gpus=True, volume_path=None)
    plan = levels.build_plan("burn-in", ["a", "b"], gpus=True, volume_path=None, duration_s=60)
    assert [s.name for s in plan.steps] == ["node", "net", "allreduce", "node_allreduce", "burn"]
    with pytest.raises(UserError, match="--skip bogus: no such step"):
        levels.build_plan("quick", ["a", "b"], gpus=False, volume_path=None, skip=("bogus",))


def test_step_budget_replaces_one_steps_budget_and_bad_values_are_named():
    plan = levels.build_plan(
        "quick", list("abcd"), gpus=False, volume_path="/d", budgets=levels.parse_step_budgets(["volume=600"])
    )
    assert plan.step("volume").budget_s == 600
    assert (
        plan.step("net").budget_s
        == levels.build_plan("quick", list("abcd"), gpus=False, volume_path="/d").step("net").budget_s
    )
    with pytest.raises(UserError, match=r"--step-budget 'volume': write STEP=SECONDS"):
        levels.parse_step_budgets(["volume"])
    with pytest.raises(UserError, match=r"--step-budget 'volume=ten': write STEP=SECONDS"):
        levels.parse_step_budgets(["volume=ten"])
    with pytest.raises(UserError, match="--step-budget disk=...: no such step; the steps are node, net"):
        levels.build_plan("quick", ["a"], gpus=False, volume_path=None, budgets={"disk": 5.0})
    with pytest.raises(UserError, match="--step-budget node=0: a budget is a positive number of seconds"):
        levels.build_plan("quick", ["a"], gpus=False, volume_path=None, budgets={"node": 0.0})


# ---------------------------------------------------------------------------- peers


def test_peer_rule_fails_the_outlier_only():
    figs = {"a": {"cpu_gemm_gflops": 100.0}, "b": {"cpu_gemm_gflops": 97.0}, "c": {"cpu_gemm_gflops": 103.0}}
    figs["d"] = {"cpu_gemm_gflops": 40.0}
    out = J.judge_peers(figs, TH)
    assert [f.severity for f in out["d"]] == ["fail"] and out["d"][0].reference == "peers"
    assert "59% below its peers' median 98.5" in out["d"][0].message and out["d"][0].remediation
    assert all(f.severity == "pass" for n in "abc" for f in out[n])


def test_peer_rule_widens_with_the_peers_own_spread():
    # a loaded machine: healthy nodes spread by 2x; a node at the low end of that spread is not blamed
    figs = {n: {"cpu_memcopy_gbps": v} for n, v in zip("abcde", (6.0, 3.0, 5.0, 4.0, 2.6))}
    assert all(f.severity == "pass" for fs in J.judge_peers(figs, TH).values() for f in fs)
    figs["e"] = {"cpu_memcopy_gbps": 0.2}
    assert J.judge_peers(figs, TH)["e"][0].severity == "fail"


def test_two_nodes_give_no_peer_verdict():
    assert J.peer_stats([1.0, 10.0], 0.15, 3.0) is None


# ---------------------------------------------------------------------------- cloud limits and baseline


def test_cloud_cap_and_private_network():
    th = J.Thresholds(volume_cap_mibps=128)
    figs = {"a": {"volume_seqwrite_mibps": 127.0}, "b": {"volume_seqwrite_mibps": 60.0}}
    out = J.judge_cloud(figs, th, {"a": "10.0.0.1", "b": "34.90.1.2"})
    sev = {(n, f.check): f.severity for n, fs in out.items() for f in fs}
    assert sev[("a", "cloud.volume_seqwrite_mibps")] == "pass"
    assert sev[("b", "cloud.volume_seqwrite_mibps")] == "fail"
    assert sev[("a", "cloud.private_network")] == "pass" and sev[("b", "cloud.private_network")] == "fail"
    assert all(f.reference == "cloud" for fs in out.values() for f in fs)


def test_baseline_compares_the_same_node_or_the_baseline_median():
    base = {"a": {"cpu_gemm_gflops": 100.0}, "b": {"cpu_gemm_gflops": 110.0}}
    figs = {"a": {"cpu_gemm_gflops": 85.0}, "new": {"cpu_gemm_gflops": 104.0}}
    out = J.judge_baseline(figs, base, J.Thresholds(baseline=0.10))
    assert out["a"][0].severity == "fail" and "-15% against this node's 100" in out["a"][0].message
    assert out["new"][0].severity == "pass" and "the baseline median 105" in out["new"][0].message


# ---------------------------------------------------------------------------- localization


def test_slow_node_is_the_one_common_to_the_slow_pairs_after_the_second_pass():
    nodes = ["n1", "n2", "n3", "n4"]
    ring = [pair("n1", "n2", 8.0), pair("n2", "n3", 0.04), pair("n3", "n4", 0.04), pair("n4", "n1", 7.0)]
    j = localize.judge_pairs(ring, TH)
    assert j.slow == [("n2", "n3"), ("n3", "n4")] and j.reference == "n1"
    assert localize.retest_pairs(j) == [
        ("n2", "n1"),
        ("n1", "n2"),
        ("n3", "n1"),
        ("n1", "n3"),
        ("n4", "n1"),
        ("n1", "n4"),
    ]
    retests = [
        pair("n2", "n1", 7.5),
        pair("n1", "n2", 7.9),
        pair("n3", "n1", 0.04),
        pair("n1", "n3", 0.04),
        pair("n4", "n1", 8.1),
        pair("n1", "n4", 7.7),
    ]
    assert localize.remeasure_pairs(j, retests) == []  # n3 is still slow: no link to measure again
    out = localize.attribute(nodes, ring, retests, j, TH)
    assert [f.check for f in out["n3"]] == ["net.node"] and out["n3"][0].severity == "fail"
    assert "n2->n3 0.04 Gbit/s" in out["n3"][0].message and "again with n1" in out["n3"][0].message
    for innocent in ("n1", "n2", "n4"):
        assert [f.severity for f in out[innocent]] == ["pass"], out[innocent]


def test_a_bad_partner_never_fails_a_healthy_node_and_a_slow_link_names_both_ends():
    nodes = ["n1", "n2", "n3", "n4"]
    ring = [pair("n1", "n2", 0.04), pair("n2", "n3", 8.0), pair("n3", "n4", 7.5), pair("n4", "n1", 7.0)]
    j = localize.judge_pairs(ring, TH)
    assert j.suspects == ["n1", "n2"] and j.reference in ("n3", "n4")
    ref = j.reference
    retests = [pair(s, ref, 7.0) for s in ("n1", "n2")] + [pair(ref, s, 7.2) for s in ("n1", "n2")]
    out = localize.attribute(nodes, ring, retests, j, TH)
    assert [f.check for f in out["n1"]] == ["net.link"] and "link to n2" in out["n1"][0].message
    assert [f.check for f in out["n2"]] == ["net.link"] and "link to n1" in out["n2"][0].message
    assert all(f.severity == "pass" for n in ("n3", "n4") for f in out[n])
    # both ends cleared: the slow pair is measured once more; slow again, both ends fail with both figures
    assert localize.remeasure_pairs(j, retests) == [("n1", "n2")]
    out = localize.attribute(nodes, ring, [*retests, pair("n1", "n2", 0.05)], j, TH)
    assert [f.check for f in out["n1"]] == ["net.link"] and "again n1->n2 0.05" in out["n1"][0].message


def test_a_pair_slow_once_and_fast_when_measured_again_fails_nobody():
    nodes = ["n1", "n2", "n3", "n4"]
    ring = [pair("n1", "n2", 31.5), pair("n2", "n3", 21.0), pair("n3", "n4", 32.5), pair("n4", "n1", 33.0)]
    j = localize.judge_pairs(ring, TH)
    assert j.slow == [("n2", "n3")]
    retests = [pair(s, j.reference, 33.0) for s in j.suspects] + [pair(j.reference, s, 33.5) for s in j.suspects]
    assert localize.remeasure_pairs(j, retests) == [("n2", "n3")]
    out = localize.attribute(nodes, ring, [*retests, pair("n2", "n3", 32.0)], j, TH)
    assert all(f.severity == "pass" for n in nodes for f in out[n]), out


def test_a_failed_pair_is_retested_and_without_a_good_node_nobody_is_blamed_blindly():
    two = [pair("a", "b", None, error="receiver on b: connection refused"), pair("b", "a", 5.0)]
    j = localize.judge_pairs(two, TH)
    assert j.slow == [("a", "b")] and j.reference is None
    out = localize.attribute(["a", "b"], two, [], j, TH)
    assert {f.check for n in "ab" for f in out[n]} == {"net.unlocalized"}
    assert all(f.severity == "warn" for n in "ab" for f in out[n])


def test_bisection_names_the_slow_node():
    bad = "n6"

    def measure(group):
        return 0.01 if bad in group else 1.0

    b = localize.bisect([f"n{i}" for i in range(1, 9)], measure, lambda x: x is None or x < 0.5)
    assert b.culprits == [bad]
    groups = [g for g, _ in b.runs]
    assert groups[:2] == [["n1", "n2", "n3", "n4"], ["n5", "n6", "n7", "n8"]]
    assert groups[2:4] == [["n5", "n6"], ["n7", "n8"]]
    assert groups[4:] == [["n5", "n1"], ["n6", "n1"]]  # the last suspects, each paired with a node of a fast half
    findings = localize.bisection_findings(b, 0.01, 0.5, "spec")
    assert list(findings) == [bad] and "bisection names this node" in findings[bad][0].message


def test_bisection_says_when_the_slowness_is_between_the_halves():
    b = localize.bisect(list("abcd"), lambda g: 0.01 if len(g) == 4 else 1.0, lambda x: x is None or x < 0.5)
    assert b.culprits == list("abcd") and "between them" in b.note


# ---------------------------------------------------------------------------- node report mapping


def test_node_benchmark_checks_become_spec_findings_and_its_peer_checks_are_dropped():
    node = {
        "host": "g1",
        "checks": [{"name": "gpu_count", "status": "fail", "value": 7, "expected": 8, "reason": "7 GPUs"}],
        "gpus": [
            {
                "index": 3,
                "speed": {"gemm_bf16": 600.0},
                "checks": [
                    {"name": "xid_events", "status": "fail", "value": [79], "expected": [], "reason": "XID 79"},
                    {"name": "peer_gemm_bf16", "status": "fail", "value": 600, "expected": 790, "reason": "peer"},
                ],
            }
        ],
        "speed": {"cpu": {"gemm_fp32_gflops": 900.0, "memcopy_gbps": 20.0}},
    }
    found = J.from_node_report(node)
    assert [(f.check, f.reference) for f in found] == [("node.gpu_count", "spec"), ("node.gpu3.xid_events", "spec")]
    assert "replace the GPU" in found[1].remediation
    assert J.node_figures(node) == {"cpu_gemm_gflops": 900.0, "cpu_memcopy_gbps": 20.0, "gpu_gemm_bf16_tflops": 600.0}


# ---------------------------------------------------------------------------- exclusion


def cluster(names=("a", "b", "c")):
    return ClusterConfig.model_validate({"nodes": [{"host": n} for n in names]})


def test_exclude_leaves_the_named_nodes_out(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {
                "schema": "corral.bench.cluster/1",
                "exclude": ["b"],
                "nodes": [{"name": "b", "findings": [{"severity": "fail", "check": "peer.cpu", "message": "slow"}]}],
            }
        )
    )
    left = exclusions(["c"], report)
    assert [i.node for i in left] == ["c", "b"]
    assert left[1].line() == f"left out: b ({report}: peer.cpu: slow)"
    assert [n.label for n in exclude_nodes(cluster(), left).nodes] == ["a"]


def test_exclude_errors_name_the_node_and_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"--exclude: node 'zz' is not in the cluster file; its nodes are: a, b, c"):
        exclude_nodes(cluster(), [LeftOut("zz", "--exclude")])
    with pytest.raises(UserError, match="every node of the cluster file is excluded"):
        exclude_nodes(cluster(), exclusions(["a", "b", "c"]))
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not a `corral bench cluster` report"):
        read_exclude_report(bad)
    with pytest.raises(UserError, match="file not found"):
        read_exclude_report(tmp_path / "missing.json")


def test_exclude_on_slurm_goes_to_sbatch():
    cfg = ClusterConfig.model_validate({"slurm": {"partition": "debug"}})
    out = exclude_nodes(cfg, exclusions(["sn2", "sn3"]))
    assert out.slurm.sbatch_args[-1] == "--exclude=sn2,sn3"


def test_gpu_nodes_are_held_to_the_providers_failure_lines():
    from benchmarks.cluster import run as runner

    def h100_node(host, h2d):
        gpus = [{"index": i, "name": "NVIDIA H100 80GB HBM3", "speed": {"h2d": h2d}, "checks": []} for i in range(8)]
        return {"host": host, "gpus": gpus, "checks": [], "speed": {}}

    rec = runner.Recorded(node_reports=[h100_node("g1", 54.0), h100_node("g2", 31.0)])
    rec.node_allreduce = {"g1": {"busbw_gbps": 470.0}, "g2": {"busbw_gbps": 300.0}}
    figs = runner.figures_of(rec)
    out = runner._expectation_findings(rec, figs)
    sev = {(n, f.check): f.severity for n, fs in out.items() for f in fs}
    assert sev == {
        ("g1", "spec.gpu_h2d_gbps"): "pass",
        ("g1", "spec.node_allreduce_busbw_gbps"): "pass",
        ("g2", "spec.gpu_h2d_gbps"): "fail",
        ("g2", "spec.node_allreduce_busbw_gbps"): "fail",
    }
    assert "Azure HPC node health checks" in out["g2"][1].message and "460" in out["g2"][1].message


def test_assess_with_a_baseline_fails_the_regressed_node_only(tmp_path):
    from benchmarks.cluster import run as runner
    from benchmarks.cluster.report import BASELINE_SCHEMA
    from launcher.cli.bench_cluster import _read_baseline

    def cpu_node(host, gemm):
        return {
            "host": host,
            "gpus": [],
            "checks": [],
            "speed": {"cpu": {"gemm_fp32_gflops": gemm, "memcopy_gbps": 5.0}},
        }

    cl = ClusterConfig.model_validate({"nodes": [{"host": h, "addr": f"10.0.0.{i}"} for i, h in enumerate("abc", 1)]})
    rec = runner.Recorded(node_reports=[cpu_node("a", 100.0), cpu_node("b", 70.0), cpu_node("c", 101.0)])
    saved = tmp_path / "base.json"
    saved.write_text(json.dumps({"schema": BASELINE_SCHEMA, "figures": {n: {"cpu_gemm_gflops": 100.0} for n in "abc"}}))
    verdicts, figs = runner.assess(cl, rec, J.Thresholds(peer=0.5), J.baseline_figures(_read_baseline(saved)))
    by = {v.name: v for v in verdicts}
    assert [f.check for f in by["b"].findings] == ["baseline.cpu_gemm_gflops"] and by["b"].verdict == "fail"
    assert by["a"].verdict == by["c"].verdict == "pass"
    assert figs["b"] == {"cpu_gemm_gflops": 70.0, "cpu_memcopy_gbps": 5.0}
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "other"}')
    with pytest.raises(UserError, match="not a `corral bench cluster` report or baseline"):
        _read_baseline(bad)


def test_this_machine_alone_is_not_failed_by_the_private_network_rule():
    from benchmarks.cluster import run as runner

    local = ClusterConfig.model_validate({"nodes": [{"host": "localhost"}]})
    verdicts, _ = runner.assess(local, runner.Recorded(), J.Thresholds(), None)
    assert [(v.verdict, v.findings) for v in verdicts] == [("pass", [])]
    public = ClusterConfig.model_validate({"nodes": [{"host": "a", "addr": "34.90.1.2"}]})
    verdicts, _ = runner.assess(public, runner.Recorded(), J.Thresholds(), None)
    assert [f.check for f in verdicts[0].findings] == ["cloud.private_network"] and verdicts[0].verdict == "fail"


def test_burn_in_warns_when_a_node_slows_under_sustained_load_and_keeps_health_failures():
    from benchmarks.cluster import run as runner

    def rnd(gemm_b, xid=False):
        nodes = []
        for host, gemm in (("a", 100.0), ("b", gemm_b)):
            checks = [{"name": "xid_events", "status": "fail", "value": [79], "expected": [], "reason": "XID 79"}]
            gpus = [{"index": 0, "checks": checks if (xid and host == "b") else [], "speed": {}}]
            nodes.append({"host": host, "gpus": gpus, "checks": [], "speed": {"cpu": {"gemm_fp32_gflops": gemm}}})
        return nodes

    rec = runner.Recorded(burn=[rnd(100.0), rnd(95.0), rnd(60.0, xid=True)])
    out = runner._burn_findings(rec, J.Thresholds())
    sev = {f.check: f.severity for f in out["b"]}
    assert sev["burn.node.gpu0.xid_events"] == "fail" and sev["burn.cpu_gemm_gflops"] == "warn"
    assert {f.check: f.severity for f in out["a"]} == {"burn.cpu_gemm_gflops": "pass"}
    assert (
        "100 -> 60 GFLOP/s from the first to the last of 3 rounds"
        in [f for f in out["b"] if f.check == "burn.cpu_gemm_gflops"][0].message
    )


def test_a_bisection_out_of_time_blames_only_what_it_measured():
    def measure(group):
        if len(group) == 2 and "n4" in group and "n1" in group:
            raise localize.OutOfTime()
        return 0.01 if "n3" in group else 1.0

    b = localize.bisect(["n1", "n2", "n3", "n4"], measure, lambda x: x is None or x < 0.5)
    assert b.culprits == ["n3"] and "not measured (budget spent): n4" in b.note

    def broke(group):
        raise localize.OutOfTime()

    b = localize.bisect(["n1", "n2", "n3", "n4"], broke, lambda x: True)
    assert b.culprits == [] and "budget spent" in b.note
    found = localize.bisection_findings(b, 0.004, 0.02, "spec", ["n1", "n2"])
    assert {n: [f.severity for f in fs] for n, fs in found.items()} == {"n1": ["warn"], "n2": ["warn"]}


def test_a_step_whose_second_pass_did_not_fit_is_complete_and_says_which_nodes_rest_on_one_measurement(monkeypatch):
    """Completeness is what each step says of itself (what it fell short of), never read back from its note."""
    from benchmarks.cluster import run as R
    from benchmarks.cluster.levels import ClusterPlan, StepPlan

    skipped = R.SECOND_PASS_SKIPPED.format(nodes="n2", step="node")
    assert "--step-budget node=SECONDS" in skipped
    ends = {
        "node": R.StepEnd.of(remarks=skipped),
        "net": R.StepEnd.of(["budget spent", ""], skipped),
        "volume": R.StepEnd.of("", ["n4: second measurement failed, judged on the first"]),
        "burn": R.StepEnd.of("no probe from n3 (judged on nothing)"),  # the words do not decide
    }
    for name, end in ends.items():
        monkeypatch.setattr(R, f"step_{name}", lambda *a, end=end, **k: end)
    plan = ClusterPlan("quick", ("n1", "n2"), False, tuple(StepPlan(n, n, 60.0) for n in ends))
    steps = {s.name: s for s in R.run_plan(plan, cluster=None, th=None).steps}
    assert steps["node"].complete and steps["node"].note == skipped
    assert not steps["net"].complete and steps["net"].note == f"budget spent; {skipped}"
    assert steps["volume"].complete and "judged on the first" in steps["volume"].note
    assert not steps["burn"].complete


def test_a_second_pass_that_gave_a_node_no_figures_says_that_node_rests_on_one_measurement():
    """The second probe of a node held to a few percent of a core can outlast the step's budget: its first
    figures stand, and the step's note names it, as when no second pass fitted at all."""
    from benchmarks.cluster import run as R

    remark = R._one_measurement(["n2", "n4"], {"n4": {}}, "node")
    assert remark.startswith("n2: below the peers' floor, judged on one measurement") and "n4" not in remark
    assert "--step-budget node=SECONDS" in remark
    assert R._one_measurement(["n2"], {"n2": {}}, "volume") == ""


def test_a_node_far_below_its_peers_is_judged_without_a_second_pass(monkeypatch):
    """A figure under half its peers' floor is not a moment of contention: only the nodes near the floor are
    measured again, and the step says which nodes rest on one measurement and why."""
    from benchmarks.cluster import run as R
    from benchmarks.cluster.judge import Thresholds

    th = Thresholds(peer=0.15)
    healthy = {f"n{i}": {"cpu_gemm_gflops": 100.0 + i} for i in range(1, 5)}
    figs = {**healthy, "near": {"cpu_gemm_gflops": 70.0}, "starved": {"cpu_gemm_gflops": 5.0}}
    assert R._below_peers(figs, th) == (["near"], ["starved"])

    probed: list[list[str]] = []

    def probe_cluster(cluster, **kw):
        probed.append([n.label for n in cluster.nodes])
        return []  # the second probe gave nothing: the first figures stand

    from benchmarks.node import run as node_run

    monkeypatch.setattr(node_run, "probe_cluster", probe_cluster)
    monkeypatch.setattr(node_run, "judge_probes", lambda probes, expected: [])
    monkeypatch.setattr(R.J, "node_figures", lambda r: r["figs"])
    monkeypatch.setattr(
        R, "_subcluster", lambda cluster, group: SimpleNamespace(nodes=[SimpleNamespace(label=g) for g in group])
    )
    rec = R.Recorded(node_reports=[{"host": n, "figs": f} for n, f in figs.items()])
    remark = R._second_node_pass(None, rec, lambda s: None, th, R.BudgetClock(600), {n: 0 for n in figs})
    assert probed == [["near"]]
    assert "starved: under half the peers' floor, judged on one measurement" in remark
    assert remark.startswith("near: below the peers' floor, judged on one measurement")  # its second gave nothing

    only_far = {**healthy, "starved": {"cpu_gemm_gflops": 5.0}}
    rec = R.Recorded(node_reports=[{"host": n, "figs": f} for n, f in only_far.items()])
    probed.clear()
    remark = R._second_node_pass(None, rec, lambda s: None, th, R.BudgetClock(600), {n: 0 for n in only_far})
    assert probed == [] and remark == R.SECOND_PASS_FAR.format(nodes="starved")

"""``corral bench cluster``, the executing half: the plan's steps one after another over the same nodes.

Every step calls an existing benchmark's own code (``benchmarks.node.run.probe_cluster``,
``benchmarks.net.run.measure_pair``, ``benchmarks.allreduce.run.run``, ``benchmarks.volume.cluster``), which
go through ``launcher.api`` (``run_to_completion``, ``run_on_node``) like any job: there is no second copy of
a benchmark here, only the order, the budgets, the second passes (network re-tests, all-reduce bisection)
and the bookkeeping. Judging happens afterwards, on what was recorded (``assess``).

A step that runs out of its budget is stopped (``run_to_completion`` stops the job on every node) and
recorded as incomplete. Ctrl-C stops the current step the same way, skips the rest and raises
``Interrupted`` carrying what was measured so far, so the CLI can still write a (partial) report.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.cluster import judge as J
from benchmarks.cluster import localize
from benchmarks.cluster.levels import ClusterPlan, StepPlan
from launcher import aio
from launcher.errors import RunFailed, UserError

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass
class StepRecord:
    name: str
    what: str
    budget_s: float
    duration_s: float | None = None
    complete: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recorded:
    """Everything the steps measured, as plain data (what ``assess`` judges and report.json keeps)."""

    steps: list[StepRecord] = field(default_factory=list)
    node_reports: list[dict[str, Any]] = field(default_factory=list)
    net: dict[str, Any] | None = None
    allreduce: dict[str, Any] | None = None
    node_allreduce: dict[str, dict[str, Any]] = field(default_factory=dict)
    volume: dict[str, Any] | None = None
    burn: list[list[dict[str, Any]]] = field(default_factory=list)
    missing: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per step, per node: why that node has no result."""
    interrupted: bool = False


class Interrupted(Exception):
    """Ctrl-C during a step: the step was stopped on every node; ``recorded`` holds what came before."""

    def __init__(self, recorded: Recorded) -> None:
        super().__init__("interrupted")
        self.recorded = recorded


BUDGET_SPENT = "budget spent before most nodes had a result (more time: --step-budget {step}=SECONDS)"
"""A step's note when most nodes did not finish in time: nobody is failed for it, the step is incomplete."""


def _few(missing: int, nodes: int) -> bool:
    """When a step's budget ran out: fewer than half the nodes without a result are the slow ones, judged
    against the peers that finished; half or more means the step as a whole ran out of time."""
    return 2 * missing < nodes


class BudgetClock:
    """Seconds left in a step's budget."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class StepEnd:
    """How a step ended: what kept it from measuring everything it was for (``short``: the step is incomplete)
    and what a reader of the report should know beside the figures (``remarks``: how a node was judged, why a
    step was skipped). Its note is both, in that order."""

    short: list[str] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, short: str | list[str] = "", remarks: str | list[str] = "") -> StepEnd:
        """From notes where "" means none."""
        return cls(_notes(short), _notes(remarks))

    @property
    def complete(self) -> bool:
        return not self.short

    @property
    def note(self) -> str:
        return "; ".join(self.short + self.remarks)


def _notes(given: str | list[str]) -> list[str]:
    return [n for n in ([given] if isinstance(given, str) else given) if n]


def _job_name(step: str) -> str:
    import secrets

    return f"bench-cluster-{step}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------------------- steps


def step_node(cluster, step: StepPlan, rec: Recorded, say: Say, th: J.Thresholds) -> StepEnd:
    from benchmarks.node import run as node_run

    expected = {n.label: n.gpus for n in cluster.nodes}
    clock = BudgetClock(step.budget_s)
    probes = node_run.probe_cluster(cluster, name=_job_name("node"), quick=False, timeout=clock.left())
    missing = {p["host"]: p["reason"] for p in probes if p.get("format") == "missing"}
    if clock.left() <= 0 and not _few(len(missing), len(probes)):
        return StepEnd.of(BUDGET_SPENT.format(step=step.name))  # says nothing about any one node: none is failed
    rec.node_reports = node_run.judge_probes(probes, expected)
    remark = _second_node_pass(cluster, rec, say, th, clock, expected)
    short = ["budget spent" if clock.left() <= 0 else "", f"no probe from {', '.join(missing)}" if missing else ""]
    return StepEnd.of(short, remark)


SECOND_PASS_SKIPPED = "{nodes}: below the peers' floor, judged on one measurement (no budget left for a second: --step-budget {step}=SECONDS)"
"""A step's remark when its second pass did not fit. Every node was measured, so the step is complete."""
SECOND_PASS_SHORT = "{nodes}: below the peers' floor, judged on one measurement (the second gave no figures within the budget: --step-budget {step}=SECONDS)"
"""A step's remark when its second pass ran but left some nodes without new figures: the first ones stand."""


def _join(*remarks: str) -> str:
    return "; ".join(r for r in remarks if r)


def _one_measurement(low: list[str], fresh, step: str) -> str:
    """The remark for the nodes of ``low`` that the second pass gave no new figures, or ""."""
    left = [n for n in low if n not in fresh]
    return SECOND_PASS_SHORT.format(nodes=", ".join(left), step=step) if left else ""


SECOND_PASS_FAR = "{nodes}: under half the peers' floor, judged on one measurement (a second would not change it)"
"""A step's remark for the nodes too far below their peers to measure again."""
FAR_BELOW = 0.5
"""A figure under this share of its peers' floor is not one unlucky sample: it is judged without a second pass.
The contention that second passes guard against left a healthy simulated node's volume read at 0.65 of its
floor or above at the default threshold (docs/results/bench-cluster.md); a starved CPU or a capped volume is far lower."""


def _below_peers(figs: dict[str, dict[str, float]], th: J.Thresholds) -> tuple[list[str], list[str]]:
    """The nodes below their peers' floor on any of ``figs``: those near it, which a second pass measures again,
    and those under ``FAR_BELOW`` of the floor on some figure, judged at once."""
    near, far = [], []
    for node, found in J.judge_peers(figs, th).items():
        fails = [f for f in found if f.severity == J.FAIL]
        if any(f.value is not None and f.expected and f.value < FAR_BELOW * f.expected for f in fails):
            far.append(node)
        elif fails:
            near.append(node)
    return near, far


def _far_remark(far: list[str]) -> str:
    return SECOND_PASS_FAR.format(nodes=", ".join(far)) if far else ""


def _second_node_pass(cluster, rec: Recorded, say: Say, th: J.Thresholds, clock: BudgetClock, expected) -> str:
    """A remark, or "". A node below its peers' floor is probed once more before it is judged, as the network step re-tests a
    slow pair: a moment of contention on a shared host is not a slow node, a slow node is slow again. The
    second figures replace the first, which the entry keeps under ``first_pass``."""
    from benchmarks.node import run as node_run

    figs = {r["host"]: J.node_figures(r) for r in rec.node_reports}
    low, far = _below_peers(figs, th)

    def probe_again() -> str:
        if not low:
            return ""
        if clock.left() < 30:
            return SECOND_PASS_SKIPPED.format(nodes=", ".join(low), step="node")
        say(f"node: probing again {', '.join(low)} (below the peers' floor)")
        again = node_run.probe_cluster(
            _subcluster(cluster, low), name=_job_name("node"), quick=False, timeout=clock.left()
        )
        fresh = {
            r["host"]: r
            for r in node_run.judge_probes(again, {n: expected[n] for n in low})
            if J.node_figures(r)  # a probe that failed again leaves the first figures in place
        }
        rec.node_reports = [
            {**fresh[r["host"]], "first_pass": figs[r["host"]]} if r["host"] in fresh else r for r in rec.node_reports
        ]
        return _one_measurement(low, fresh, "node")

    return _join(probe_again(), _far_remark(far))


def _pair_plan(eps, src: str, dst: str, pythons: dict[str, str], duration: float):
    from benchmarks.net import plan as net

    addr = {e.name: e.addr for e in eps}[dst]
    return net.PairPlan(
        src,
        dst,
        addr,
        net.recv_argv(pythons[dst], addr, 0, duration=duration, interval=1.0),
        net.send_argv(pythons[src], addr, 0, duration=duration),
    )


def _private_endpoints(cluster):
    """The nodes with a private address (the cloud reference fails the others; they are not measured)."""
    import ipaddress

    from benchmarks.net import plan as net

    return [net.Endpoint(n.label, n.addr) for n in cluster.nodes if n.addr and ipaddress.IPv4Address(n.addr).is_private]


def step_net(cluster, step: StepPlan, rec: Recorded, say: Say, th: J.Thresholds) -> StepEnd:
    from benchmarks.net import plan as net
    from benchmarks.net import run as bn
    from launcher import api

    if api.capabilities(cluster).places_nodes:
        return _net_in_allocation(cluster, step, rec, say)
    eps = _private_endpoints(cluster)
    if len(eps) < 2:
        rec.net = {"skipped": "fewer than two nodes with a private address"}
        return StepEnd.of(remarks="skipped: fewer than two nodes with a private address")
    clock = BudgetClock(step.budget_s)
    duration = step.params["duration_s"]
    pythons = {n.label: bn.python_for(cluster, n) for n in cluster.nodes}
    plans = net.build_plan(eps, step.params["pairs"], python=pythons, duration=duration)
    rng = random.Random()
    pairs: list[dict[str, Any]] = []
    note = ""
    for i, p in enumerate(plans, 1):
        if clock.left() < duration + 5:
            note = f"budget spent after {len(pairs)} of {len(plans)} pairs"
            break
        pairs.append(aio.run(bn.measure_pair(cluster, p, duration, rng)))
        say(f"net: pair {i}/{len(plans)} {p.src}->{p.dst} {_show_gbps(pairs[-1])}")
    judgement = localize.judge_pairs(pairs, th)
    retests: list[dict[str, Any]] = []

    def second_pass(todo: list[tuple[str, str]], what: str) -> bool:
        """Measure ``todo`` into ``retests``; False when the budget ran out first."""
        for src, dst in todo:
            if clock.left() < duration + 5:
                return False
            retests.append(
                aio.run(bn.measure_pair(cluster, _pair_plan(eps, src, dst, pythons, duration), duration, rng))
            )
            say(f"net: {what} {src}->{dst} {_show_gbps(retests[-1])}")
        return True

    # each suspect with a good node; then the slow pairs whose two ends were both cleared, once more
    if not (
        second_pass(localize.retest_pairs(judgement), "re-test")
        and second_pass(localize.remeasure_pairs(judgement, retests), "again")
    ):
        note = note or "budget spent during the second pass"
    rec.net = {**net.build_result(eps, step.params["pairs"], duration, pairs), "retests": retests}
    return StepEnd.of(note)


ALLOCATION_NET_NOTE = "no second pass: on Slurm another job may get other nodes"


def _net_in_allocation(cluster, step: StepPlan, rec: Recorded, say: Say) -> StepEnd:
    """The pairs measured by one job on the allocation, where the scheduler places the nodes: the cluster file
    names none, so only a job inside the allocation knows their addresses (``benchmarks.net.allocation``).
    A slow pair is not re-tested with a good node: a second job may be placed on other nodes."""
    from benchmarks.net import run as bn
    from launcher.errors import RunFailed

    clock = BudgetClock(step.budget_s)
    duration = step.params["duration_s"]
    try:
        result = bn.run_in_allocation(
            cluster, pairs=step.params["pairs"], duration=duration, timeout=clock.left(), say=say
        )
    except RunFailed as exc:
        rec.net = {"error": str(exc), "pairs": []}
        return StepEnd.of("budget spent" if clock.left() <= 0 else f"failed: {str(exc).splitlines()[0]}")
    for p in result["pairs"]:
        say(f"net: {p['src']}->{p['dst']} {_show_gbps(p)}")
    rec.net = {**result, "retests": []}
    return StepEnd.of(remarks=ALLOCATION_NET_NOTE)


def _show_gbps(p: dict[str, Any]) -> str:
    return f"{p['gbps']:.3g} Gbit/s" if p.get("gbps") is not None else f"failed: {str(p.get('error'))[:80]}"


def _ar_request(cluster, step: StepPlan):
    from benchmarks.allreduce import run as ar

    gpus = any(n.gpus for n in cluster.nodes)
    return ar.validate(
        cluster,
        min_bytes=step.params["min_bytes"],
        max_bytes=step.params["max_bytes"],
        factor=step.params["factor"],
        iters=step.params["iters"],
        warmup=step.params["warmup"],
        dtype="float",
        op="sum",
        backend="auto",
        # one process per CPU node: the figure is the network's, and CPU nodes have no GPUs to give ranks
        nproc_per_node=None if gpus else 1,
    )


def _ar_busbw(cluster, req, timeout: float) -> tuple[float | None, dict[str, Any] | None, str]:
    """One all-reduce run: its judged figure (busbw at the largest size, ``maths.large_message_busbw``), the
    benchmark's result, and why it failed (empty when it did not)."""
    from benchmarks.allreduce import maths
    from benchmarks.allreduce import run as ar

    try:
        result = ar.run(req, cluster, timeout=max(timeout, 30.0), name=_job_name("allreduce"))
    except RunFailed as exc:
        return None, None, str(exc).splitlines()[0]
    large = maths.large_message_busbw(result.get("rows") or [])
    if large is None:
        return None, result, "the all-reduce measured no sizes"
    return large[0], result, ""


def _busbw_line(result: dict[str, Any]) -> str:
    """The judged figure with its size, and the peak over sizes beside it, for the progress lines."""
    from benchmarks.allreduce import maths
    from launcher.units import format_size

    large = maths.large_message_busbw(result["rows"])
    assert large is not None  # a run with a judged figure measured sizes
    busbw, top = large
    return f"busbw {busbw:.3g} GB/s at {format_size(top)} (peak {result['peak_busbw_gbps']:.3g})"


def _subcluster(cluster, group: list[str]):
    keep = set(group)
    return cluster.model_copy(update={"nodes": [n for n in cluster.nodes if n.label in keep]})


def allreduce_floor(th: J.Thresholds, baseline_busbw: float | None) -> tuple[float | None, str]:
    """The bus bandwidth below which the all-node all-reduce is slow, and the reference it comes from."""
    if th.min_busbw_gbps is not None:
        return th.min_busbw_gbps, "spec"
    if baseline_busbw:
        return baseline_busbw * (1 - th.baseline), "baseline"
    return None, ""


def step_allreduce(
    cluster, step: StepPlan, rec: Recorded, say: Say, th: J.Thresholds, baseline_busbw: float | None
) -> StepEnd:
    clock = BudgetClock(step.budget_s)
    req = _ar_request(cluster, step)
    busbw, result, error = _ar_busbw(cluster, req, clock.left())
    rec.allreduce = dict(result or {"error": error})
    rec.allreduce["busbw_gbps"] = busbw  # the judged figure: the largest size's, not the peak over sizes
    say(
        f"allreduce: all {len(cluster.nodes)} nodes: "
        + (_busbw_line(result) if busbw is not None and result else error)
    )
    floor, reference = allreduce_floor(th, baseline_busbw)
    slow = busbw is None or (floor is not None and busbw < floor)
    if not slow or len(cluster.nodes) < 2 or not cluster.nodes:
        return StepEnd.of("" if busbw is not None else f"failed: {error}")

    def measure(group: list[str]) -> float | None:
        from launcher.errors import PreflightFailed

        for attempt in (1, 2):
            left = clock.left()
            if left < 60:
                raise localize.OutOfTime()
            try:
                got, result, why = _ar_busbw(_subcluster(cluster, group), req, left)
                break
            except PreflightFailed as exc:  # refused before anything ran: says nothing about speed
                say(f"allreduce: bisect [{', '.join(group)}]: launch refused (attempt {attempt}): {exc}")
                if attempt == 2:
                    raise localize.OutOfTime() from None
                time.sleep(5)
        say(f"allreduce: bisect [{', '.join(group)}]: " + (_busbw_line(result) if got is not None and result else why))
        return got

    names = [n.label for n in cluster.nodes]
    b = localize.bisect(names, measure, lambda x: x is None or (floor is not None and x < floor))
    rec.allreduce["bisection"] = b.to_dict()
    rec.allreduce["floor_gbps"] = floor
    rec.allreduce["floor_reference"] = reference or "run"
    return StepEnd.of("" if clock.left() > 0 else "budget spent during the bisection")


def step_node_allreduce(cluster, step: StepPlan, rec: Recorded, say: Say) -> StepEnd:
    clock = BudgetClock(step.budget_s)
    req = _ar_request(cluster, step)
    for n in cluster.nodes:
        if clock.left() < 30:
            return StepEnd.of("budget spent before every node was measured")
        busbw, result, error = _ar_busbw(_subcluster(cluster, [n.label]), req, clock.left())
        rec.node_allreduce[n.label] = {"busbw_gbps": busbw, "error": error or None}
        say(f"node_allreduce: {n.label}: " + (_busbw_line(result) if busbw is not None and result else error))
    return StepEnd()


def step_volume(cluster, step: StepPlan, rec: Recorded, say: Say, th: J.Thresholds) -> StepEnd:
    from benchmarks.volume.cluster import run_on_cluster
    from benchmarks.volume.plan import build_plan

    p = step.params
    vplan = build_plan(
        p["path"], size=p["size"], modes=p["modes"], duration_s=p["duration_s"], limit_mibps=th.volume_cap_mibps
    )
    clock = BudgetClock(step.budget_s)
    try:
        rec.volume = run_on_cluster(vplan, cluster, timeout_s=clock.left())
        again = _second_volume_pass(cluster, vplan, rec, say, th, clock, step.budget_s - clock.left())
    except RunFailed as exc:
        if clock.left() <= 0:
            # no node finished within the budget: that says nothing about any one node, so none is failed
            rec.volume = {"error": str(exc), "results": [], "failed_nodes": []}
            return StepEnd.of(BUDGET_SPENT.format(step=step.name))
        rec.volume = {"error": str(exc), "results": [], "failed_nodes": [f"{n.label}: {exc}" for n in cluster.nodes]}
    failed = rec.volume.get("failed_nodes") or []
    if failed and clock.left() <= 0 and not _few(len(failed), len(cluster.nodes)):
        return StepEnd.of(BUDGET_SPENT.format(step=step.name))
    # a node still running when most of its peers had finished and the budget was spent is the slow one: it fails
    rec.missing["volume"] = {f.split(":", 1)[0]: f.split(":", 1)[1].strip() for f in failed}
    short = ["budget spent" if clock.left() <= 0 else "", f"no result from {len(failed)} node(s)" if failed else ""]
    return StepEnd.of(short, again)


def _second_volume_pass(
    cluster, vplan, rec: Recorded, say: Say, th: J.Thresholds, clock: BudgetClock, took: float
) -> str:
    """A remark, or "". A node below its peers' floor on a volume figure is measured once more (those nodes only, as the node step
    probes again) when the budget still holds a run as long as the first: every node at once on a shared
    storage backend (or, here, one host disk) is contention, and a capped volume is capped again. The second
    figures replace the first, which ``first_pass`` keeps per node."""
    from benchmarks.volume import report as volume_report
    from benchmarks.volume.cluster import run_on_cluster

    figs = J.volume_figures(rec.volume)
    low, far = _below_peers(figs, th)

    def measure_again() -> str:
        if not low:
            return ""
        if clock.left() < took:
            return SECOND_PASS_SKIPPED.format(nodes=", ".join(low), step="volume")
        say(f"volume: measuring again {', '.join(low)} (below the peers' floor)")
        try:
            again = run_on_cluster(vplan, cluster, nodes=low, timeout_s=clock.left())
        except RunFailed as exc:  # the first figures stand
            say(f"volume: second pass failed: {str(exc).splitlines()[0]}")
            return f"{', '.join(low)}: second measurement failed, judged on the first"
        fresh = {r["node"] for r in again["results"]}
        assert rec.volume is not None
        rec.volume["results"] = [r for r in rec.volume["results"] if r["node"] not in fresh] + again["results"]
        rec.volume["aggregate"] = volume_report.aggregate(rec.volume["results"], vplan.limit_mibps)
        rec.volume["first_pass"] = {n: figs[n] for n in low if n in fresh}
        rec.volume["second_pass_run_dir"] = again["run_dir"]
        return _one_measurement(low, fresh, "volume")

    return _join(measure_again(), _far_remark(far))


def step_burn(cluster, step: StepPlan, rec: Recorded, say: Say) -> StepEnd:
    """Rounds of the node probe (speed tests between two NVML readings) until the duration is up: a node whose
    figures fall round after round, or whose counters move (XIDs, clock events), shows it here."""
    from benchmarks.node import run as node_run

    clock = BudgetClock(step.budget_s)
    end = time.monotonic() + step.params["duration_s"]
    expected = {n.label: n.gpus for n in cluster.nodes}
    while time.monotonic() < end and clock.left() > 30:
        probes = node_run.probe_cluster(cluster, name=_job_name("burn"), quick=False, timeout=clock.left())
        rec.burn.append(node_run.judge_probes(probes, expected))
        say(f"burn: round {len(rec.burn)} done, {max(0, end - time.monotonic()):.0f}s to go")
    return StepEnd.of("" if time.monotonic() >= end else "budget spent before the duration")


def run_plan(
    plan: ClusterPlan,
    cluster,
    *,
    th: J.Thresholds,
    baseline_busbw: float | None = None,
    say: Say = lambda s: None,
    on_step: Callable[[int, StepPlan, StepRecord | None], None] = lambda i, s, r: None,
) -> Recorded:
    """Run every step in order; ``on_step(i, step, None)`` before a step, ``on_step(i, step, record)`` after."""
    rec = Recorded()
    runners = {
        "node": lambda s: step_node(cluster, s, rec, say, th),
        "net": lambda s: step_net(cluster, s, rec, say, th),
        "allreduce": lambda s: step_allreduce(cluster, s, rec, say, th, baseline_busbw),
        "node_allreduce": lambda s: step_node_allreduce(cluster, s, rec, say),
        "volume": lambda s: step_volume(cluster, s, rec, say, th),
        "burn": lambda s: step_burn(cluster, s, rec, say),
    }
    for i, step in enumerate(plan.steps):
        record = StepRecord(step.name, step.what, step.budget_s)
        rec.steps.append(record)
        on_step(i, step, None)
        t0 = time.monotonic()
        try:
            end = runners[step.name](step)
            record.complete, record.note = end.complete, end.note
        except KeyboardInterrupt:
            record.duration_s = round(time.monotonic() - t0, 1)
            record.note = "interrupted (Ctrl-C): stopped on every node"
            rec.interrupted = True
            for later in plan.steps[i + 1 :]:
                rec.steps.append(
                    StepRecord(later.name, later.what, later.budget_s, None, False, "not run (interrupted)")
                )
            raise Interrupted(rec) from None
        except (RunFailed, UserError) as exc:
            record.note = f"failed: {str(exc).splitlines()[0]}"
        record.duration_s = round(time.monotonic() - t0, 1)
        if record.duration_s > step.budget_s:
            record.complete = False
            record.note = (record.note + "; " if record.note else "") + "over its budget"
        on_step(i, step, record)
    return rec


# ---------------------------------------------------------------------------- judging what was recorded


def figures_of(rec: Recorded) -> dict[str, dict[str, float]]:
    figs: dict[str, dict[str, float]] = {}
    for node in rec.node_reports:
        figs.setdefault(node["host"], {}).update(J.node_figures(node))
    for part in (J.volume_figures(rec.volume), J.net_figures((rec.net or {}).get("pairs") or [])):
        for n, f in part.items():
            figs.setdefault(n, {}).update(f)
    for n, got in rec.node_allreduce.items():
        if got.get("busbw_gbps") is not None:
            figs.setdefault(n, {})["node_allreduce_busbw_gbps"] = got["busbw_gbps"]
    return figs


def _burn_findings(rec: Recorded, th: J.Thresholds) -> dict[str, list[J.Finding]]:
    """Health checks of every burn round, and a node whose CPU/GPU figures dropped from the first round to the last."""
    out: dict[str, list[J.Finding]] = {}
    if not rec.burn:
        return out
    for rnd in rec.burn:
        for node in rnd:
            for f in J.from_node_report(node):
                if f.severity != J.PASS:
                    f.check = "burn." + f.check
                    out.setdefault(node["host"], []).append(f)
    first = {n["host"]: J.node_figures(n) for n in rec.burn[0]}
    last = {n["host"]: J.node_figures(n) for n in rec.burn[-1]}
    for host, f in last.items():
        for key, v in f.items():
            v0 = first.get(host, {}).get(key)
            if not v0 or len(rec.burn) < 2:
                continue
            drop = 1 - v / v0
            label, unit = J.FIGURES[key]
            out.setdefault(host, []).append(
                J.Finding(
                    f"burn.{key}",
                    J.WARN if drop > th.peer else J.PASS,
                    f"{label} {J.fmt(v0)} -> {J.fmt(v)} {unit} from the first to the last of {len(rec.burn)} rounds",
                    v,
                    round(v0 * (1 - th.peer), 4),
                    "run",
                    J.REMEDIES["gpu_compute"] if drop > th.peer else "",
                    unit,
                )
            )
    return out


def _expectation_findings(rec: Recorded, figs: dict[str, dict[str, float]]) -> dict[str, list[J.Finding]]:
    """The per-node-type failure lines of ``expect.py`` (single-node all-reduce, host-to-GPU copy) for nodes whose
    GPU model and count have a row there."""
    from benchmarks.cluster.expect import expectation_for
    from benchmarks.node.specs import find_spec

    out: dict[str, list[J.Finding]] = {}
    for node in rec.node_reports:
        names = [g.get("name") for g in node.get("gpus") or []]
        spec = find_spec(names[0]) if names else None
        exp = expectation_for(spec.key if spec else None, len(names))
        if exp is None:
            continue
        host, mine = node["host"], figs.get(node["host"], {})
        lines = [("gpu_h2d_gbps", exp.h2d_gbps, "pcie")]
        if host in rec.node_allreduce:
            lines.append(("node_allreduce_busbw_gbps", exp.node_allreduce_busbw_gbps, "allreduce"))
        for key, line, remedy in lines:
            value = mine.get(key)
            low = value is None or value < line
            label, unit = J.FIGURES[key]
            out.setdefault(host, []).append(
                J.Finding(
                    f"spec.{key}",
                    J.FAIL if low else J.PASS,
                    f"{label} {J.fmt(value) if value is not None else 'not measured'} {unit}; "
                    f"{exp.source} fail a node below {J.fmt(line)}",
                    value,
                    line,
                    "spec",
                    J.REMEDIES[remedy] if low else "",
                    unit,
                )
            )
    return out


def assess(
    cluster, rec: Recorded, th: J.Thresholds, baseline: dict[str, dict[str, float]] | None
) -> tuple[list[J.NodeVerdict], dict[str, dict[str, float]]]:
    """The verdict of every node from what was recorded: pure apart from reading ``cluster``'s node list."""
    names = [n.label for n in cluster.nodes] or [n["host"] for n in rec.node_reports]
    figs = figures_of(rec)
    for n in names:
        figs.setdefault(n, {})
    parts = [
        {n["host"]: J.from_node_report(n) for n in rec.node_reports},
        J.judge_peers(figs, th),
        # the private-network rule is about how nodes reach each other: this machine itself is not judged by it
        J.judge_cloud(figs, th, {n.label: n.addr for n in cluster.nodes if not n.is_local}),
        J.missing_findings("volume", rec.missing.get("volume", {})),
        _expectation_findings(rec, figs),
        _burn_findings(rec, th),
    ]
    net = rec.net or {}
    if net.get("pairs"):
        j = localize.judge_pairs(net["pairs"], th)
        parts.append(localize.attribute(names, net["pairs"], net.get("retests") or [], j, th))
    ar = rec.allreduce or {}
    if ar.get("bisection"):
        parts.append(
            localize.bisection_findings(
                localize.Bisection(
                    [(r["nodes"], r["busbw_gbps"]) for r in ar["bisection"]["runs"]],
                    ar["bisection"]["culprits"],
                    ar["bisection"]["note"],
                ),
                ar.get("busbw_gbps"),
                ar.get("floor_gbps") or 0.0,
                ar.get("floor_reference", "run"),
                names,
            )
        )
    if baseline:
        parts.append(J.judge_baseline(figs, baseline, th))
    return J.verdicts(names, J.merge(*parts)), figs

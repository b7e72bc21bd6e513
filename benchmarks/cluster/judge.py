"""Verdicts of ``corral bench cluster``: pure functions of the recorded measurements.

Three references, and every finding names the one it used:
- ``spec``: the GPU model's table (``benchmarks.node.specs``, judged by ``benchmarks.node.judge``) and the
  per-node-type expectations of ``expect.py`` (each with its source);
- ``cloud``: the provider's documented limits (a volume's throughput cap, a private network between nodes);
- ``peers``: the cluster's own nodes: a figure more than ``threshold`` below the median of the same figure on
  the other nodes, *and* far outside their spread (median absolute deviation), is an outlier. On a new cluster
  the healthy nodes are the best reference there is, and it is the one that works without a GPU;
- ``baseline``: an earlier report's figure for the same node (or the earlier median when the node is new).

Modelled on ``launcher/backends/ssh/preflight.py`` and ``benchmarks/node/judge.py``: nothing here measures, reads a
file or asks a node, so recorded measurements are judged exactly as live ones.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, WARN, FAIL = "pass", "warn", "fail"
RANK = {PASS: 0, WARN: 1, FAIL: 2}
REFERENCES = ("spec", "cloud", "peers", "baseline", "run")

PEER_THRESHOLD = 0.15
"""A figure more than 15% below its peers' median is suspect (the issue's default; measured noise: docs/BENCH_CLUSTER.md)."""
PEER_MAD_Z = 3.0
"""... and more than 3 robust standard deviations (1.4826 x MAD of the logarithms) below it: on a noisy machine
the spread of the healthy nodes decides what "far below" means, so a node merely at the low end of a wide spread
is not blamed."""
BASELINE_THRESHOLD = 0.10
"""A figure more than 10% below the baseline's is a regression (SuperBench's rules use -5% on dedicated
hardware; shared and virtual CPUs vary more, so the default is wider; ``--baseline-threshold`` sets it)."""
CLOUD_CAP_SHARE = 0.80
"""A volume below 80% of the provider's documented cap is not getting what was paid for."""

FIGURES: dict[str, tuple[str, str]] = {
    # figure key: (what people call it, unit). Higher is better for every one of them.
    "cpu_gemm_gflops": ("CPU fp32 GEMM", "GFLOP/s"),
    "cpu_memcopy_gbps": ("CPU memory copy", "GB/s"),
    "gpu_gemm_bf16_tflops": ("GPU bf16 GEMM (slowest GPU)", "TFLOP/s"),
    "gpu_device_copy_gbps": ("GPU memory copy (slowest GPU)", "GB/s"),
    "gpu_h2d_gbps": ("host-to-GPU copy (slowest GPU)", "GB/s"),
    "volume_seqwrite_mibps": ("volume sequential write", "MiB/s"),
    "volume_seqread_mibps": ("volume sequential read", "MiB/s"),
    "volume_randread_mibps": ("volume random read", "MiB/s"),
    "volume_randwrite_mibps": ("volume random write", "MiB/s"),
    "net_tx_gbps": ("network send (median of its pairs)", "Gbit/s"),
    "net_rx_gbps": ("network receive (median of its pairs)", "Gbit/s"),
    "node_allreduce_busbw_gbps": ("all-reduce inside the node, bus bandwidth", "GB/s"),
}
PEER_FIGURES = tuple(k for k in FIGURES if not k.startswith("net_"))
"""Network figures are judged per pair and localized (``localize.py``), never per node: a slow node makes its
partners' figures low too, and a per-node peer test would blame them."""

REMEDIES: dict[str, str] = {
    "cpu": "Check the node's CPU quota, frequency scaling and neighbours; ask the provider to move the VM, or leave the node out.",
    "gpu_compute": "Check the GPU's clocks and power limit (nvidia-smi -q -d PERFORMANCE,POWER); re-seat or replace the GPU, or leave the node out.",
    "gpu_health": "Drain the node and ask the provider to replace the GPU (the counters above are the evidence).",
    "pcie": "Check the GPU's PCIe link width and generation (nvidia-smi -q -d PCIE) and its NUMA placement; re-seat the GPU.",
    "volume": "Ask the provider to move the volume or check its tier and throttling; leave the node out until it is fixed.",
    "net_node": "Check the node's link: its negotiated speed (ethtool / ibstat), errors and MTU; ask the provider to move the node, or leave it out.",
    "net_link": "Check the path between the two nodes (switch port, cable, routing); each is fast with other nodes.",
    "allreduce": "Check NCCL's transport on the named nodes (NCCL_DEBUG=INFO: IB/GPUDirect used?), their IB ports and NVLink; leave them out.",
    "private_net": "Give the node its private-network address (addr in the cluster file); training traffic must not use public addresses.",
    "missing": "Look at the node's log (path in the message); a node that cannot run a benchmark cannot run training: fix it or leave it out.",
    "baseline": "Compare the node with the baseline run's figures; find what changed (driver, firmware, placement) or leave the node out.",
    "other": "Read the message; fix the node or leave it out.",
}


@dataclass
class Finding:
    """One check of one node: the figure, what was expected, the reference that decided it, and what to do."""

    check: str
    severity: str
    message: str
    value: Any = None
    expected: Any = None
    reference: str = "peers"
    remediation: str = ""
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Thresholds:
    peer: float = PEER_THRESHOLD
    peer_mad_z: float = PEER_MAD_Z
    baseline: float = BASELINE_THRESHOLD
    volume_cap_mibps: float | None = None
    """The provider's documented volume cap (e.g. 128 MiB/s), or None when there is none to judge against."""
    min_busbw_gbps: float | None = None
    """An all-node all-reduce below this bus bandwidth is slow (and bisected)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NodeVerdict:
    name: str
    checks: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return worst(f.severity for f in self.checks)

    @property
    def findings(self) -> list[Finding]:
        return [f for f in self.checks if f.severity != PASS]


def worst(severities: Iterable[str]) -> str:
    return max(severities, key=lambda s: RANK[s], default=PASS)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt(x: float) -> str:
    """A figure as people read it: 3 significant digits, no exponent for everyday magnitudes."""
    if x == 0:
        return "0"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


# ---------------------------------------------------------------------------- the peers


@dataclass(frozen=True)
class PeerStats:
    median: float
    spread: float
    """The median absolute deviation of the logarithms: the peers' typical relative spread (0.1 = ~10%)."""
    floor: float
    """Values below this are outliers: ``median * (1 - threshold)``, lowered to ``median * exp(-z * 1.4826 *
    spread)`` when the peers themselves spread wider than the threshold."""


def peer_stats(values: list[float], threshold: float, z: float) -> PeerStats | None:
    """The robust centre and spread of a figure across nodes; None with fewer than 3 values (2 nodes cannot
    say which of them is the odd one).

    Throughputs are ratios (a node is "2x slower", not "100 MiB/s slower"), so the spread is measured on
    their logarithms: on a loaded machine one node's figure can be half another's for no fault at all,
    while a capped node is an order of magnitude off."""
    positive = [v for v in values if v > 0]
    if len(positive) < 3:
        return None
    med = statistics.median(positive)
    spread = statistics.median(abs(math.log(v / med)) for v in positive)
    floor = med * min(1 - threshold, math.exp(-z * 1.4826 * spread))
    return PeerStats(med, spread, floor)


def judge_peers(figures: dict[str, dict[str, float]], th: Thresholds) -> dict[str, list[Finding]]:
    """Per node, one finding per figure it has (``PEER_FIGURES``): fail below the peers' floor."""
    out: dict[str, list[Finding]] = {n: [] for n in figures}
    for key in PEER_FIGURES:
        members = {n: f[key] for n, f in figures.items() if _num(f.get(key))}
        stats = peer_stats(list(members.values()), th.peer, th.peer_mad_z)
        if stats is None:
            continue
        label, unit = FIGURES[key]
        for node, value in members.items():
            low = value < stats.floor
            below = 1 - value / stats.median if stats.median else 0.0
            msg = (
                f"{label} {fmt(value)} {unit} is {below:.0%} below its peers' median {fmt(stats.median)} {unit} "
                f"(outlier floor {fmt(stats.floor)})"
                if low
                else f"{label} {fmt(value)} {unit}; peers' median {fmt(stats.median)} {unit}"
            )
            out[node].append(
                Finding(
                    f"peer.{key}",
                    FAIL if low else PASS,
                    msg,
                    value,
                    round(stats.floor, 4),
                    "peers",
                    REMEDIES[remedy_for(key)] if low else "",
                    unit,
                )
            )
    return out


def remedy_for(key: str) -> str:
    for prefix, remedy in (
        ("cpu_", "cpu"),
        ("gpu_h2d", "pcie"),
        ("gpu_", "gpu_compute"),
        ("volume_", "volume"),
        ("net_", "net_node"),
        ("node_allreduce", "allreduce"),
    ):
        if key.startswith(prefix):
            return remedy
    return "other"


# ---------------------------------------------------------------------------- the cloud's documented limits


def judge_cloud(
    figures: dict[str, dict[str, float]], th: Thresholds, addresses: dict[str, str | None]
) -> dict[str, list[Finding]]:
    """The volume cap (write and read at least ``CLOUD_CAP_SHARE`` of it) and the private network requirement."""
    import ipaddress

    out: dict[str, list[Finding]] = {n: [] for n in figures}
    for node, addr in addresses.items():
        ok = bool(addr) and ipaddress.IPv4Address(addr).is_private
        out.setdefault(node, []).append(
            Finding(
                "cloud.private_network",
                PASS if ok else FAIL,
                f"private address {addr}"
                if ok
                else f"no private-network address ({addr or 'none'} in the cluster file)",
                addr,
                "a private IPv4 address",
                "cloud",
                "" if ok else REMEDIES["private_net"],
            )
        )
    cap = th.volume_cap_mibps
    if cap:
        for node, f in figures.items():
            for key in ("volume_seqwrite_mibps", "volume_seqread_mibps"):
                if not _num(f.get(key)):
                    continue
                value, floor = f[key], cap * CLOUD_CAP_SHARE
                low = value < floor
                label, unit = FIGURES[key]
                out[node].append(
                    Finding(
                        f"cloud.{key}",
                        FAIL if low else PASS,
                        f"{label} {fmt(value)} {unit} against the documented cap of {fmt(cap)} MiB/s"
                        + (f": below {CLOUD_CAP_SHARE:.0%} of it" if low else ""),
                        value,
                        floor,
                        "cloud",
                        REMEDIES["volume"] if low else "",
                        unit,
                    )
                )
    return out


# ---------------------------------------------------------------------------- the baseline


def baseline_figures(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per node figures of an earlier report.json or a ``--save-baseline`` file (same ``figures`` key)."""
    figs = doc.get("figures")
    if not isinstance(figs, dict):
        return {}
    return {n: {k: v for k, v in f.items() if _num(v)} for n, f in figs.items() if isinstance(f, dict)}


def judge_baseline(
    figures: dict[str, dict[str, float]], base: dict[str, dict[str, float]], th: Thresholds
) -> dict[str, list[Finding]]:
    """Each figure against the same node's in the baseline, or the baseline's median for a node it lacks."""
    out: dict[str, list[Finding]] = {n: [] for n in figures}
    medians = {}
    for key in FIGURES:
        vals = [f[key] for f in base.values() if _num(f.get(key))]
        if vals:
            medians[key] = statistics.median(vals)
    for node, f in figures.items():
        for key, value in f.items():
            if key not in FIGURES or not _num(value):
                continue
            ref = base.get(node, {}).get(key)
            where = "this node's"
            if not _num(ref):
                ref, where = medians.get(key), "the baseline median"
            if not _num(ref) or not ref:
                continue
            change = value / ref - 1
            low = change < -th.baseline
            label, unit = FIGURES[key]
            out[node].append(
                Finding(
                    f"baseline.{key}",
                    FAIL if low else PASS,
                    f"{label} {fmt(value)} {unit} is {change:+.0%} against {where} {fmt(ref)} {unit} in the baseline",
                    value,
                    round(ref * (1 - th.baseline), 4),
                    "baseline",
                    REMEDIES["baseline"] if low else "",
                    unit,
                )
            )
    return out


# ---------------------------------------------------------------------------- the node benchmark's own checks


NODE_CHECK_REMEDY = {
    "ecc": "gpu_health",
    "xid": "gpu_health",
    "retired": "gpu_health",
    "remapped": "gpu_health",
    "nvml": "gpu_health",
    "pcie": "pcie",
    "speed": "gpu_compute",
    "clock": "gpu_compute",
    "temperature": "gpu_compute",
    "power": "gpu_compute",
    "probe": "missing",
    "cpu": "cpu",
}


def from_node_report(node: dict[str, Any]) -> list[Finding]:
    """``bench node``'s checks (spec and health, judged there against the model's table) as findings.

    Its peer checks are left out: the peers are judged here, with the cluster's threshold, across every step."""
    out = []
    items = [(None, c) for c in node.get("checks") or []]
    for gpu in node.get("gpus") or []:
        items += [(gpu.get("index"), c) for c in gpu.get("checks") or []]
    for index, c in items:
        if c["status"] == "skip" or c["name"].startswith("peer_"):
            continue
        severity = {"pass": PASS, "warn": WARN, "fail": FAIL}[c["status"]]
        where = f"gpu{index}." if index is not None else ""
        remedy = next((REMEDIES[r] for k, r in NODE_CHECK_REMEDY.items() if k in c["name"]), REMEDIES["other"])
        out.append(
            Finding(
                f"node.{where}{c['name']}",
                severity,
                c.get("reason") or c["name"],
                c.get("value"),
                c.get("expected"),
                "run" if c["name"] == "probe" else "spec",
                remedy if severity != PASS else "",
            )
        )
    return out


def node_figures(node: dict[str, Any]) -> dict[str, float]:
    """The per-node figures the peers and the baseline compare, from one judged ``bench node`` entry."""
    out: dict[str, float] = {}
    cpu = (node.get("speed") or {}).get("cpu")
    if isinstance(cpu, dict):
        if _num(cpu.get("gemm_fp32_gflops")):
            out["cpu_gemm_gflops"] = float(cpu["gemm_fp32_gflops"])
        if _num(cpu.get("memcopy_gbps")):
            out["cpu_memcopy_gbps"] = float(cpu["memcopy_gbps"])
    for metric, key in (
        ("gemm_bf16", "gpu_gemm_bf16_tflops"),
        ("device_copy", "gpu_device_copy_gbps"),
        ("h2d", "gpu_h2d_gbps"),
    ):
        vals = [g["speed"][metric] for g in node.get("gpus") or [] if _num((g.get("speed") or {}).get(metric))]
        if vals:
            out[key] = float(min(vals))  # the slowest GPU is what a synchronous training step waits for
    return out


def volume_figures(doc: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Per node, MiB/s per mode from ``bench volume -c``'s merged document."""
    out: dict[str, dict[str, float]] = {}
    for r in (doc or {}).get("results") or []:
        if _num(r.get("mib_per_s")):
            out.setdefault(r["node"], {})[f"volume_{r['mode']}_mibps"] = float(r["mib_per_s"])
    return out


def net_figures(pairs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per node, the median of its measured pairs as sender and as receiver (for the baseline and the tables)."""
    tx: dict[str, list[float]] = {}
    rx: dict[str, list[float]] = {}
    for p in pairs:
        if _num(p.get("gbps")):
            tx.setdefault(p["src"], []).append(p["gbps"])
            rx.setdefault(p["dst"], []).append(p["gbps"])
    out: dict[str, dict[str, float]] = {}
    for n, v in tx.items():
        out.setdefault(n, {})["net_tx_gbps"] = statistics.median(v)
    for n, v in rx.items():
        out.setdefault(n, {})["net_rx_gbps"] = statistics.median(v)
    return out


def missing_findings(step: str, failures: dict[str, str]) -> dict[str, list[Finding]]:
    """A node that produced no result in a step fails it, with where to look."""
    return {
        node: [
            Finding(
                f"{step}.result",
                FAIL,
                f"{step}: no result from this node: {why}",
                None,
                None,
                "run",
                REMEDIES["missing"],
            )
        ]
        for node, why in failures.items()
    }


def merge(*parts: dict[str, list[Finding]]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for part in parts:
        for node, findings in part.items():
            out.setdefault(node, []).extend(findings)
    return out


def verdicts(nodes: list[str], findings: dict[str, list[Finding]]) -> list[NodeVerdict]:
    """Every node of the cluster, in the cluster file's order, with all its checks."""
    return [NodeVerdict(n, list(findings.get(n, []))) for n in nodes]

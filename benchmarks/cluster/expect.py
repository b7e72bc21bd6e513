"""What a healthy GPU node should reach, per node type, with where each figure comes from.

These are the ``spec`` reference for figures ``benchmarks.node.specs`` does not hold (that table has the
datasheets and the typical GEMM/copy figures per GPU). Each row cites its source; docs/BENCH_CLUSTER.md
lists them with links. The thresholds are *failure* lines, not typical figures: a node below them is
failed by the provider's own health checks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeExpectation:
    gpu_key: str
    """``benchmarks.node.specs`` key of the GPU model (``h100-sxm``, ``a100-sxm-80``...)."""
    gpus: int
    node_allreduce_busbw_gbps: float
    """Single-node all-reduce bus bandwidth at large messages over NVLink (NCCL), GB/s."""
    h2d_gbps: float
    """Host-to-GPU copy from pinned memory, per GPU, GB/s."""
    ib_port_gbits: float | None
    """One InfiniBand port with GPUDirect RDMA, Gbit/s (ib_write_bw)."""
    source: str


AZHPC = (
    "Azure HPC node health checks (azurehpc-health-checks, default thresholds of nd96isr_h100_v5 / nd96amsr_a100_v4)"
)

EXPECTATIONS: tuple[NodeExpectation, ...] = (
    NodeExpectation("h100-sxm", 8, 460.0, 52.0, 375.0, AZHPC),
    NodeExpectation("a100-sxm-80", 8, 228.0, 24.0, 185.0, AZHPC),
)


def expectation_for(gpu_key: str | None, gpus: int) -> NodeExpectation | None:
    """The row for a node of ``gpus`` GPUs of model ``gpu_key``; the all-reduce line holds only for 8-GPU nodes."""
    for e in EXPECTATIONS:
        if e.gpu_key == gpu_key and e.gpus == gpus:
            return e
    return None

"""Per-model GPU figures: the vendor's datasheet spec and what a healthy GPU typically achieves.

Spec figures are NVIDIA's datasheet numbers for dense math (the datasheets print tensor-core
figures *with* 2:4 sparsity and mark them with an asterisk; dense is half of those).
Typical figures are what the speed tests in ``speed.py`` should reach on a healthy GPU:
- where ``typical`` gives a number, it is a figure seen on that model (the H100 SXM figures:
  ~790 TFLOP/s bf16, ~2.9-3.0 TB/s copy, ~55 GB/s host->device over PCIe Gen5 x16);
- otherwise it is estimated as a share of the spec (``GEMM_SHARE``, ``COPY_SHARE``), and the
  report says so. Replace an estimate with a measured figure once a capture of that model exists
  (docs/results/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

GEMM_SHARE = 0.80
"""cuBLAS large square GEMMs reach about 80% of the dense spec on SXM boards at full power."""
GEMM_SHARE_POWER_LIMITED = 0.70
"""PCIe boards (lower power limits) drop their clocks under sustained GEMM."""
COPY_SHARE = 0.88
"""A device-to-device copy moves about 88% of the HBM/GDDR spec bandwidth (H100 SXM: ~2.95 of 3.35 TB/s)."""

PCIE_H2D_TYPICAL_X16 = {5: 55.0, 4: 25.0, 3: 12.0}
"""GB/s from pinned host memory over an x16 link, per PCIe generation (Gen5 x16: ~55 GB/s of 64 raw)."""


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: how NVML names it, its datasheet figures, and what to expect of a healthy one."""

    key: str
    label: str
    pattern: str = field(repr=False)
    memory_gb: float
    bf16_tflops: float
    fp16_tflops: float
    tf32_tflops: float
    memory_gbps: float
    power_w: int
    pcie_gen: int
    pcie_width: int = 16
    nvlinks: int | None = None
    """Active NVLink links a healthy board has (None: no NVLink, or an optional bridge)."""
    ecc_expected: bool = True
    gemm_share: float = GEMM_SHARE
    typical: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def matches(self, name: str) -> bool:
        return re.search(self.pattern, name) is not None

    def spec(self, metric: str) -> float | None:
        """Datasheet figure for a speed metric (``gemm_bf16``, ``device_copy``, ``h2d``, ...)."""
        if metric.startswith("gemm_"):
            return getattr(self, f"{metric[5:]}_tflops")
        if metric == "device_copy":
            return self.memory_gbps
        if metric in ("h2d", "d2h"):
            return {5: 64.0, 4: 32.0, 3: 16.0}[self.pcie_gen] * self.pcie_width / 16
        return None

    def expected(self, metric: str) -> tuple[float | None, str]:
        """(typical achievable figure, where it comes from)."""
        if metric in self.typical:
            return self.typical[metric], "typical on this model"
        if metric.startswith("gemm_"):
            share = self.gemm_share
            return round(
                self.spec(metric) * share, 1
            ), f"estimated: {share:.0%} of the {self.spec(metric):g} TFLOP/s dense spec"
        if metric == "device_copy":
            return round(
                self.memory_gbps * COPY_SHARE, 1
            ), f"estimated: {COPY_SHARE:.0%} of the {self.memory_gbps:g} GB/s spec"
        if metric in ("h2d", "d2h"):
            value = PCIE_H2D_TYPICAL_X16[self.pcie_gen] * self.pcie_width / 16
            return value, f"typical for PCIe Gen{self.pcie_gen} x{self.pcie_width}"
        return None, "no figure"


_H100_SXM_TYPICAL = {"gemm_bf16": 790.0, "gemm_fp16": 790.0, "device_copy": 2950.0, "h2d": 55.0, "d2h": 55.0}

SPECS: tuple[GpuSpec, ...] = (
    GpuSpec(
        "h100-sxm",
        "H100 SXM5 80GB",
        r"H100(?!.*(PCIe|NVL)).*(SXM|HBM3)",
        80,
        989.4,
        989.4,
        494.7,
        3350,
        700,
        5,
        nvlinks=18,
        typical=_H100_SXM_TYPICAL,
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM column)",
    ),
    GpuSpec(
        "h100-pcie",
        "H100 PCIe 80GB",
        r"H100.*PCIe",
        80,
        756.0,
        756.0,
        378.0,
        2000,
        350,
        5,
        gemm_share=GEMM_SHARE_POWER_LIMITED,
        source="NVIDIA H100 Tensor Core GPU datasheet (PCIe column)",
    ),
    GpuSpec(
        "h100-nvl",
        "H100 NVL 94GB",
        r"H100 NVL",
        94,
        835.5,
        835.5,
        417.5,
        3900,
        400,
        5,
        gemm_share=GEMM_SHARE_POWER_LIMITED,
        source="NVIDIA H100 Tensor Core GPU datasheet (NVL column)",
    ),
    GpuSpec(
        "h200-sxm",
        "H200 SXM 141GB",
        r"H200(?! NVL)",
        141,
        989.4,
        989.4,
        494.7,
        4800,
        700,
        5,
        nvlinks=18,
        typical={"gemm_bf16": 790.0, "gemm_fp16": 790.0, "h2d": 55.0, "d2h": 55.0},
        source="NVIDIA H200 Tensor Core GPU datasheet (SXM column)",
    ),
    GpuSpec(
        "a100-sxm-80",
        "A100 SXM4 80GB",
        r"A100.*SXM4?-80GB",
        80,
        312.0,
        312.0,
        156.0,
        2039,
        400,
        4,
        nvlinks=12,
        source="NVIDIA A100 Tensor Core GPU datasheet (80GB SXM column)",
    ),
    GpuSpec(
        "a100-sxm-40",
        "A100 SXM4 40GB",
        r"A100.*SXM4?-40GB",
        40,
        312.0,
        312.0,
        156.0,
        1555,
        400,
        4,
        nvlinks=12,
        source="NVIDIA A100 Tensor Core GPU datasheet (40GB SXM column)",
    ),
    GpuSpec(
        "a100-pcie-80",
        "A100 PCIe 80GB",
        r"A100.*80GB PCIe|A100-PCIE-80GB",
        80,
        312.0,
        312.0,
        156.0,
        1935,
        300,
        4,
        gemm_share=GEMM_SHARE_POWER_LIMITED,
        source="NVIDIA A100 Tensor Core GPU datasheet (80GB PCIe column)",
    ),
    GpuSpec(
        "a100-pcie-40",
        "A100 PCIe 40GB",
        r"A100-PCIE-40GB|A100.*40GB PCIe",
        40,
        312.0,
        312.0,
        156.0,
        1555,
        250,
        4,
        gemm_share=GEMM_SHARE_POWER_LIMITED,
        source="NVIDIA A100 Tensor Core GPU datasheet (40GB PCIe column)",
    ),
    GpuSpec(
        "l40s",
        "L40S 48GB",
        r"\bL40S\b",
        48,
        362.05,
        362.05,
        183.0,
        864,
        350,
        4,
        gemm_share=GEMM_SHARE_POWER_LIMITED,
        source="NVIDIA L40S datasheet",
    ),
    GpuSpec(
        "l4",
        "L4 24GB",
        r"\bL4\b",
        24,
        121.0,
        121.0,
        60.0,
        300,
        72,
        4,
        gemm_share=GEMM_SHARE_POWER_LIMITED,
        source="NVIDIA L4 Tensor Core GPU datasheet",
    ),
    GpuSpec(
        "a10",
        "A10 24GB",
        r"\bA10\b",
        24,
        125.0,
        125.0,
        62.5,
        600,
        150,
        4,
        gemm_share=GEMM_SHARE_POWER_LIMITED,
        source="NVIDIA A10 Tensor Core GPU datasheet",
    ),
)


def find_spec(name: str | None) -> GpuSpec | None:
    """The table row for an NVML device name (e.g. 'NVIDIA H100 80GB HBM3'), or None for a model not in the table."""
    if not isinstance(name, str):
        return None
    for spec in SPECS:
        if spec.matches(name):
            return spec
    return None

"""Judging a node probe: each check is pass / warn / fail / skip with the reason a person needs.

Pure functions over plain dicts (a parsed NVML reading, the host inventory, the speed figures),
so recorded readings and fixtures are judged exactly as live ones. Thresholds live in the
tables and constants below, each with the reason it was chosen.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.node.nvml_reader import NA
from benchmarks.node.specs import GpuSpec, find_spec

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
SEVERITY = {SKIP: 0, PASS: 0, WARN: 1, FAIL: 2}

SPEED_PASS_SHARE = 0.90
"""At or above 90% of the typical figure: healthy (run-to-run noise is a few percent)."""
SPEED_WARN_SHARE = 0.75
"""75-90% of typical: worth a look (power cap, clocks, a busy GPU); below 75%: something is wrong."""
PEER_SHARE = 0.90
"""A GPU (or node) more than 10% below the median of its peers is flagged."""
TEMPERATURE_WARN_C = 85
"""Datacenter GPUs start slowing down at about 87-90 C; 85 C leaves a margin to act."""
RETIRED_PAGES_FAIL = 60
"""NVIDIA's replacement criterion for GPUs that retire pages (pre-Ampere): 60 retired pages."""
POWER_LIMIT_SHARE = 0.90
"""An enforced power limit under 90% of the board's rated power costs speed."""

CLOCK_EVENT_REASONS: dict[int, tuple[str, str]] = {
    # bit (nvmlClocksEventReason*, nvml.h): (name, status)
    0x001: ("GpuIdle", PASS),
    0x002: ("ApplicationsClocksSetting", PASS),
    0x004: ("SwPowerCap", WARN),
    0x008: ("HwSlowdown", FAIL),
    0x010: ("SyncBoost", PASS),
    0x020: ("SwThermalSlowdown", WARN),
    0x040: ("HwThermalSlowdown", FAIL),
    0x080: ("HwPowerBrakeSlowdown", FAIL),
    0x100: ("DisplayClockSetting", PASS),
}

XID_MEANINGS = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}

SPEED_METRICS: dict[str, str] = {
    "gemm_bf16": "bf16 GEMM",
    "gemm_fp16": "fp16 GEMM",
    "gemm_tf32": "tf32 GEMM",
    "device_copy": "device memory copy",
    "h2d": "host->device copy",
    "d2h": "device->host copy",
}
UNITS = {"gemm_bf16": "TFLOP/s", "gemm_fp16": "TFLOP/s", "gemm_tf32": "TFLOP/s"}


@dataclass
class Check:
    name: str
    status: str
    value: Any = None
    expected: Any = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def worst(statuses: list[str]) -> str:
    """fail > warn > pass > skip: a node with only skipped checks reads 'skip'."""
    if not statuses:
        return SKIP
    if all(s == SKIP for s in statuses):
        return SKIP
    return max((s for s in statuses if s != SKIP), key=lambda s: SEVERITY[s])


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _delta(before: Any, after: Any) -> int | None:
    return after - before if _num(before) and _num(after) else None


def _after(gpu: dict[str, Any], key: str) -> Any:
    """A counter as read after the load (or before, when there was no second reading)."""
    return (gpu.get("after") or {}).get(key, gpu.get(key))


# ----------------------------------------------------------------------------- health checks, one per function


def check_nvml_errors(gpu, spec):
    errors = gpu.get("errors") or []
    if not errors:
        return Check("nvml_errors", PASS, 0, 0, "every NVML query answered")
    fatal = {"NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_RESET_REQUIRED", "NVML_ERROR_CORRUPTED_INFOROM"}
    status = FAIL if any(e["error"] in fatal for e in errors) else WARN
    reasons = sorted({e["reason"] for e in errors})
    return Check("nvml_errors", status, len(errors), 0, "; ".join(reasons))


def check_model(gpu, spec):
    if spec is None:
        return Check(
            "model", SKIP, gpu.get("name"), None, f"no spec for {gpu.get('name')!r}: judged against its peers only"
        )
    return Check("model", PASS, gpu.get("name"), spec.label, f"judged as {spec.label} ({spec.source})")


def check_memory_size(gpu, spec):
    total = gpu.get("memory_total_bytes")
    if spec is None or not _num(total):
        return Check("memory_size", SKIP, total, None, "no spec or no memory reading")
    gib = total / 2**30
    # NVML reports usable memory (e.g. 79.6 GiB on an "80 GB" H100): allow 5% below the marketing size in GB.
    if total < spec.memory_gb * 1e9 * 0.95:
        return Check(
            "memory_size",
            FAIL,
            round(gib, 1),
            spec.memory_gb,
            f"memory {gib:.1f} GiB, expected {spec.memory_gb:g} GB for {spec.label}",
        )
    return Check("memory_size", PASS, round(gib, 1), spec.memory_gb, f"memory {gib:.1f} GiB")


def check_ecc_mode(gpu, spec):
    mode = gpu.get("ecc_mode")
    if not isinstance(mode, dict):
        return Check("ecc_mode", SKIP, NA, "enabled", "ECC mode not reported by NVML")
    if mode["current"] != mode["pending"]:
        return Check(
            "ecc_mode",
            WARN,
            mode,
            "enabled",
            f"ECC is {mode['current']} with a change to {mode['pending']} pending a reboot",
        )
    if mode["current"] != "enabled" and (spec is None or spec.ecc_expected):
        return Check(
            "ecc_mode", WARN, mode["current"], "enabled", "ECC is disabled: enable it (nvidia-smi -e 1) and reboot"
        )
    return Check("ecc_mode", PASS, mode["current"], "enabled", f"ECC {mode['current']}")


def check_ecc_uncorrected(gpu, spec):
    ecc, ecc_after = gpu.get("ecc_errors") or {}, _after(gpu, "ecc_errors") or {}
    vol = (ecc_after.get("volatile") or {}).get("uncorrected", NA)
    agg = (ecc_after.get("aggregate") or {}).get("uncorrected", NA)
    delta = _delta((ecc.get("volatile") or {}).get("uncorrected"), vol)
    if delta:
        return Check("ecc_uncorrected", FAIL, vol, 0, f"uncorrected ECC errors: {vol} (+{delta} during the test)")
    if _num(vol) and vol > 0:
        return Check("ecc_uncorrected", FAIL, vol, 0, f"uncorrected ECC errors: {vol} (since the driver loaded)")
    if _num(agg) and agg > 0:
        return Check(
            "ecc_uncorrected",
            WARN,
            agg,
            0,
            f"uncorrected ECC errors in the GPU's lifetime: {agg} (none since the driver loaded)",
        )
    if vol == NA and agg == NA:
        return Check("ecc_uncorrected", SKIP, NA, 0, "ECC counters not reported (ECC off or not supported)")
    return Check("ecc_uncorrected", PASS, vol, 0, "no uncorrected ECC errors")


def check_ecc_corrected(gpu, spec):
    before = ((gpu.get("ecc_errors") or {}).get("volatile") or {}).get("corrected")
    after = ((_after(gpu, "ecc_errors") or {}).get("volatile") or {}).get("corrected", NA)
    delta = _delta(before, after)
    if delta:
        return Check(
            "ecc_corrected",
            WARN,
            after,
            0,
            f"corrected ECC errors during the test: +{delta} (memory is degrading if this keeps growing)",
        )
    if not _num(after):
        return Check("ecc_corrected", SKIP, NA, 0, "ECC counters not reported")
    return Check(
        "ecc_corrected",
        PASS,
        after,
        None,
        f"corrected ECC errors since the driver loaded: {after}, none during the test",
    )


def check_remapped_rows(gpu, spec):
    rows, rows_after = gpu.get("remapped_rows"), _after(gpu, "remapped_rows")
    if not isinstance(rows_after, dict):
        return Check("remapped_rows", SKIP, NA, None, "row remapping not reported (pre-Ampere GPU or not supported)")
    value = rows_after
    if rows_after.get("failure"):
        return Check(
            "remapped_rows",
            FAIL,
            value,
            None,
            "row remapping failed: the GPU has run out of spare rows and needs replacing",
        )
    delta = _delta((rows or {}).get("uncorrectable"), rows_after.get("uncorrectable"))
    if delta:
        return Check(
            "remapped_rows", FAIL, value, None, f"rows remapped after uncorrectable errors during the test: +{delta}"
        )
    if rows_after.get("pending"):
        return Check(
            "remapped_rows",
            WARN,
            value,
            None,
            "row remapping pending: reset the GPU (nvidia-smi -r) or reboot before use",
        )
    if rows_after.get("uncorrectable", 0) > 0:
        return Check(
            "remapped_rows",
            WARN,
            value,
            None,
            f"{rows_after['uncorrectable']} rows remapped after uncorrectable errors (fine while remapping works; watch for growth)",
        )
    return Check(
        "remapped_rows",
        PASS,
        value,
        None,
        f"remapped rows: {rows_after.get('correctable', 0)} correctable, 0 uncorrectable",
    )


def check_retired_pages(gpu, spec):
    pages = _after(gpu, "retired_pages") or {}
    sbe, dbe, pending = pages.get("single_bit_multiple", NA), pages.get("double_bit", NA), pages.get("pending", NA)
    if sbe == NA and dbe == NA:
        return Check(
            "retired_pages", SKIP, NA, None, "page retirement not reported (GPUs since Ampere remap rows instead)"
        )
    total = (sbe if _num(sbe) else 0) + (dbe if _num(dbe) else 0)
    if total >= RETIRED_PAGES_FAIL:
        return Check(
            "retired_pages",
            FAIL,
            total,
            f"< {RETIRED_PAGES_FAIL}",
            f"{total} retired pages: at NVIDIA's replacement threshold",
        )
    if pending is True:
        return Check("retired_pages", WARN, total, None, "page retirement pending: reboot to retire them")
    if _num(dbe) and dbe > 0:
        return Check("retired_pages", WARN, total, None, f"{dbe} pages retired after double-bit errors")
    return Check("retired_pages", PASS, total, None, f"retired pages: {total}")


def check_pcie_width(gpu, spec):
    pcie = _after(gpu, "pcie") or {}
    cur, mx = pcie.get("current_width"), pcie.get("max_width")
    loaded = gpu.get("pcie_under_load") or {}
    if _num(loaded.get("current_width")) and (not _num(cur) or loaded["current_width"] < cur):
        cur = loaded["current_width"]
    if not _num(cur):
        return Check("pcie_width", SKIP, NA, None, "PCIe link width not reported")
    want = spec.pcie_width if spec else mx
    if _num(mx) and cur < mx:
        return Check("pcie_width", FAIL, f"x{cur}", f"x{mx}", f"PCIe link x{cur}, expected x{mx}")
    if _num(want) and cur < want:
        return Check(
            "pcie_width",
            FAIL,
            f"x{cur}",
            f"x{want}",
            f"PCIe link x{cur}, expected x{want} for {spec.label} (slot or riser limits it)",
        )
    return Check("pcie_width", PASS, f"x{cur}", f"x{want}" if _num(want) else None, f"PCIe link x{cur}")


def check_pcie_generation(gpu, spec):
    loaded = gpu.get("pcie_under_load") or {}
    if _num(loaded.get("current_generation")):
        cur, mx = loaded["current_generation"], loaded.get("max_generation")
        if _num(mx) and cur < mx:
            return Check(
                "pcie_generation",
                FAIL,
                f"Gen{cur}",
                f"Gen{mx}",
                f"PCIe link at Gen{cur} under load, capable of Gen{mx}",
            )
    pcie = _after(gpu, "pcie") or {}
    cur, mx = pcie.get("current_generation"), pcie.get("max_generation")
    if _num(loaded.get("current_generation")):
        cur = loaded["current_generation"]
    if not _num(cur):
        return Check("pcie_generation", SKIP, NA, None, "PCIe link generation not reported")
    if _num(mx) and cur < mx:
        # Links train down to Gen1 when idle to save power, so a low reading alone is not a fault.
        return Check(
            "pcie_generation",
            WARN,
            f"Gen{cur}",
            f"Gen{mx}",
            f"PCIe link at Gen{cur}, capable of Gen{mx} (idle links drop their generation; check the host->device figure)",
        )
    if spec and _num(mx) and mx < spec.pcie_gen:
        return Check(
            "pcie_generation",
            WARN,
            f"Gen{cur}",
            f"Gen{spec.pcie_gen}",
            f"PCIe link at most Gen{mx}: the slot or platform is older than the GPU (Gen{spec.pcie_gen})",
        )
    return Check("pcie_generation", PASS, f"Gen{cur}", f"Gen{mx}" if _num(mx) else None, f"PCIe Gen{cur}")


def check_nvlink_state(gpu, spec):
    links = _after(gpu, "nvlinks") or []
    want = spec.nvlinks if spec else None
    active = [ln["link"] for ln in links if ln["active"]]
    inactive = [ln["link"] for ln in links if not ln["active"]]
    if want is None:
        if not links:
            return Check("nvlink_state", SKIP, 0, None, "no NVLink on this GPU")
        status = WARN if inactive and active else PASS
        return Check("nvlink_state", status, len(active), None, f"NVLink: {len(active)} of {len(links)} links active")
    if len(active) < want:
        detail = f" (inactive: {', '.join(map(str, inactive))})" if inactive else ""
        return Check("nvlink_state", FAIL, len(active), want, f"NVLink: {len(active)} of {want} links active{detail}")
    versions = sorted({ln["version"] for ln in links if ln["active"] and _num(ln["version"])})
    return Check(
        "nvlink_state",
        PASS,
        len(active),
        want,
        f"NVLink: {len(active)} of {want} links active" + (f", version code {versions}" if versions else ""),
    )


def check_nvlink_errors(gpu, spec):
    before = {ln["link"]: ln["errors"] for ln in gpu.get("nvlinks") or []}
    after = {ln["link"]: ln["errors"] for ln in _after(gpu, "nvlinks") or []}
    if not after:
        return Check("nvlink_errors", SKIP, NA, 0, "no NVLink")
    grew, totals = [], {}
    for link, errs in after.items():
        for name, value in errs.items():
            if _num(value):
                totals[name] = totals.get(name, 0) + value
            d = _delta((before.get(link) or {}).get(name), value)
            if d:
                grew.append((link, name, d))
    if any(name == "recovery" for _, name, _ in grew):
        status = FAIL
    else:
        status = WARN if grew else PASS
    if grew:
        reason = "NVLink errors during the test: " + ", ".join(f"link {ln} {n} +{d}" for ln, n, d in grew)
    else:
        reason = "no NVLink errors during the test" + (
            f" (totals since reset: {totals})" if any(totals.values()) else ""
        )
    return Check("nvlink_errors", status, totals, 0, reason)


def decode_clock_events(mask: int) -> list[tuple[str, str]]:
    return [CLOCK_EVENT_REASONS.get(bit, (f"0x{bit:x}", WARN)) for bit in (1 << i for i in range(64)) if mask & bit]


def check_clock_events(gpu, spec):
    masks = [m for m in (gpu.get("clock_event_reasons"), _after(gpu, "clock_event_reasons")) if _num(m)]
    if not masks:
        return Check("clock_events", SKIP, NA, None, "clock-event (throttle) reasons not reported")
    mask = 0
    for m in masks:
        mask |= m
    reasons = decode_clock_events(mask)
    status = worst([s for _, s in reasons]) if reasons else PASS
    bad = [n for n, s in reasons if s != PASS]
    names = ", ".join(n for n, _ in reasons) or "none"
    reason = f"clocks held back by: {', '.join(bad)}" if bad else f"clock-event reasons: {names}"
    return Check("clock_events", status, f"0x{mask:x}", "no slowdown", reason)


def check_temperature(gpu, spec):
    t = _after(gpu, "temperature_c")
    if not _num(t):
        return Check("temperature", SKIP, NA, None, "temperature not reported")
    if t >= TEMPERATURE_WARN_C:
        return Check("temperature", WARN, t, f"< {TEMPERATURE_WARN_C}", f"GPU at {t} C: check cooling")
    return Check("temperature", PASS, t, f"< {TEMPERATURE_WARN_C}", f"GPU at {t} C")


def check_power_limit(gpu, spec):
    limit = gpu.get("power_limit_w")
    if spec is None or not _num(limit):
        return Check("power_limit", SKIP, limit, None, "no spec or no power limit reading")
    if limit < spec.power_w * POWER_LIMIT_SHARE:
        return Check(
            "power_limit",
            WARN,
            limit,
            spec.power_w,
            f"power limit {limit:g} W, {spec.label} is rated {spec.power_w} W (raise it with nvidia-smi -pl)",
        )
    return Check("power_limit", PASS, limit, spec.power_w, f"power limit {limit:g} W")


def check_xid_events(gpu, spec):
    events = gpu.get("events")
    if events is None:
        return Check(
            "xid_events", SKIP, NA, 0, "XID events not watched (NVML could not register them, or no second reading)"
        )
    if not events:
        return Check("xid_events", PASS, 0, 0, "no XID or double-bit ECC events during the test")
    parts = []
    for e in events:
        if e.get("type") == 0x8:
            parts.append(f"XID {e['data']} ({XID_MEANINGS.get(e['data'], 'see NVIDIA XID catalog')})")
        else:
            parts.append("double-bit ECC error event")
    return Check("xid_events", FAIL, len(events), 0, "events during the test: " + "; ".join(parts))


HEALTH_CHECKS: tuple[Callable[[dict, GpuSpec | None], Check], ...] = (
    check_model,
    check_nvml_errors,
    check_memory_size,
    check_ecc_mode,
    check_ecc_uncorrected,
    check_ecc_corrected,
    check_remapped_rows,
    check_retired_pages,
    check_pcie_width,
    check_pcie_generation,
    check_nvlink_state,
    check_nvlink_errors,
    check_clock_events,
    check_temperature,
    check_power_limit,
    check_xid_events,
)


# ----------------------------------------------------------------------------- speed


def speed_values(speed: dict[str, Any] | None) -> dict[str, Any]:
    """Flatten one GPU's speed figures into metric -> number or {"error": ...}."""
    if not speed:
        return {}
    gemm = speed.get("gemm_tflops") or {}
    out = {f"gemm_{d}": (v.get("tflops") if isinstance(v, dict) and "tflops" in v else v) for d, v in gemm.items()}
    for m in ("device_copy", "h2d", "d2h"):
        if f"{m}_gbps" in speed:
            out[m] = speed[f"{m}_gbps"]
    if "error" in speed:
        out = {m: {"error": speed["error"]} for m in SPEED_METRICS}
    return out


def check_speed(metric: str, value: Any, spec: GpuSpec | None, skipped: str | None) -> Check:
    label, unit = SPEED_METRICS[metric], UNITS.get(metric, "GB/s")
    if skipped:
        return Check(metric, SKIP, None, None, skipped)
    if isinstance(value, dict) and "error" in value:
        return Check(metric, FAIL, None, None, f"{label} failed: {value['error']}")
    if not _num(value):
        return Check(metric, SKIP, None, None, f"{label} not measured")
    if spec is None:
        return Check(
            metric, SKIP, value, None, f"{label} {value:g} {unit}; no spec for this model (see the peer check)"
        )
    typical, basis = spec.expected(metric)
    share = value / typical
    status = PASS if share >= SPEED_PASS_SHARE else WARN if share >= SPEED_WARN_SHARE else FAIL
    return Check(
        metric, status, value, typical, f"{label} {value:g} {unit}, {share:.0%} of typical {typical:g} ({basis})"
    )


# ----------------------------------------------------------------------------- node and cluster


def judge_gpu(gpu: dict[str, Any], speed: dict[str, Any] | None, *, skipped: str | None) -> list[Check]:
    spec = find_spec(gpu.get("name"))
    checks = [fn(gpu, spec) for fn in HEALTH_CHECKS]
    values = speed_values(speed)
    for metric in SPEED_METRICS:
        checks.append(check_speed(metric, values.get(metric), spec, skipped))
    return checks


def judge_host(node: dict[str, Any], expected_gpus: int | None) -> list[Check]:
    """Node-level checks: driver, GPU count, torch/CUDA, NUMA, InfiniBand, CPU figures."""
    checks = []
    nvml, host, speed = node["nvml"], node.get("host_info") or {}, node.get("speed") or {}
    count = len(nvml["gpus"])
    if not nvml["available"]:
        status = FAIL if expected_gpus else SKIP
        checks.append(Check("nvidia_driver", status, None, "loaded" if expected_gpus else None, nvml["error"]))
    else:
        sysinfo = nvml["system"] or {}
        checks.append(
            Check(
                "nvidia_driver",
                PASS,
                sysinfo.get("driver_version"),
                None,
                f"driver {sysinfo.get('driver_version')}, CUDA {sysinfo.get('cuda_driver_version')}",
            )
        )
    if expected_gpus is not None:
        ok = count == expected_gpus
        checks.append(
            Check(
                "gpu_count",
                PASS if ok else FAIL,
                count,
                expected_gpus,
                f"{count} GPUs" + ("" if ok else f", the cluster file says {expected_gpus}"),
            )
        )
    if count and speed.get("error"):
        checks.append(Check("torch_cuda", FAIL, False, True, speed["error"]))
    numa = host.get("numa") or {}
    if numa:
        checks.append(
            Check(
                "numa",
                PASS if numa.get("exposed") else SKIP,
                numa.get("nodes"),
                None,
                numa.get("reason") or f"{numa.get('nodes')} NUMA nodes exposed",
            )
        )
    ib = host.get("infiniband") or {}
    if ib:
        checks.append(_check_infiniband(ib))
    cpu = speed.get("cpu")
    if isinstance(cpu, dict) and "gemm_fp32_gflops" in cpu:
        checks.append(
            Check(
                "cpu_gemm",
                PASS,
                cpu["gemm_fp32_gflops"],
                None,
                f"CPU fp32 GEMM {cpu['gemm_fp32_gflops']:g} GFLOP/s on {cpu['threads']} threads",
            )
        )
        checks.append(
            Check("cpu_memcopy", PASS, cpu["memcopy_gbps"], None, f"CPU memory copy {cpu['memcopy_gbps']:g} GB/s")
        )
    elif isinstance(cpu, dict) and "error" in cpu:
        checks.append(Check("cpu_gemm", FAIL, None, None, f"CPU speed test failed: {cpu['error']}"))
    if host.get("cpu_limit"):  # absent from probes recorded before it was read
        checks.append(check_cpu_quota(host["cpu_limit"], (host.get("cpu") or {}).get("count"), count))
    return checks


def check_cpu_quota(limit: dict[str, Any], cpu_count: int | None, gpus: int = 0) -> Check:
    """The cgroup CPU quota the probe ran under, which every rank started the same way inherits.

    Under one CPU fails: a rank, its data loaders and torchrun's agent share it, and the node is slow at
    everything (its speed figures show it only as far as the peers' spread allows). Under one CPU per GPU
    warns: each GPU's rank drives it from a core of its own. A quota above that may be deliberate (a
    container's share of a large host) and passes, named."""
    usable = limit.get("affinity") or cpu_count
    quota = limit.get("quota_cpus")
    if quota is None:
        if not limit.get("readable"):
            return Check("cpu_quota", SKIP, None, None, "the probe's cgroup could not be read (/proc/self/cgroup)")
        return Check("cpu_quota", PASS, None, None, f"no CPU quota; {usable} CPUs usable")
    throttled = limit.get("nr_throttled")
    where = f"cgroup {limit['cgroup']}: {limit['quota_us']} us per {limit['period_us']} us" + (
        f", throttled {throttled} times" if throttled else ""
    )
    if quota < 1:
        return Check(
            "cpu_quota",
            FAIL,
            quota,
            1,
            f"processes started here get {quota:g} of one CPU ({where}): every rank is starved; raise or "
            "remove the limit (docker --cpus, the pod's CPU limit, systemd's CPUQuota)",
        )
    if gpus and quota < gpus:
        return Check("cpu_quota", WARN, quota, gpus, f"{quota:g} CPUs for {gpus} GPUs, one rank each ({where})")
    return Check("cpu_quota", PASS, quota, None, f"CPU quota {quota:g} of {usable} CPUs ({where})")


def _check_infiniband(ib: dict[str, Any]) -> Check:
    if not ib.get("present"):
        return Check("infiniband", SKIP, 0, None, ib.get("reason") or "no InfiniBand HCA")
    ports = [(h["name"], p) for h in ib["hcas"] for p in h["ports"]]
    down = [f"{name} port {p['port']} {p['state']}" for name, p in ports if p.get("state") != "ACTIVE"]
    rates = sorted({p.get("rate") for _, p in ports if p.get("rate")})
    if down:
        return Check("infiniband", WARN, len(ports) - len(down), len(ports), "not active: " + ", ".join(down))
    return Check(
        "infiniband",
        PASS,
        len(ports),
        len(ports),
        f"{len(ports)} ports ACTIVE" + (f" at {', '.join(rates)}" if rates else ""),
    )


def judge_node(node: dict[str, Any], *, expected_gpus: int | None = None) -> dict[str, Any]:
    """A probe (host, parsed nvml, host_info, speed) -> the report entry for this node, with its checks."""
    speed = node.get("speed") or {}
    by_index = {g.get("index"): g for g in speed.get("gpus") or []}
    skipped = "skipped (--quick)" if node.get("quick") else None
    if not skipped and speed.get("error"):
        skipped = f"not measured: {speed['error']}"
    gpus = []
    for gpu in node["nvml"]["gpus"]:
        s = by_index.get(gpu["index"])
        checks = judge_gpu(gpu, s, skipped=skipped)
        gpus.append(
            {
                **gpu,
                "speed": speed_values(s),
                "checks": [c.to_dict() for c in checks],
                "status": worst([c.status for c in checks]),
            }
        )
    checks = [c.to_dict() for c in judge_host(node, expected_gpus)]
    return {
        "host": node["host"],
        "gpus": gpus,
        "checks": checks,
        "speed": {k: v for k, v in speed.items() if k != "gpus"},
        "system": node["nvml"].get("system"),
        "host_info": node.get("host_info"),
        "status": worst([c["status"] for c in checks] + [g["status"] for g in gpus]),
    }


def judge_peers(nodes: list[dict[str, Any]]) -> None:
    """Flag any GPU more than 10% below the median of same-model GPUs (fail), and any node's CPU figures (warn)."""
    groups: dict[tuple[str, str], list[tuple[dict, float]]] = {}
    for node in nodes:
        for gpu in node["gpus"]:
            for metric, value in (gpu.get("speed") or {}).items():
                if _num(value):
                    groups.setdefault((str(gpu.get("name")), metric), []).append((gpu, value))
    for (_, metric), members in groups.items():
        for gpu, check in _peer_checks(metric, members, FAIL, SPEED_METRICS[metric], UNITS.get(metric, "GB/s")):
            gpu["checks"].append(check)
    cpu_members: dict[str, list[tuple[dict, float]]] = {"cpu_gemm": [], "cpu_memcopy": []}
    for node in nodes:
        for c in node["checks"]:
            if c["name"] in cpu_members and _num(c["value"]):
                cpu_members[c["name"]].append((node, c["value"]))
    units = {"cpu_gemm": ("CPU fp32 GEMM", "GFLOP/s"), "cpu_memcopy": ("CPU memory copy", "GB/s")}
    for metric, members in cpu_members.items():
        # CPU figures only inform: on shared or virtual CPUs they vary more than 10% between runs.
        for node, check in _peer_checks(metric, members, WARN, *units[metric]):
            node["checks"].append(check)
    for node in nodes:
        for gpu in node["gpus"]:
            gpu["status"] = worst([c["status"] for c in gpu["checks"]])
        node["status"] = worst([c["status"] for c in node["checks"]] + [g["status"] for g in node["gpus"]])


def _peer_checks(metric: str, members: list[tuple[dict, float]], low_status: str, label: str, unit: str):
    if len(members) < 2:
        return
    median = statistics.median(v for _, v in members)
    for owner, value in members:
        share = value / median if median else 1.0
        if share < PEER_SHARE:
            yield (
                owner,
                Check(
                    f"peer_{metric}",
                    low_status,
                    value,
                    median,
                    f"{label} {value:g} {unit} is {1 - share:.0%} below its peers' median {median:g}",
                ).to_dict(),
            )
        else:
            yield (
                owner,
                Check(
                    f"peer_{metric}", PASS, value, median, f"{label} within 10% of its peers' median {median:g} {unit}"
                ).to_dict(),
            )


def summarize(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [n["status"] for n in nodes]
    failed = [f"{n['host']}" for n in nodes if n["status"] == FAIL]
    return {
        "status": worst(statuses),
        "nodes": len(nodes),
        "gpus": sum(len(n["gpus"]) for n in nodes),
        "failed_nodes": failed,
    }

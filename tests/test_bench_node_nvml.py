"""The NVML choke point and the judge, against NVML readings built from the values the NVML docs define.

The fixtures in tests/fixtures/nvml/ are not captures (no GPU machine was available); each says so,
and make_fixtures.py documents where every value comes from. A capture (`corral bench node --record`)
can be dropped in beside them and judged the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pynvml
import pytest

from benchmarks.node import nvml_reader as nr
from benchmarks.node.judge import CLOCK_EVENT_REASONS, FAIL, PASS, SKIP, WARN, judge_node

FIXTURES = Path(__file__).parent / "fixtures" / "nvml"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def judged(name: str, *, quick: bool = True, speed: dict | None = None) -> dict:
    probe = {
        "host": "n1",
        "quick": quick,
        "nvml": nr.parse_recording(fixture(name)),
        "host_info": {},
        "speed": speed or {},
    }
    return judge_node(probe)


def checks(gpu: dict) -> dict[str, dict]:
    return {c["name"]: c for c in gpu["checks"]}


def test_fixtures_say_they_are_built_from_documented_values_and_are_current():
    from tests.fixtures.nvml.make_fixtures import build

    for name, data in build().items():
        on_disk = fixture(name)
        assert "not a capture" in on_disk["about"], name
        assert on_disk == json.loads(json.dumps(data)), (
            f"{name} is stale: run python tests/fixtures/nvml/make_fixtures.py"
        )


def test_our_nvml_constants_match_pynvml():
    for code, name in nr.ERROR_NAMES.items():
        assert getattr(pynvml, name) == code
    assert (nr.NVML_CLOCK_SM, nr.NVML_CLOCK_MEM, nr.NVML_TEMPERATURE_GPU) == (
        pynvml.NVML_CLOCK_SM,
        pynvml.NVML_CLOCK_MEM,
        pynvml.NVML_TEMPERATURE_GPU,
    )
    assert (nr.NVML_VOLATILE_ECC, nr.NVML_AGGREGATE_ECC) == (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC)
    assert nr.NVML_MEMORY_ERROR_TYPE_UNCORRECTED == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    assert nr.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR == pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
    assert nr.NVLINK_ERROR_COUNTERS == {
        "replay": pynvml.NVML_NVLINK_ERROR_DL_REPLAY,
        "recovery": pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,
        "crc_flit": pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT,
        "crc_data": pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
    }
    assert nr.NVML_EVENT_TYPE_XID_CRITICAL_ERROR == pynvml.nvmlEventTypeXidCriticalError
    assert nr.NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR == pynvml.nvmlEventTypeDoubleBitEccError
    names = {
        "GpuIdle",
        "ApplicationsClocksSetting",
        "SwPowerCap",
        "HwSlowdown",
        "SyncBoost",
        "SwThermalSlowdown",
        "HwThermalSlowdown",
        "HwPowerBrakeSlowdown",
        "DisplayClockSetting",
    }
    for bit, (name, _) in CLOCK_EVENT_REASONS.items():
        assert name in names and getattr(pynvml, f"nvmlClocksEventReason{name}") == bit
        assert getattr(pynvml, f"nvmlClocksThrottleReason{name}") == bit


def test_healthy_h100_sxm_passes_every_health_check():
    node = judged("h100_sxm_healthy.json")
    assert node["status"] == PASS
    assert len(node["gpus"]) == 2
    gpu = node["gpus"][0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["uuid"].startswith("GPU-")
    assert gpu["ecc_mode"] == {"current": "enabled", "pending": "enabled"}
    assert gpu["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": 0, "failure": 0}
    assert gpu["power_limit_w"] == 700.0 and gpu["clocks_mhz"]["max_sm"] == 1980
    assert len(gpu["nvlinks"]) == 18 and all(ln["active"] for ln in gpu["nvlinks"])
    c = checks(gpu)
    for name in (
        "model",
        "ecc_mode",
        "ecc_uncorrected",
        "remapped_rows",
        "pcie_width",
        "pcie_generation",
        "nvlink_state",
        "nvlink_errors",
        "clock_events",
        "temperature",
        "power_limit",
        "xid_events",
        "memory_size",
    ):
        assert c[name]["status"] == PASS, (name, c[name])
    assert c["retired_pages"]["status"] == SKIP  # Ampere and later: NOT_SUPPORTED, read as n/a
    assert gpu["retired_pages"]["double_bit"] == nr.NA
    assert c["gemm_bf16"]["status"] == SKIP and "--quick" in c["gemm_bf16"]["reason"]


def test_failing_gpu_is_judged_fail_with_the_right_reasons():
    node = judged("h100_sxm_failing.json")
    assert node["status"] == FAIL
    good, bad = node["gpus"]
    assert good["status"] == PASS
    assert bad["status"] == FAIL
    c = checks(bad)
    assert c["pcie_width"]["status"] == FAIL and c["pcie_width"]["reason"] == "PCIe link x8, expected x16"
    assert c["ecc_uncorrected"]["status"] == FAIL and c["ecc_uncorrected"]["reason"].startswith(
        "uncorrected ECC errors: 2"
    )
    assert "+2 during the test" in c["ecc_uncorrected"]["reason"]
    assert (
        c["clock_events"]["status"] == FAIL
        and "HwSlowdown" in c["clock_events"]["reason"]
        and c["clock_events"]["value"] == "0x9"
    )
    assert c["remapped_rows"]["status"] == FAIL and "+2" in c["remapped_rows"]["reason"]
    assert (
        c["nvlink_state"]["status"] == FAIL
        and c["nvlink_state"]["reason"] == "NVLink: 17 of 18 links active (inactive: 3)"
    )
    assert c["xid_events"]["status"] == FAIL and "XID 48" in c["xid_events"]["reason"]
    assert bad["pcie_under_load"]["current_generation"] == 4
    assert (
        c["pcie_generation"]["status"] == FAIL
        and c["pcie_generation"]["reason"] == "PCIe link at Gen4 under load, capable of Gen5"
    )
    assert c["ecc_corrected"]["status"] == WARN and "+5" in c["ecc_corrected"]["reason"]
    assert c["temperature"]["status"] == WARN
    # The before/after split is kept: counters judged on their deltas, both readings in the report.
    assert (
        bad["ecc_errors"]["volatile"]["uncorrected"] == 0 and bad["after"]["ecc_errors"]["volatile"]["uncorrected"] == 2
    )


def test_not_supported_reads_as_na_and_never_crashes():
    node = judged("l4_not_supported.json")
    gpu = node["gpus"][0]
    assert gpu["serial"] == nr.NA and gpu["remapped_rows"] == nr.NA and gpu["nvlinks"] == []
    assert gpu["ecc_errors"]["volatile"]["uncorrected"] == nr.NA
    assert gpu["clock_event_reasons"] == 0x1  # older name used when the newer one is missing
    assert gpu["power_limit_w"] == nr.NA
    c = checks(gpu)
    assert c["nvlink_state"]["status"] == SKIP and c["remapped_rows"]["status"] == SKIP
    # Insufficient permission is not "unsupported": it is said, as a sentence.
    assert c["nvml_errors"]["status"] == WARN and "insufficient permissions" in c["nvml_errors"]["reason"]
    assert c["pcie_generation"]["status"] == WARN and "idle" in c["pcie_generation"]["reason"]  # no reading under load
    assert c["model"]["value"] == "NVIDIA L4" and "L4" in c["model"]["expected"]
    assert node["status"] == WARN


def test_no_driver_is_a_sentence_and_not_a_failure():
    node = judged("no_driver.json")
    assert node["gpus"] == []
    drv = {c["name"]: c for c in node["checks"]}["nvidia_driver"]
    assert drv["status"] == SKIP and drv["reason"].startswith("no NVIDIA driver")
    assert node["status"] == SKIP
    # ...unless the cluster file promised GPUs on that node.
    probe = {
        "host": "n1",
        "quick": True,
        "nvml": nr.parse_recording(fixture("no_driver.json")),
        "host_info": {},
        "speed": {},
    }
    node = judge_node(probe, expected_gpus=8)
    by = {c["name"]: c for c in node["checks"]}
    assert by["nvidia_driver"]["status"] == FAIL and by["gpu_count"]["reason"] == "0 GPUs, the cluster file says 8"


def test_live_nvml_without_a_driver_raises_a_sentence_and_record_around_still_runs_the_load():
    live = nr.LiveNvml()
    try:
        live.init()
    except nr.NvmlCallError as exc:
        assert exc.name in ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED")
        assert "NVIDIA" in str(exc)
    else:  # pragma: no cover - only on a GPU machine
        live.shutdown()
        pytest.skip("this machine has an NVIDIA driver")
    ran = []
    recording, result = nr.record_around(lambda gpus, during: ran.append(gpus) or "figures")
    assert ran == [[]] and result == "figures"
    assert recording["init_error"] and nr.parse_recording(recording)["available"] is False


def test_replay_reports_unrecorded_calls_and_recorded_errors():
    src = nr.ReplayNvml(
        {"nvmlDeviceGetName(0)": "NVIDIA A10", "nvmlDeviceGetSerial(0)": {"error": "NVML_ERROR_GPU_IS_LOST"}}
    )
    assert src.call("nvmlDeviceGetName", 0) == "NVIDIA A10"
    with pytest.raises(nr.NvmlCallError) as e:
        src.call("nvmlDeviceGetSerial", 0)
    assert "fallen off the bus" in str(e.value)
    with pytest.raises(nr.NvmlCallError) as e:
        src.call("nvmlDeviceGetUUID", 0)
    assert e.value.name == "NVML_ERROR_NOT_RECORDED"


def test_a_lost_gpu_fails_the_nvml_errors_check():
    rec = fixture("h100_sxm_healthy.json")
    rec["before"]["nvmlDeviceGetMemoryInfo(0)"] = {"error": "NVML_ERROR_GPU_IS_LOST"}
    node = judge_node({"host": "n", "quick": True, "nvml": nr.parse_recording(rec), "host_info": {}, "speed": {}})
    c = checks(node["gpus"][0])
    assert c["nvml_errors"]["status"] == FAIL and "fallen off the bus" in c["nvml_errors"]["reason"]
    assert c["memory_size"]["status"] == SKIP


def test_plain_turns_pynvml_structures_and_bytes_into_json():
    mem = pynvml.c_nvmlMemory_t()
    mem.total, mem.free, mem.used = 10, 4, 6
    assert nr._plain(mem) == {"total": 10, "free": 4, "used": 6}
    assert nr._plain(b"NVIDIA H100 PCIe") == "NVIDIA H100 PCIe"
    assert nr._plain((1, 0)) == [1, 0]


def test_recording_format_is_checked():
    with pytest.raises(ValueError, match="not an NVML reading"):
        nr.parse_recording({"format": "something else"})


def test_events_not_registered_are_skipped_not_passed():
    rec = fixture("h100_sxm_healthy.json")
    rec["events_unsupported"] = [1]
    node = judge_node({"host": "n", "quick": True, "nvml": nr.parse_recording(rec), "host_info": {}, "speed": {}})
    assert checks(node["gpus"][0])["xid_events"]["status"] == PASS
    assert checks(node["gpus"][1])["xid_events"]["status"] == SKIP

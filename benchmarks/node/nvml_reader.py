"""The one choke point for NVML (nvidia-ml-py, ``import pynvml``).

Every NVML call the node probe makes goes through a *source*: ``LiveNvml`` calls
pynvml and records what each call returned (a JSON-able value, or the NVML error
name); ``ReplayNvml`` answers the same calls from such a recording. The readers
below (``read_system``, ``read_gpu``, ``read_counters``) only ever talk to a
source, so a reading captured on a GPU machine (``corral bench node --record``)
and a fixture built from the values the NVML documentation defines go through
exactly the code that runs live.

Recording format (``corral-nvml-reading/1``)::

    {"format": "corral-nvml-reading/1",
     "init_error": null | "NVML_ERROR_LIBRARY_NOT_FOUND" | ...,
     "before": {"nvmlDeviceGetName(0)": "NVIDIA H100 80GB HBM3", ...},
     "during": {... the PCIe link, read while host->device copies run ...},
     "after":  {... the counters again, read after the load ...},
     "events": [{"gpu": 0, "type": 8, "data": 79}]}

Keys are ``function(args)`` with the device handle written as the GPU index;
values are what the call returned, or ``{"error": "NVML_ERROR_NOT_SUPPORTED"}``.
A call that is not supported reads as ``"n/a"`` and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

FORMAT = "corral-nvml-reading/1"
NA = "n/a"

# Values from nvml.h (the NVML API reference); tests check them against pynvml's constants.
ERROR_NAMES = {
    1: "NVML_ERROR_UNINITIALIZED",
    2: "NVML_ERROR_INVALID_ARGUMENT",
    3: "NVML_ERROR_NOT_SUPPORTED",
    4: "NVML_ERROR_NO_PERMISSION",
    6: "NVML_ERROR_NOT_FOUND",
    9: "NVML_ERROR_DRIVER_NOT_LOADED",
    10: "NVML_ERROR_TIMEOUT",
    12: "NVML_ERROR_LIBRARY_NOT_FOUND",
    13: "NVML_ERROR_FUNCTION_NOT_FOUND",
    14: "NVML_ERROR_CORRUPTED_INFOROM",
    15: "NVML_ERROR_GPU_IS_LOST",
    16: "NVML_ERROR_RESET_REQUIRED",
    17: "NVML_ERROR_OPERATING_SYSTEM",
    18: "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    999: "NVML_ERROR_UNKNOWN",
}

SENTENCES = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "no NVIDIA driver: the NVML library (libnvidia-ml.so.1) is not installed on this machine",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA kernel driver is not loaded (check `lsmod | grep nvidia` and dmesg)",
    "NVML_ERROR_NO_PERMISSION": "NVML refused the call: insufficient permissions (run as root or check /dev/nvidia* permissions)",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "the NVML library and the loaded kernel driver are different versions: reboot, or reload the nvidia module",
    "NVML_ERROR_GPU_IS_LOST": "the GPU has fallen off the bus or is otherwise inaccessible (check dmesg for Xid 79; the node needs a reset)",
    "NVML_ERROR_RESET_REQUIRED": "the GPU needs a reset before it can be used again",
    "NVML_ERROR_CORRUPTED_INFOROM": "the GPU's infoROM is corrupted: its ECC and error records cannot be trusted",
    "NVML_ERROR_OPERATING_SYSTEM": "the operating system blocked the NVML request",
    "NVML_ERROR_FUNCTION_NOT_FOUND": "the installed driver is too old for this NVML call",
    "NVML_ERROR_NOT_SUPPORTED": "not supported on this GPU",
    "NVML_ERROR_TIMEOUT": "NVML timed out",
    "NVML_ERROR_NOT_RECORDED": "not present in the recorded reading",
}

# Constants from nvml.h used by the readers (tests check them against pynvml).
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 0, 1
NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC = 0, 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 0, 1
NVML_NVLINK_MAX_LINKS = 18  # links probed; NVML defines up to 36 but current SXM boards have at most 18
NVLINK_ERROR_COUNTERS = {"replay": 0, "recovery": 1, "crc_flit": 2, "crc_data": 3}
NVML_EVENT_TYPE_XID_CRITICAL_ERROR = 0x8
NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR = 0x2


class NvmlCallError(Exception):
    """An NVML call failed; ``name`` is the NVML error name, ``str()`` a sentence for people."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(describe_error(name))


def describe_error(name: str) -> str:
    return SENTENCES.get(name, f"NVML error {name}")


class NvmlSource(Protocol):
    def call(self, fn: str, *args: int) -> Any: ...


def call_key(fn: str, args: tuple[int, ...]) -> str:
    """``nvmlDeviceGetName(0)``: the key a call is recorded under (device handles written as GPU indices)."""
    return f"{fn}({','.join(str(a) for a in args)})"


def _plain(value: Any) -> Any:
    """Turn what pynvml returns (bytes, ctypes structures, tuples) into JSON values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "_fields_"):
        return {name: _plain(getattr(value, name)) for name, *_ in value._fields_ if name != "version"}
    return value


class LiveNvml:
    """pynvml, recording every call into ``self.calls``. Device functions take the GPU index as first argument."""

    def __init__(self) -> None:
        self.calls: dict[str, Any] = {}
        self._pynvml = None
        self._handles: dict[int, Any] = {}

    def init(self) -> None:
        """nvmlInit; raises NvmlCallError (LIBRARY_NOT_FOUND without a driver, ...)."""
        try:
            import pynvml
        except ImportError:
            raise NvmlCallError("NVML_ERROR_LIBRARY_NOT_FOUND") from None
        self._pynvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlCallError(ERROR_NAMES.get(exc.value, f"NVML_ERROR_{exc.value}")) from None

    def shutdown(self) -> None:
        if self._pynvml is not None:
            try:
                self._pynvml.nvmlShutdown()
            except self._pynvml.NVMLError:
                pass

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._pynvml.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def raw(self, fn: str, *args: Any) -> Any:
        """Call a pynvml function unrecorded, with the device index turned into a handle (events use it)."""
        func = getattr(self._pynvml, fn)
        if fn.startswith("nvmlDevice") and args:
            args = (self._handle(args[0]), *args[1:])
        return func(*args)

    def call(self, fn: str, *args: int) -> Any:
        key = call_key(fn, args)
        log.debug("nvml %s", key)
        try:
            if not hasattr(self._pynvml, fn):
                raise NvmlCallError("NVML_ERROR_FUNCTION_NOT_FOUND")
            value = _plain(self.raw(fn, *args))
        except self._pynvml.NVMLError as exc:
            name = ERROR_NAMES.get(exc.value, f"NVML_ERROR_{exc.value}")
            self.calls[key] = {"error": name}
            raise NvmlCallError(name) from None
        except NvmlCallError as exc:
            self.calls[key] = {"error": exc.name}
            raise
        self.calls[key] = value
        return value


class ReplayNvml:
    """Answers calls from a recorded ``{key: value | {"error": NAME}}`` mapping."""

    def __init__(self, calls: dict[str, Any]) -> None:
        self.calls = calls

    def call(self, fn: str, *args: int) -> Any:
        key = call_key(fn, args)
        if key not in self.calls:
            raise NvmlCallError("NVML_ERROR_NOT_RECORDED")
        value = self.calls[key]
        if isinstance(value, dict) and set(value) == {"error"}:
            raise NvmlCallError(value["error"])
        return value


# ----------------------------------------------------------------------------- readers


class _Reader:
    """Wraps a source: a failed call gives ``n/a`` and, unless merely unsupported, a sentence in ``errors``."""

    QUIET = {
        "NVML_ERROR_NOT_SUPPORTED",
        "NVML_ERROR_NOT_RECORDED",
        "NVML_ERROR_FUNCTION_NOT_FOUND",
        "NVML_ERROR_INVALID_ARGUMENT",
    }

    def __init__(self, source: NvmlSource) -> None:
        self.source = source
        self.errors: list[dict[str, str]] = []

    def get(self, fn: str, *args: int, convert: Callable[[Any], Any] | None = None) -> Any:
        try:
            value = self.source.call(fn, *args)
        except NvmlCallError as exc:
            if exc.name not in self.QUIET:
                self.errors.append({"call": call_key(fn, args), "error": exc.name, "reason": str(exc)})
            return NA
        return convert(value) if convert else value

    def first(self, calls: list[tuple[str, tuple[int, ...]]]) -> Any:
        """The first call that answers (newer NVML names first, older ones as fallback)."""
        for fn, args in calls:
            try:
                return self.source.call(fn, *args)
            except NvmlCallError:
                continue
        return NA


def read_system(source: NvmlSource) -> dict[str, Any]:
    """Driver, CUDA driver and NVML versions and the GPU count."""
    r = _Reader(source)
    cuda = r.get("nvmlSystemGetCudaDriverVersion_v2")
    return {
        "driver_version": r.get("nvmlSystemGetDriverVersion"),
        "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else NA,
        "nvml_version": r.get("nvmlSystemGetNVMLVersion"),
        "gpu_count": r.get("nvmlDeviceGetCount"),
        "errors": r.errors,
    }


def read_gpu(source: NvmlSource, index: int) -> dict[str, Any]:
    """Inventory and current state of one GPU: identity, memory, ECC mode, PCIe, NVLink, clocks, power, counters."""
    r = _Reader(source)
    mem = r.get("nvmlDeviceGetMemoryInfo", index)
    ecc_mode = r.get("nvmlDeviceGetEccMode", index)
    gpu = {
        "index": index,
        "name": r.get("nvmlDeviceGetName", index),
        "uuid": r.get("nvmlDeviceGetUUID", index),
        "serial": r.get("nvmlDeviceGetSerial", index),
        "vbios": r.get("nvmlDeviceGetVbiosVersion", index),
        "memory_total_bytes": mem["total"] if isinstance(mem, dict) else NA,
        "memory_used_bytes": mem["used"] if isinstance(mem, dict) else NA,
        "ecc_mode": {"current": _enabled(ecc_mode[0]), "pending": _enabled(ecc_mode[1])}
        if isinstance(ecc_mode, list)
        else NA,
        "clocks_mhz": {
            "sm": r.get("nvmlDeviceGetClockInfo", index, NVML_CLOCK_SM),
            "memory": r.get("nvmlDeviceGetClockInfo", index, NVML_CLOCK_MEM),
            "max_sm": r.get("nvmlDeviceGetMaxClockInfo", index, NVML_CLOCK_SM),
            "max_memory": r.get("nvmlDeviceGetMaxClockInfo", index, NVML_CLOCK_MEM),
        },
        "power_limit_w": r.get("nvmlDeviceGetEnforcedPowerLimit", index, convert=_milli),
        "numa_node": r.get("nvmlDeviceGetNumaNodeId", index),
    }
    counters = read_counters(source, index)
    gpu["errors"] = r.errors + counters.pop("errors")
    gpu.update(counters)
    return gpu


def read_counters(source: NvmlSource, index: int) -> dict[str, Any]:
    """What can change under load: ECC counts, remapped rows, retired pages, NVLink state and errors,
    clock-event reasons, PCIe link (it trains down when idle), temperature and power draw."""
    r = _Reader(source)
    ecc = {
        scope: {
            kind: r.get("nvmlDeviceGetTotalEccErrors", index, kind_code, scope_code)
            for kind, kind_code in (
                ("corrected", NVML_MEMORY_ERROR_TYPE_CORRECTED),
                ("uncorrected", NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
            )
        }
        for scope, scope_code in (("volatile", NVML_VOLATILE_ECC), ("aggregate", NVML_AGGREGATE_ECC))
    }
    rows = r.get("nvmlDeviceGetRemappedRows", index)
    reasons = r.first(
        [("nvmlDeviceGetCurrentClocksEventReasons", (index,)), ("nvmlDeviceGetCurrentClocksThrottleReasons", (index,))]
    )
    return {
        "ecc_errors": ecc,
        "remapped_rows": dict(zip(("correctable", "uncorrectable", "pending", "failure"), rows))
        if isinstance(rows, list)
        else NA,
        "retired_pages": {
            "single_bit_multiple": r.get(
                "nvmlDeviceGetRetiredPages",
                index,
                NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
                convert=len,
            ),
            "double_bit": r.get(
                "nvmlDeviceGetRetiredPages", index, NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR, convert=len
            ),
            "pending": r.get("nvmlDeviceGetRetiredPagesPendingStatus", index, convert=bool),
        },
        "nvlinks": read_nvlinks(r, index),
        "clock_event_reasons": reasons,
        "pcie": read_pcie(r, index),
        "temperature_c": r.get("nvmlDeviceGetTemperature", index, NVML_TEMPERATURE_GPU),
        "power_w": r.get("nvmlDeviceGetPowerUsage", index, convert=_milli),
        "errors": r.errors,
    }


def read_pcie(r: _Reader, index: int) -> dict[str, Any]:
    """Current and maximum PCIe generation and width (current ones train down when the link idles)."""
    return {
        "current_generation": r.get("nvmlDeviceGetCurrPcieLinkGeneration", index),
        "max_generation": r.get("nvmlDeviceGetMaxPcieLinkGeneration", index),
        "current_width": r.get("nvmlDeviceGetCurrPcieLinkWidth", index),
        "max_width": r.get("nvmlDeviceGetMaxPcieLinkWidth", index),
    }


def read_pcie_under_load(source: NvmlSource, index: int) -> dict[str, Any]:
    """The PCIe link read while host<->device copies run (the only reading whose generation means something)."""
    return read_pcie(_Reader(source), index)


def read_nvlinks(r: _Reader, index: int) -> list[dict[str, Any]]:
    """Per link: state, version and error counters; links NVML does not know are left out."""
    links = []
    for link in range(NVML_NVLINK_MAX_LINKS):
        state = r.get("nvmlDeviceGetNvLinkState", index, link)
        if state == NA:
            continue
        links.append(
            {
                "link": link,
                "active": bool(state),
                "version": r.get("nvmlDeviceGetNvLinkVersion", index, link),
                "errors": {
                    name: r.get("nvmlDeviceGetNvLinkErrorCounter", index, link, code)
                    for name, code in NVLINK_ERROR_COUNTERS.items()
                },
            }
        )
    return links


def _enabled(value: int) -> str:
    return "enabled" if value else "disabled"


def _milli(value: int) -> float:
    return round(value / 1000.0, 1)


# ----------------------------------------------------------------------------- whole readings


def read_all(source: NvmlSource) -> dict[str, Any]:
    """System plus every GPU, from one source."""
    system = read_system(source)
    count = system["gpu_count"] if isinstance(system["gpu_count"], int) else 0
    return {"system": system, "gpus": [read_gpu(source, i) for i in range(count)]}


def parse_recording(recording: dict[str, Any]) -> dict[str, Any]:
    """A recorded reading -> ``{"available", "error", "system", "gpus": [... with "after" counters and "events"]}``."""
    if recording.get("format") != FORMAT:
        raise ValueError(f"not an NVML reading (format {recording.get('format')!r}, expected {FORMAT!r})")
    if recording.get("init_error"):
        return {"available": False, "error": describe_error(recording["init_error"]), "system": None, "gpus": []}
    reading = read_all(ReplayNvml(recording.get("before", {})))
    after = recording.get("after")
    for gpu in reading["gpus"]:
        if after is not None:
            counters = read_counters(ReplayNvml(after), gpu["index"])
            gpu["errors"] += counters.pop("errors")
            gpu["after"] = counters
        during = recording.get("during") or {}
        if any(k.startswith("nvmlDeviceGetCurrPcieLinkGeneration(" + str(gpu["index"]) + ")") for k in during):
            gpu["pcie_under_load"] = read_pcie_under_load(ReplayNvml(during), gpu["index"])
        unwatched = after is None or gpu["index"] in recording.get("events_unsupported", [])
        gpu["events"] = None if unwatched else [e for e in recording.get("events", []) if e.get("gpu") == gpu["index"]]
    return {"available": True, "error": None, **reading}


# ----------------------------------------------------------------------------- live recording around a load


class XidWatcher:
    """Critical-error (XID) and double-bit ECC events seen through NVML while the load runs."""

    def __init__(self, live: LiveNvml, count: int) -> None:
        self.live = live
        self.events: list[dict[str, int]] = []
        self.unsupported: list[int] = []
        self._set = None
        pynvml = live._pynvml
        try:
            self._set = live.raw("nvmlEventSetCreate")
        except pynvml.NVMLError as exc:
            log.debug("nvmlEventSetCreate: %s", exc)
            return
        for i in range(count):
            try:
                live.raw(
                    "nvmlDeviceRegisterEvents",
                    i,
                    NVML_EVENT_TYPE_XID_CRITICAL_ERROR | NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR,
                    self._set,
                )
            except pynvml.NVMLError as exc:
                log.debug("nvmlDeviceRegisterEvents(%d): %s", i, exc)
                self.unsupported.append(i)

    def drain(self) -> list[dict[str, int]]:
        """Every event queued so far (a zero timeout: never blocks)."""
        pynvml = self.live._pynvml
        while self._set is not None:
            try:
                data = pynvml.nvmlEventSetWait(self._set, 0)
            except pynvml.NVMLError:
                break
            try:
                gpu = pynvml.nvmlDeviceGetIndex(data.device)
            except pynvml.NVMLError:
                gpu = -1
            self.events.append({"gpu": gpu, "type": int(data.eventType), "data": int(data.eventData)})
        return self.events

    def close(self) -> None:
        if self._set is not None:
            try:
                self.live._pynvml.nvmlEventSetFree(self._set)
            except self.live._pynvml.NVMLError:
                pass
            self._set = None


Load = Callable[[list[int], Callable[[int], Any]], Any]


def record_around(load: Load | None) -> tuple[dict[str, Any], Any]:
    """Read everything, run ``load(gpu_indices, during)`` (may be None), read the counters again.

    ``during(index)`` reads that GPU's PCIe link; the load calls it while host->device copies run,
    and those calls are recorded apart (``"during"``). Returns (recording, load's result).
    Without a driver the recording holds only ``init_error`` and the load still runs (CPU figures).
    """
    live = LiveNvml()
    try:
        live.init()
    except NvmlCallError as exc:
        recording = {"format": FORMAT, "init_error": exc.name, "before": {}, "during": {}, "after": None, "events": []}
        return recording, (load([], lambda index: None) if load else None)
    try:
        reading = read_all(live)
        before, live.calls = live.calls, {}
        watcher = XidWatcher(live, len(reading["gpus"]))
        try:
            result = (
                load([g["index"] for g in reading["gpus"]], lambda index: read_pcie_under_load(live, index))
                if load
                else None
            )
            events = watcher.drain()
        finally:
            watcher.close()
        during, live.calls = live.calls, {}
        for gpu in reading["gpus"]:
            read_counters(live, gpu["index"])
        recording = {
            "format": FORMAT,
            "init_error": None,
            "before": before,
            "during": during,
            "after": live.calls,
            "events": events,
            "events_unsupported": watcher.unsupported,
        }
        return recording, result
    finally:
        live.shutdown()

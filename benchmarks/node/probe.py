"""The node-side probe: inventory, NVML readings before and after the speed tests, the figures; one JSON file.

Run on each node, by ``corral bench node`` in-process for the local machine, or through the launch
path (``python3 -m benchmarks.node.probe --out DIR/NODE.json``) on a cluster. The output is the raw
probe (format ``corral-node-probe/1``): judging happens where all nodes' probes are gathered, so a
probe recorded on a GPU machine (``corral bench node --record FILE``) can be judged again later
(``corral bench node --from FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.node import inventory, nvml_reader, speed

FORMAT = "corral-node-probe/1"
PROBE_DIR = "node"
"""Subdirectory of a run directory where each node writes <node>.json."""


def run_probe(*, quick: bool = False, host: str | None = None, root: str = "/") -> dict[str, Any]:
    """Everything about this node, unjudged. Never raises for a missing driver, torch or sysfs file."""
    # NVML numbers GPUs in PCI bus order; make CUDA agree so speed figures land on the right GPU.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    t0 = time.perf_counter()
    host_info = inventory.host_inventory(root)
    load = None if quick else speed.measure
    recording, figures = nvml_reader.record_around(load)
    return {
        "format": FORMAT,
        "host": host or os.environ.get("CORRAL_NODE") or socket.gethostname(),
        "hostname": socket.gethostname(),
        "quick": quick,
        "started_unix": round(time.time() - (time.perf_counter() - t0), 1),
        "nvml": recording,
        "host_info": host_info,
        "speed": figures,
        "seconds": round(time.perf_counter() - t0, 2),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def load_probe(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw probe -> the same with its NVML recording parsed (what judge.judge_node takes)."""
    if raw.get("format") != FORMAT:
        raise ValueError(f"not a node probe (format {raw.get('format')!r}, expected {FORMAT!r})")
    return {**raw, "nvml": nvml_reader.parse_recording(raw["nvml"])}


def default_out() -> Path:
    run_dir, node = os.environ.get("CORRAL_RUN_DIR"), os.environ.get("CORRAL_NODE")
    if not run_dir or not node:
        raise SystemExit(
            "probe: give --out FILE, or run it through the launch path (CORRAL_RUN_DIR and CORRAL_NODE unset)"
        )
    return Path(run_dir) / PROBE_DIR / f"{node}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        help="File to write the probe JSON to (default: $CORRAL_RUN_DIR/node/$CORRAL_NODE.json, "
        "as set by the launch path).",
    )
    parser.add_argument("--quick", action="store_true", help="Inventory and health only, no speed tests.")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out()
    probe = run_probe(quick=args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(probe, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)  # readers never see half a file
    print(f"node probe written to {out} in {probe['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

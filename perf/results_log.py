"""One file per measurement in docs/results/, each run a dated entry inside it.

A measurement file (``docs/results/<measurement>.json``) reads::

    {"schema": "corral-results/1", "measurement": "what is measured, against what",
     "script": "perf/NAME.py", "log": "NAME.md" (the narrative, optional),
     "runs": [{"id": "2026-12-05/1", "date": "2026-12-05", "time": "09:12 UTC",
               "command": "python -m perf.NAME ...", "conditions": "what the machine was doing",
               "machine": {"cores": 2, "load_average": [..]}, "result": {what the script measured}}]}

Runs are appended, oldest first; ``id`` is the date and the run's number on that date, so a run can
be named (``FILE@2026-11-23/2``, see ``select_runs``). Every perf script that records figures calls
``append_run`` with its ``--json``/``--out`` path instead of writing a file of its own, so a re-run is
one more entry in the same file, never a new ``_run2`` file beside it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

SCHEMA = "corral-results/1"


def current_command(module: str, argv: list[str] | None = None) -> str:
    """The command line that reproduces this run: ``python -m perf.NAME`` and the arguments given, or, for a
    torchrun worker, ``torchrun ... -m perf.NAME`` with its processes per node and node count."""
    args = sys.argv[1:] if argv is None else argv
    if "LOCAL_WORLD_SIZE" in os.environ and "WORLD_SIZE" in os.environ:
        local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
        nodes = ["--standalone"] if world == local else ["--nnodes", str(world // max(local, 1))]
        return shlex.join(["torchrun", *nodes, "--nproc-per-node", str(local), "-m", module, *args])
    return shlex.join(["python", "-m", module, *args])


def machine_state() -> dict[str, Any]:
    """What a figure taken on a shared machine must carry: its cores and its load when the run ended."""
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def read(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a measurement file (schema {SCHEMA!r}); see perf/results_log.py")
    return data


def next_id(runs: list[dict[str, Any]], date: str) -> str:
    return f"{date}/{sum(1 for r in runs if r['date'] == date) + 1}"


def append_run(
    path: Path,
    result: dict[str, Any],
    *,
    measurement: str,
    script: str,
    command: str,
    conditions: str = "",
    now: float | None = None,
) -> dict[str, Any]:
    """Append one dated run to the measurement file at ``path`` (created with its header if absent); returns the entry.

    The file is replaced atomically, so an interrupted run never leaves half a file behind.
    """
    path = Path(path)
    if path.exists():
        data = read(path)
    else:
        data = {"schema": SCHEMA, "measurement": measurement, "script": script, "runs": []}
    stamp = time.gmtime(time.time() if now is None else now)
    date = time.strftime("%Y-%m-%d", stamp)
    entry = {
        "id": next_id(data["runs"], date),
        "date": date,
        "time": time.strftime("%H:%M UTC", stamp),
        "command": command,
        "conditions": conditions,
        "machine": machine_state(),
        "result": result,
    }
    data["runs"].append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"run {entry['id']} appended to {path}", file=sys.stderr)
    return entry


def select_runs(spec: str) -> list[dict[str, Any]]:
    """``FILE`` (every run) or ``FILE@ID[,ID...]`` (those runs) of a measurement file: the run entries."""
    path, _, ids = spec.partition("@")
    runs = read(Path(path))["runs"]
    if not ids:
        return runs
    wanted = ids.split(",")
    by_id = {r["id"]: r for r in runs}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise ValueError(f"{path}: no run {', '.join(missing)} (runs: {', '.join(by_id)})")
    return [by_id[i] for i in wanted]


def latest_result(path: Path) -> dict[str, Any]:
    """The newest run's result in a measurement file."""
    runs = read(path)["runs"]
    if not runs:
        raise ValueError(f"{path}: no runs recorded")
    return runs[-1]["result"]


def add_conditions_argument(parser: Any) -> None:
    """``--conditions TEXT``: what the machine was doing (shared, loaded, quiet), stored with the run."""
    parser.add_argument(
        "--conditions",
        default="",
        help="what the machine was doing during the run (e.g. 'shared, other test suites running'); stored with it",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m perf.results_log FILE RESULT.json --command CMD``: append a result written by a product command.

    For figures that a corral command writes itself (``corral bench allreduce --json-out R.json``):
    the result goes into its measurement file as one more dated run, like the perf scripts' own.
    """
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="the measurement file (docs/results/NAME.json)")
    p.add_argument("result", type=Path, help="the JSON the command wrote")
    p.add_argument("--command", required=True, help="the command that produced it, as typed")
    p.add_argument("--measurement", default="", help="what is measured (only for a new file)")
    p.add_argument(
        "--script", default="", help="what produces it (only for a new file; default: the command's first words)"
    )
    add_conditions_argument(p)
    args = p.parse_args(argv)
    if not args.file.exists() and not args.measurement:
        p.error(f"{args.file} does not exist yet: say what it measures with --measurement")
    result = json.loads(args.result.read_text(encoding="utf-8"))
    script = args.script or " ".join(shlex.split(args.command)[:3])
    append_run(
        args.file,
        result,
        measurement=args.measurement,
        script=script,
        command=args.command,
        conditions=args.conditions,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

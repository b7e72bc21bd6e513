"""The volume benchmark as a process of its own: what each node runs (``-c``), and what tests run.

    python -m benchmarks.volume.worker PATH --size 1G --mode seqwrite,seqread --out result.json

Progress goes to stderr, the result document to ``--out`` (default
``$CORRAL_RUN_DIR/volume/<node>.json`` when launched by corral). Exit status: 0 done, 2 bad
input (message on stderr), 1 failed, 128+N when stopped by signal N (its files removed).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

RESULT_SUBDIR = "volume"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.volume.worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path")
    p.add_argument("--size", default="1G")
    p.add_argument("--bs", default="1M")
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--iodepth", type=int, default=8)
    p.add_argument("--mode", default="seqwrite,seqread,randread,randwrite")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--direct", dest="direct", action="store_true", default=True)
    p.add_argument("--buffered", dest="direct", action="store_false")
    p.add_argument("--limit-mibps", type=float, default=None)
    p.add_argument("--compare-fio", action="store_true")
    p.add_argument("--node", default=None, help="Name in the results (default: $CORRAL_NODE or the host name).")
    p.add_argument(
        "--out", default=None, help="Result JSON file (default: $CORRAL_RUN_DIR/volume/<node>.json, else stdout)."
    )
    p.add_argument("--tick", type=float, default=1.0, help=argparse.SUPPRESS)
    return p


def plan_from_args(a: argparse.Namespace):
    from benchmarks.volume.plan import build_plan

    return build_plan(
        a.path,
        size=a.size,
        bs=a.bs,
        jobs=a.jobs,
        iodepth=a.iodepth,
        modes=a.mode,
        duration_s=a.duration,
        direct=a.direct,
        limit_mibps=a.limit_mibps,
        compare_fio=a.compare_fio,
    )


def default_out(node: str) -> Path | None:
    run_dir = os.environ.get("CORRAL_RUN_DIR")
    return Path(run_dir) / RESULT_SUBDIR / f"{node}.json" if run_dir else None


def main(argv: list[str] | None = None) -> int:
    from benchmarks.volume.run import run_plan
    from benchmarks.volume.target import Interrupted
    from launcher.errors import CorralError

    a = parser().parse_args(argv)
    node = a.node or os.environ.get("CORRAL_NODE") or socket.gethostname()

    def say(line: str) -> None:
        print(f"corral-volume[{node}]: {line}", file=sys.stderr, flush=True)

    try:
        doc = run_plan(plan_from_args(a), node=node, say=say, tick_s=a.tick)
    except Interrupted as exc:
        say(f"{exc}; test files removed")
        return exc.exit_code
    except KeyboardInterrupt:
        say("interrupted; test files removed")
        return 130
    except CorralError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    text = json.dumps(doc, indent=2) + "\n"
    out = Path(a.out) if a.out else default_out(node)
    if out is None or str(out) == "-":
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
        say(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

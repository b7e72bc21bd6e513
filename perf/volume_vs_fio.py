"""corral's volume engine against fio, same parameters, same file, same session.

    python -m perf.volume_vs_fio --dir /var/tmp --size 1G --reps 5 --json docs/results/volume-vs-fio.json   # appends a dated run

For each repetition and mode, corral's two engines and two fio baselines run back to back on
the same file, the order reversed every other repetition (a run may pay for the previous one's
writeback). corral ``aio`` (kernel AIO, the default) is compared with fio ``libaio`` at the same
iodepth and numjobs (what ``--compare-fio`` runs); corral ``threads`` (the fallback, one
blocking request per thread) with fio ``libaio`` and with fio ``psync`` using one job per
corral thread (the engine that works like it). Figures are medians of per-repetition ratios;
the machine is shared and noisy, so single runs mean little. On a shared machine run it with
real-time priority (``chrt -r 1 python -m perf.volume_vs_fio``; fio inherits it), so that
other work on the cores does not decide who wins: the JSON records the scheduling policy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.volume import aio, engine, fio
from benchmarks.volume.plan import ModeSpec, build_plan, fio_argv
from benchmarks.volume.target import check_free_space, private_workdir, signals_raise
from perf import results_log


def fio_psync_argv(spec: ModeSpec, filename: str) -> list[str]:
    """fio with one synchronous job per corral thread (``jobs*iodepth`` jobs at depth 1)."""
    argv = fio_argv(replace(spec, jobs=spec.threads, iodepth=1), filename)
    return [a.replace("--ioengine=libaio", "--ioengine=psync") for a in argv]


def metric(spec: ModeSpec) -> str:
    return "iops" if spec.is_random else "mib_per_s"


def run_corral(spec: ModeSpec, file: Path, eng: str) -> dict:
    if spec.mode == "seqwrite":
        engine.create_file(file, spec.size)
    r = engine.run_mode(spec, file, tick_s=3600, engine=eng)
    return {"mib_per_s": r.mib_per_s, "iops": r.iops}


def run_fio(spec: ModeSpec, file: Path, psync: bool) -> dict:
    if spec.mode == "seqwrite" and file.exists():
        file.unlink()
    argv = (fio_psync_argv if psync else fio_argv)(spec, str(file))
    res = fio.parse_fio_json(fio.run_fio(argv), spec.mode)
    return {"mib_per_s": res.mib_per_s, "iops": res.iops}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--size", default="1G", help="file size; sequential modes make one pass over it")
    ap.add_argument("--bs", default="1M")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--iodepth", type=int, default=8)
    ap.add_argument("--rand-seconds", type=float, default=3.0, help="duration of each random-mode run")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--modes", default="seqwrite,seqread,randread,randwrite")
    ap.add_argument("--json", type=Path, default=None, help="measurement file to append this run to")
    results_log.add_conditions_argument(ap)
    ap.add_argument("--plot", default=None, help="bar chart of the median ratios (PNG)")
    ap.add_argument(
        "--replot", type=Path, default=None, help="only draw --plot from the newest run in this --json file"
    )
    a = ap.parse_args(argv)
    if a.replot:
        plot_summary(results_log.latest_result(a.replot), Path(a.plot or "volume_vs_fio.png"))
        return 0

    plan = build_plan(a.dir, size=a.size, bs=a.bs, jobs=a.jobs, iodepth=a.iodepth, modes=a.modes)
    specs = [replace(m, duration_s=a.rand_seconds) if m.is_random else m for m in plan.modes]
    check_free_space(a.dir, plan.required_bytes)
    contenders = {
        "corral_aio": lambda spec: run_corral(spec, file, "aio"),
        "corral_threads": lambda spec: run_corral(spec, file, "threads"),
        "fio_libaio": lambda spec: run_fio(spec, file, False),
        "fio_psync": lambda spec: run_fio(spec, file, True),
    }
    if not aio.available():
        del contenders["corral_aio"]
    pairs = [("corral_aio", "fio_libaio"), ("corral_threads", "fio_libaio"), ("corral_threads", "fio_psync")]
    pairs = [p for p in pairs if p[0] in contenders]
    rows: dict[str, dict[str, list[float]]] = {
        m.mode: {k: [] for k in [*contenders, *(f"{a}/{b}" for a, b in pairs)]} for m in specs
    }
    t_start = time.time()
    with signals_raise(), private_workdir(a.dir) as wd:
        file = wd / "data.bin"
        engine.create_file(file, plan.size)
        engine.run_mode(ModeSpec("seqwrite", 1 << 20, 1, 8, plan.size, True), file, tick_s=3600)
        for rep in range(a.reps):
            for spec in specs:
                key = metric(spec)
                order = list(contenders)
                if rep % 2:
                    order.reverse()
                # psync with one job per thread would write the whole file once per job in a sequential mode
                got = {name: contenders[name](spec)[key] for name in order if spec.is_random or name != "fio_psync"}
                for name, v in got.items():
                    rows[spec.mode][name].append(v)
                for x, y in pairs:
                    if x in got and y in got:
                        rows[spec.mode][f"{x}/{y}"].append(got[x] / got[y])
                print(
                    f"rep {rep} {spec.mode:9s} {key:9s} " + "  ".join(f"{n} {v:9.1f}" for n, v in got.items()),
                    file=sys.stderr,
                    flush=True,
                )
    summary = []
    for spec in specs:
        r = rows[spec.mode]
        summary.append(
            {
                "mode": spec.mode,
                "metric": metric(spec),
                "bs_bytes": spec.bs,
                "jobs": spec.jobs,
                "iodepth": spec.iodepth,
                "direct": spec.direct,
                "size_bytes": spec.size,
                "duration_s": spec.duration_s,
                "median": {k: statistics.median(v) if v else None for k, v in r.items()},
                "runs": r,
            }
        )
    names = list(contenders)
    ratio_names = [f"{x}/{y}" for x, y in pairs]
    print(
        "| mode | metric | " + " | ".join(names) + " | " + " | ".join(n.replace("/", " ÷ ") for n in ratio_names) + " |"
    )
    print("|---|---|" + "---:|" * (len(names) + len(ratio_names)))
    for s_ in summary:
        med = s_["median"]
        cell = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
        print(
            f"| {s_['mode']} | {s_['metric']} | "
            + " | ".join(cell(med[n], ".0f") for n in names)
            + " | "
            + " | ".join(cell(med[n], ".2f") for n in ratio_names)
            + " |"
        )
    if a.json:
        policy = {os.SCHED_OTHER: "normal", os.SCHED_RR: "real-time round robin", os.SCHED_FIFO: "real-time fifo"}.get(
            os.sched_getscheduler(0), "other"
        )
        meta = {
            "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
            "scheduling": policy,
            "load_average_at_end": os.getloadavg(),
            "reps": a.reps,
            "seconds": time.time() - t_start,
        }
        results_log.append_run(
            a.json,
            {"meta": meta, "summary": summary},
            measurement="corral bench volume's engine against fio, same file, same modes",
            script="perf/volume_vs_fio.py",
            command=results_log.current_command("perf.volume_vs_fio", argv),
            conditions=a.conditions,
        )
    if a.plot:
        plot_summary({"summary": summary}, Path(a.plot))
    return 0


def plot_summary(doc: dict, out: Path) -> None:
    """Median corral ÷ fio per mode and pairing, with the bars of the performance bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = doc["summary"]
    pairs = [k for k in summary[0]["median"] if "/" in k]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(pairs)
    for j, pair in enumerate(pairs):
        xs = [i + j * width for i in range(len(summary))]
        ys = [s["median"][pair] or 0 for s in summary]
        ax.bar(xs, ys, width, label=pair.replace("/", " ÷ "))
    ax.set_xticks([i + width * (len(pairs) - 1) / 2 for i in range(len(summary))], [s["mode"] for s in summary])
    for y, style in ((1.0, "-"), (0.95, "--"), (0.90, ":")):
        ax.axhline(y, color="grey", linestyle=style, linewidth=0.8)
    ax.set_ylabel("median ratio (throughput or IOPS)")
    ax.set_title("corral ÷ fio, same parameters, same file, same session")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    from benchmarks.volume.target import Interrupted

    try:
        sys.exit(main())
    except Interrupted as exc:
        print(f"{exc}; test files removed", file=sys.stderr)
        sys.exit(exc.exit_code)

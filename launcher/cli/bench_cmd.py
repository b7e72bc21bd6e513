"""``corral bench``: collective bandwidth, network, volume and node acceptance benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from launcher.cli.clusters import cluster_excluding, say_left_out
from launcher.cli.common import (
    ClusterOpt,
    ExcludeFromOpt,
    ExcludeOpt,
    JsonOpt,
    JsonOutOpt,
)
from launcher.cli.output import json_target

app = typer.Typer(help="Benchmark nodes: all-reduce bandwidth, network, storage volume, GPUs.", no_args_is_help=True)


@app.command("allreduce")
def allreduce(
    cluster: Optional[Path] = ClusterOpt,
    nproc_per_node: Optional[int] = typer.Option(
        None, "--nproc-per-node", help="Processes per node (default: GPUs, or 2 on CPU)."
    ),
    min_bytes: str = typer.Option("8", "-b", "--minbytes", help="Smallest message size (K/M/G binary suffixes)."),
    max_bytes: str = typer.Option("64M", "-e", "--maxbytes", help="Largest message size."),
    factor: int = typer.Option(2, "-f", "--stepfactor", help="Multiply the size by this between rows."),
    iters: int = typer.Option(20, "-n", "--iters", help="Timed iterations per size."),
    warmup: int = typer.Option(5, "-w", "--warmup-iters", help="Untimed iterations per size."),
    dtype: str = typer.Option(
        "float",
        "-d",
        "--datatype",
        help="float, half, bfloat16, double, int8, uint8, int32, int64 (or fp16, fp32, bf16...).",
    ),
    op: Literal["sum", "prod", "min", "max", "avg"] = typer.Option(
        "sum", "-o", "--op", help="Reduction (avg needs NCCL)."
    ),
    backend: Literal["auto", "nccl", "gloo"] = typer.Option(
        "auto", "--backend", help="auto: NCCL when every node has GPUs, else gloo."
    ),
    per_iteration: bool = typer.Option(
        False,
        "--per-iteration",
        help="Also print p50/p99/CV per size and the slowest rank (on stderr, so stdout stays nccl-tests output).",
    ),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write busbw/algbw vs size as a PNG."),
    min_busbw: Optional[float] = typer.Option(
        None, "--min-busbw", help="Exit 1 when the peak busbw (GB/s) is below this."
    ),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds to wait for the benchmark before giving up."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the job that would be launched."),
    container_file: Optional[Path] = typer.Option(
        None,
        "--container",
        help="Run inside the container of this job file's `container` section (same image, mounts, devices).",
    ),
    exclude: list[str] = ExcludeOpt,
    exclude_from: Optional[Path] = ExcludeFromOpt,
) -> None:
    """All-reduce bandwidth across the cluster, in nccl-tests' table format.

    Stdout reads as nccl-tests output (tools that parse all_reduce_perf read it); the
    per-iteration statistics are in --json and, with --per-iteration, on stderr.

    Example: corral bench allreduce -c cluster.yaml -b 8 -e 1G -f 2 --json-out ar.json
    """
    import sys

    from benchmarks.allreduce import run as ar
    from benchmarks.allreduce import table as nccl_table
    from launcher.cli.output import console, write_json
    from launcher.errors import RunFailed

    cfg, left_out = cluster_excluding(cluster, exclude, exclude_from)
    say_left_out(left_out, stdout=dry_run)
    req = ar.validate(
        cfg,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        factor=factor,
        iters=iters,
        warmup=warmup,
        dtype=dtype,
        op=op,
        backend=backend,
        nproc_per_node=nproc_per_node,
    )
    name = ar.job_name()
    container = None
    if container_file is not None:
        from launcher.config.job import ContainerConfig
        from launcher.config.loading import read_yaml, validate

        data = read_yaml(container_file)
        container = validate(ContainerConfig, data.get("container", data), f"{container_file}: container")
    if dry_run:
        from launcher import api

        sys.stdout.write(api.dry_run(ar.build_job(req, name, container), cfg, name=name).text + "\n")
        sys.stdout.write(f"sizes: {' '.join(str(s) for s in req.sweep.sizes)}\n")
        return
    err = console(stderr=True)
    from launcher.cli.progress import node_states, progress

    sizes = req.sweep.sizes
    with progress(f"all-reduce on {len(cfg.nodes)} node(s), job {name}: sizes", total=len(sizes)) as update:
        started = []

        def on_poll(status) -> None:
            done = ar.sizes_done(started[0]) if started else 0
            update(completed=done, note=node_states(status))

        result = ar.run(
            req, cfg, timeout=timeout, name=name, on_start=started.append, on_poll=on_poll, container=container
        )
    if result["env"].get("backend_note"):
        err.print(f"[yellow]note:[/yellow] {result['env']['backend_note']}")
    if as_json:
        sys.stderr.write(nccl_table.render(result))
    else:
        sys.stdout.write(nccl_table.render(result))
    if per_iteration:
        sys.stderr.write("\n".join(nccl_table.per_iteration_lines(result["rows"])) + "\n")
    write_json(result, json_target(as_json, json_out))
    if plot is not None:
        from benchmarks.plots import plot_allreduce

        plot_allreduce(result, plot)
    failure = ar.min_busbw_failure(result, min_busbw)
    if failure:
        raise RunFailed(failure)
    wrong = sum(int(r["wrong"]) for r in result["rows"])
    if wrong:
        raise RunFailed(
            f"{wrong} reduced value(s) were wrong: the all-reduce corrupted data", hint="see #wrong per size above"
        )


@app.command("net")
def net(
    cluster: Optional[Path] = ClusterOpt,
    duration: float = typer.Option(10.0, "--duration", help="Seconds per pair."),
    pairs: Literal["auto", "all", "ring"] = typer.Option(
        "auto",
        "--pairs",
        help="all: every ordered pair, one at a time; ring: each node to the next, one at a time; "
        "auto: all up to 8 nodes, beyond that the ring in rounds of disjoint pairs at once (bounded time).",
    ),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write per-pair time series as a PNG."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the pairs and what runs on each end."),
    exclude: list[str] = ExcludeOpt,
    exclude_from: Optional[Path] = ExcludeFromOpt,
) -> None:
    """Point-to-point TCP throughput between nodes over their private addresses.

    Example: corral bench net -c cluster.yaml --duration 5 --pairs ring
    """
    import sys

    from benchmarks.net import plan as netbench
    from benchmarks.net import run as bn
    from launcher import api
    from launcher.cli.output import console, write_json
    from launcher.errors import RunFailed

    cfg, left_out = cluster_excluding(cluster, exclude, exclude_from)
    say_left_out(left_out, stdout=dry_run)
    err = console(stderr=True)
    if api.capabilities(cfg).places_nodes:  # Slurm: the nodes and their addresses exist only inside the job
        if dry_run:
            sys.stdout.write(bn.describe_allocation(pairs=pairs, duration=duration))
            return
        result = bn.run_in_allocation(cfg, pairs=pairs, duration=duration, say=lambda s: err.print(s, highlight=False))
    else:
        eps, plans = bn.prepare(cfg, duration=duration, pairs=pairs)
        if dry_run:
            sys.stdout.write(netbench.describe_plan(plans) + "\n")
            return
        from rich.progress import Progress

        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(f"{len(plans)} pair(s), {duration:g}s each", total=len(plans))

            def done(plan, result) -> None:
                progress.advance(task)

            result = bn.run(cfg, eps, plans, duration=duration, pairs=pairs, progress=done)
    (sys.stderr if as_json else sys.stdout).write(netbench.render(result))
    write_json(result, json_target(as_json, json_out))
    if plot is not None:
        from benchmarks.plots import plot_net

        plot_net(result, plot)
    if result["failed"]:
        raise RunFailed(f"{len(result['failed'])} pair(s) could not be measured", hint="see 'failed pair' lines above")


@app.command("volume")
def volume(
    path: Path = typer.Argument(..., help="Directory on the volume to test (files are created and removed there)."),
    cluster: Optional[Path] = ClusterOpt,
    node: Optional[list[str]] = typer.Option(
        None, "--node", metavar="NODE", help="Run on this node only (repeatable; default: every node of -c)."
    ),
    size: str = typer.Option("1G", "--size", help="Test file size (one file, shared by the modes)."),
    bs: str = typer.Option("1M", "--bs", help="Block size for sequential modes (random modes use 4K)."),
    jobs: int = typer.Option(4, "--jobs", help="Parallel jobs for random modes (sequential modes run one job)."),
    iodepth: int = typer.Option(8, "--iodepth", help="Requests in flight per job."),
    mode: str = typer.Option("seqwrite,seqread,randread,randwrite", "--mode", help="Comma-separated modes."),
    duration: Optional[float] = typer.Option(
        None, "--duration", help="Seconds per mode (default: one pass over the file)."
    ),
    direct: bool = typer.Option(
        True,
        "--direct/--buffered",
        help="O_DIRECT (default) or buffered I/O (reads after dropping the file's cached pages).",
    ),
    limit_mibps: Optional[float] = typer.Option(None, "--limit-mibps", help="Judge against this cap (e.g. 128)."),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the time series as a PNG."),
    compare_fio: bool = typer.Option(
        False, "--compare-fio", help="Also run fio with the same parameters and print corral ÷ fio."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan (modes, threads, fio command lines) and exit."
    ),
    exclude: list[str] = ExcludeOpt,
    exclude_from: Optional[Path] = ExcludeFromOpt,
) -> None:
    """Volume throughput: sequential and random I/O, throttle detection, fio comparison.

    Files go to a private subdirectory of PATH and are removed at the end, on error and on
    Ctrl-C/SIGTERM. With -c the benchmark runs on every node at once (or the --node ones)
    through the launch path, and the table adds the total of all nodes.

    Example: corral bench volume /mnt/data --size 2G --limit-mibps 128 --compare-fio
    """
    from launcher.cli.bench_volume import run_command

    code = run_command(
        path=path,
        cluster_file=cluster,
        nodes=node,
        size=size,
        bs=bs,
        jobs=jobs,
        iodepth=iodepth,
        mode=mode,
        duration=duration,
        direct=direct,
        limit_mibps=limit_mibps,
        json_out=json_target(as_json, json_out),
        plot=plot,
        compare_fio=compare_fio,
        dry_run=dry_run,
        exclude=exclude,
        exclude_from=exclude_from,
    )
    if code:
        raise typer.Exit(code)


@app.command("node")
def node(
    cluster: Optional[Path] = ClusterOpt,
    quick: bool = typer.Option(False, "--quick", help="Inventory and health only, no speed tests."),
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
    record: Optional[Path] = typer.Option(
        None, "--record", help="Also save the raw probes (every NVML call's answer) to this file."
    ),
    from_file: Optional[Path] = typer.Option(
        None, "--from", help="Judge probes saved with --record instead of probing."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what each node would run, and exit."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds to wait for every node's probe (cluster only)."),
    exclude: list[str] = ExcludeOpt,
    exclude_from: Optional[Path] = ExcludeFromOpt,
) -> None:
    """Node acceptance: GPU inventory, health counters and speed judged against the model's spec.

    Without a GPU or driver the report says so and gives CPU figures. Exit 1 when any check fails.

    Example: corral bench node -c cluster.yaml --json-out nodes.json
    """
    from benchmarks.node import run
    from benchmarks.node.report import build_report, render_table
    from launcher.cli.output import console, emit_json

    cfg, left_out = cluster_excluding(cluster, exclude, exclude_from)
    say_left_out(left_out, stdout=dry_run)
    expected = {n.label: n.gpus for n in cfg.nodes}
    if dry_run:
        name = run.job_name()
        out = console()
        if run.is_local_only(cfg):
            out.print(
                f"{cfg.nodes[0].label}: probe in this process ({'no speed tests' if quick else 'with speed tests'}); nothing is launched"
            )
            return
        plan = run.dry_run_plan(cfg, name=name, quick=quick)
        out.print(plan.text, markup=False, highlight=False)
        for n in plan.nodes:
            out.print(f"{n}: probe -> {plan.run_dir}/{run.PROBE_FILE.format(node=n)}", markup=False, highlight=False)
        return
    if from_file is not None:
        probes = run.read_probes(from_file)
    elif run.is_local_only(cfg):
        with console(stderr=True).status("probing this node" + ("" if quick else " (speed tests)")):
            probes = [run.probe_local(quick=quick, host=cfg.nodes[0].label)]
    else:
        from launcher.cli.progress import node_states, progress

        with progress(
            f"probing {len(cfg.nodes)} nodes through the launch path: nodes done", total=len(cfg.nodes)
        ) as update:

            def on_poll(status) -> None:
                update(completed=sum(n.state != "running" for n in status.nodes), note=node_states(status))

            probes = run.probe_cluster(cfg, name=run.job_name(), quick=quick, timeout=timeout, on_poll=on_poll)
    if record is not None:
        run.record_probes(probes, record)
    nodes = run.judge_probes(probes, expected)
    report = build_report(
        nodes, quick=quick or all(p.get("quick") for p in probes), cluster=str(cluster) if cluster else None
    )
    render_table(report, console(stderr=as_json))
    emit_json(report, as_json, json_out)
    if report["summary"]["status"] == "fail":
        raise typer.Exit(1)


@app.command("cluster")
def cluster_cmd(
    cluster: Optional[Path] = ClusterOpt,
    level: Literal["quick", "standard", "burn-in"] = typer.Option(
        "quick",
        "--level",
        help="quick: minutes; standard: longer runs, all pairs up to 16 nodes; burn-in: + --duration.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", metavar="DIR", help="Where report.json/.md/.html and junit.xml go (default: under the runs dir)."
    ),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", metavar="REPORT.json", help="Compare every figure with this earlier report or baseline."
    ),
    save_baseline: Optional[Path] = typer.Option(
        None, "--save-baseline", metavar="FILE", help="Write this run's figures as a baseline (only when it passes)."
    ),
    duration: Optional[float] = typer.Option(
        None, "--duration", help="Seconds of sustained load (burn-in; required there)."
    ),
    net_duration: Optional[float] = typer.Option(
        None, "--net-duration", help="Seconds per network pair (default: the level's)."
    ),
    threshold: float = typer.Option(
        0.15, "--threshold", help="A figure this share below its peers' median (and outside their spread) fails."
    ),
    baseline_threshold: float = typer.Option(
        0.10, "--baseline-threshold", help="A figure this share below the baseline's fails."
    ),
    volume_path: Optional[str] = typer.Option(
        None, "--volume-path", help="Directory on each node's volume to test (default: the cluster's runs dir)."
    ),
    volume_cap: Optional[float] = typer.Option(
        None, "--volume-cap-mibps", help="The provider's documented volume cap in MiB/s (e.g. 128): judged against it."
    ),
    min_busbw: Optional[float] = typer.Option(
        None, "--min-busbw", help="The all-node all-reduce fails (and is bisected) below this bus bandwidth, GB/s."
    ),
    skip: list[str] = typer.Option(
        [], "--skip", metavar="STEP", help="Leave out a step: node, net, allreduce, volume..."
    ),
    step_budget: list[str] = typer.Option(
        [],
        "--step-budget",
        metavar="STEP=SECONDS",
        help="Replace a step's time budget (repeatable); a step that runs out is stopped and marked incomplete.",
    ),
    exclude: list[str] = ExcludeOpt,
    exclude_from: Optional[Path] = ExcludeFromOpt,
    as_json: bool = JsonOpt,
    json_out: Optional[Path] = JsonOutOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the steps, their budgets and who is left out."),
) -> None:
    """Accept a whole cluster: node, network, all-reduce and volume benchmarks, judged and localized.

    Each node is judged against the GPU's spec, the provider's documented limits and its peers (median and MAD); a slow pair is re-tested with a node that passed, a slow all-reduce is bisected. Writes report.json (its exclude list feeds --exclude-from), report.md, report.html and junit.xml. Exit 0 all pass, 1 a node failed, 2 it could not run.

    Example: corral bench cluster -c cluster.yaml --level quick --volume-cap-mibps 128 --out acceptance/
    """
    from launcher.cli.bench_cluster import run_command

    code = run_command(
        cluster_file=cluster,
        level=level,
        out_dir=out,
        baseline=baseline,
        save_baseline=save_baseline,
        duration=duration,
        net_duration=net_duration,
        threshold=threshold,
        baseline_threshold=baseline_threshold,
        volume_path=volume_path,
        volume_cap=volume_cap,
        min_busbw=min_busbw,
        skip=skip,
        step_budget=step_budget,
        exclude=exclude,
        exclude_from=exclude_from,
        json_target=json_target(as_json, json_out),
        dry_run=dry_run,
    )
    if code:
        raise typer.Exit(code)

"""``corral demo``: the embedded default job on the embedded default cluster."""

from __future__ import annotations

import typer

from launcher import aio


def demo(
    steps: int = typer.Option(600, "--steps", help="Training steps (600 take about a minute)."),
    name: str = typer.Option("demo", "--name", help="Run name."),
) -> int:
    """Run the demo: a small model trained on 2 CPU processes on localhost, in tmux.

    Example: corral demo
    """
    from launcher.cli.common import corral_invocation
    from launcher.cli.output import console
    from launcher.config import load_cluster, load_job
    from launcher.config.loading import REPO_ROOT
    from launcher.jobs import follow, launch

    out = console()
    cluster = load_cluster(None)
    job = load_job(REPO_ROOT / "configs" / "demo.yaml")
    import os
    import time

    old = REPO_ROOT / "checkpoints" / name
    if old.is_dir() and any(old.iterdir()):  # a fresh demo each time; earlier checkpoints kept aside
        (old.parent / ".history").mkdir(exist_ok=True)
        os.replace(old, old.parent / ".history" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    with out.status("demo: preflight and start in tmux..."):
        record = launch(job, cluster, name=name, base_dir=str(REPO_ROOT), set_=[f"args.1={steps}"])
    plan = record.plan
    corral, not_on_path = corral_invocation(REPO_ROOT)
    out.print(
        f"demo running in tmux session corral-{plan.name} ({plan.nodes[0].nproc_per_node} processes, {plan.backend}); following its log:"
    )
    out.print(f"  attach while it runs: cd {REPO_ROOT} && {corral} attach {plan.name}   (detach: Ctrl-b d)")
    try:
        final = aio.run(follow(record, cluster, None, 1000, until_done=True))
    except KeyboardInterrupt:
        out.print(
            f"stopped following; the demo keeps running: cd {REPO_ROOT} && {corral} logs {plan.name} -f  /  {corral} stop {plan.name}"
        )
        return 0
    ok = final is not None and final.ok
    out.print(
        f"demo {'finished' if ok else 'FAILED'}: {', '.join(f'{n.node} {n.state} {n.exit_code}' for n in final.nodes)}"
    )
    out.print(f"  logs:        {plan.nodes[0].log_path}  (or: cd {REPO_ROOT} && {corral} logs {plan.name})")
    out.print(f"  results:     {plan.run_dir}/results/")
    out.print(f"  checkpoints: {plan.ckpt_dir}")
    out.print(f"  attach to a running job: {corral} attach NAME [--node NODE]; list jobs: {corral} ps")
    if not_on_path:
        out.print(f"  {not_on_path}")
    return 0 if ok else 1

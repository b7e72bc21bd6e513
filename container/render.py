"""Render one ContainerPlan two ways: the ``docker run`` argv and the docker SDK ``containers.run`` kwargs.

Both come from the same plan, so they cannot drift. Bind mounts use ``--mount`` (not ``-v``):
``-v`` silently creates a missing source directory as an empty root-owned one, which is exactly how
checkpoints end up somewhere nobody looks; ``--mount`` refuses a missing source.
"""

from __future__ import annotations

import csv
import io
import shlex

from container.plan import ContainerPlan, Mount


def _csv_field(text: str) -> str:
    """One CSV field as docker's --mount parser reads it (quoted when it holds a comma or quote)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()


def _mount_arg(m: Mount) -> str:
    fields = ["type=bind", f"source={m.source}", f"target={m.target}"] + (["readonly"] if m.read_only else [])
    return ",".join(_csv_field(f) for f in fields)


def _gpus_arg(gpus) -> str:
    # A device list must reach docker as "device=0,1" with the double quotes (its own CSV parsing).
    return "all" if gpus == "all" else '"device=' + ",".join(str(i) for i in gpus) + '"'


def docker_run_groups(plan: ContainerPlan, *, detach: bool = False) -> list[list[str]]:
    """The ``docker run`` argv in groups (each option with its value; the image and command last)."""
    g: list[list[str]] = [["docker", "run"], ["--name", plan.name]]
    if detach:
        g.append(["--detach"])
    if plan.init:
        g.append(["--init"])
    g += [["--label", f"{k}={v}"] for k, v in sorted(plan.labels.items())]
    g.append(["--network", plan.network])
    if plan.hostname:
        g.append(["--hostname", plan.hostname])
    g += [["--network-alias", a] for a in plan.aliases]
    g.append(["--ipc", plan.ipc])
    if plan.shm_size is not None:
        g.append(["--shm-size", str(plan.shm_size)])
    g += [["--ulimit", f"{name}={value}"] for name, value in plan.ulimits.items()]
    g += [["--cap-add", cap] for cap in plan.cap_add]
    if plan.privileged:
        g.append(["--privileged"])
    if plan.gpus is not None:
        g.append(["--gpus", _gpus_arg(plan.gpus)])
    g += [["--device", f"{d.host}:{d.container}:{d.perms}"] for d in plan.devices]
    g += [["--mount", _mount_arg(m)] for m in plan.mounts]
    if plan.user:
        g.append(["--user", plan.user])
    g.append(["--workdir", plan.workdir])
    if plan.env_file:
        g.append(["--env-file", plan.env_file])
    g += [["--env", k if v is None else f"{k}={v}"] for k, v in plan.env.items()]
    if plan.extra_args:
        g.append(list(plan.extra_args))
    g.append([plan.image, *plan.command])
    return g


def render_docker_argv(plan: ContainerPlan, *, detach: bool = False) -> list[str]:
    """The exact ``docker run`` argv; the pane runs it attached (``detach=False``) so logs flow to tmux."""
    return [arg for group in docker_run_groups(plan, detach=detach) for arg in group]


def render_shell(plan: ContainerPlan, *, detach: bool = False, multiline: bool = False) -> str:
    """The argv quoted once for copy-paste into a shell; ``multiline`` puts each option on its own line."""
    if not multiline:
        return shlex.join(render_docker_argv(plan, detach=detach))
    return " \\\n  ".join(shlex.join(group) for group in docker_run_groups(plan, detach=detach))


def render_sdk_kwargs(plan: ContainerPlan) -> dict:
    """``docker.from_env().containers.run(**kwargs)`` arguments, JSON-ready (API-style dicts, no SDK types).

    Not representable and left out: ``env_file`` (read the file into ``environment`` yourself) and
    ``extra_args`` (CLI flags); ``sdk_gaps(plan)`` names them.
    """
    kw: dict = {
        "image": plan.image,
        "command": list(plan.command),
        "name": plan.name,
        "detach": True,
        "init": plan.init,
        "labels": dict(sorted(plan.labels.items())),
        "ipc_mode": plan.ipc,
        "ulimits": [{"Name": n, "Soft": v, "Hard": v} for n, v in plan.ulimits.items()],
        "cap_add": list(plan.cap_add),
        "privileged": plan.privileged,
        "devices": [f"{d.host}:{d.container}:{d.perms}" for d in plan.devices],
        "mounts": [
            {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only} for m in plan.mounts
        ],
        "working_dir": plan.workdir,
        "environment": {k: v for k, v in plan.env.items() if v is not None},
    }
    if plan.network == "host":
        kw["network_mode"] = "host"
    else:
        kw["network"] = plan.network
        kw["hostname"] = plan.hostname
        kw["networking_config"] = {plan.network: {"Aliases": list(plan.aliases)}}
    if plan.shm_size is not None:
        kw["shm_size"] = plan.shm_size
    if plan.gpus is not None:
        req = {"Driver": "", "Capabilities": [["gpu"]]}
        req |= {"Count": -1} if plan.gpus == "all" else {"DeviceIDs": [str(i) for i in plan.gpus]}
        kw["device_requests"] = [req]
    if plan.user:
        kw["user"] = plan.user
    return kw


def sdk_gaps(plan: ContainerPlan) -> list[str]:
    """Parts of the plan the SDK kwargs cannot carry, for a warning next to them."""
    gaps = []
    if plan.env_file:
        gaps.append(f"env_file {plan.env_file}: read it into 'environment' (docker run reads it with --env-file)")
    passed = [k for k, v in plan.env.items() if v is None]
    if passed:
        gaps.append(f"environment names passed through from the caller's environment: {', '.join(passed)}")
    if plan.extra_args:
        gaps.append(f"extra_args {shlex.join(plan.extra_args)}: docker run flags with no keyword-argument form here")
    return gaps

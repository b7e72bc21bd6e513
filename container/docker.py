"""The one place corral talks to Docker: the ``docker`` CLI, argv lists only.

Why the CLI and not the SDK: the job's container runs attached in the node's tmux pane (``docker run``
in the foreground, so logs reach the pane and the run survives a dropped ssh connection), and the
same argv works on a remote node through ssh without a Docker socket forwarded. The SDK kwargs
are still rendered (``container.render.render_sdk_kwargs``) for people who drive Docker from Python.

Errors: a missing binary is ToolNotFound; a failed command is DockerError with the daemon's
stderr, and ``explain`` turns the messages people hit (no NVIDIA toolkit, memlock refused, missing
bind source, not a device, image not found) into a sentence saying what to do.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
from dataclasses import dataclass
from typing import Callable, Sequence

from container.facts import DockerFacts
from launcher.errors import ToolError, ToolNotFound

log = logging.getLogger(__name__)

Wrap = Callable[[list[str]], list[str]]
"""Turns a local argv into one that runs on the node (identity here, an ssh prefix for a remote node)."""

RLIMIT_NAMES = {"8": "memlock", "3": "stack", "7": "nofile"}

NVIDIA_HINT = (
    "the node's Docker cannot give GPUs to containers: install the NVIDIA Container Toolkit "
    "(package nvidia-container-toolkit), run `nvidia-ctk runtime configure --runtime=docker` and restart dockerd; "
    "or set container.gpus: none"
)


class DockerError(ToolError):
    """``docker`` ran and failed; ``str()`` is the daemon's message made readable."""


def explain(stderr: str) -> tuple[str, str] | None:
    """(message, hint) for a docker failure people can act on, or None when it is not one we know."""
    for pattern, make in _EXPLAINERS:
        m = re.search(pattern, stderr)
        if m:
            return make(m)
    return None


def _rlimit(m: re.Match) -> tuple[str, str]:
    name = RLIMIT_NAMES.get(m.group(1), f"type {m.group(1)}")
    return (
        f"the node refused the {name} ulimit: it is above the hard limit dockerd may grant",
        f"set container.ulimits.{name} to the node's hard limit or lower (see `ulimit -H{'l' if name == 'memlock' else 's'}` "
        f"for dockerd), or raise it (LimitMEMLOCK=infinity in dockerd's systemd unit)",
    )


_EXPLAINERS: list[tuple[str, Callable[[re.Match], tuple[str, str]]]] = [
    (r'could not select device driver "[^"]*" with capabilities: \[\[gpu\]\]',
     lambda m: ("GPUs were requested but Docker on this node has no NVIDIA runtime", NVIDIA_HINT)),
    (r"error setting rlimit type (\d+): operation not permitted", _rlimit),
    (r"bind source path does not exist: (\S+)",
     lambda m: (f"mount source {m.group(1)} does not exist on the node", "create it, or fix container.mounts")),
    (r'adding custom device "([^"]+)": not a device node',
     lambda m: (f"{m.group(1)} is not a device node", "fix container.devices (or the node's /dev/infiniband)")),
    (r"(?:No such image|Unable to find image|pull access denied|repository does not exist|manifest unknown)[^\n]*",
     lambda m: ("the image is not on the node and could not be pulled",
                "build or load it on the node (docker build / docker load), or fix container.image")),
    (r"Cannot connect to the Docker daemon[^\n]*",
     lambda m: ("the node's Docker engine is not running", "start it (systemctl start docker, or dockerd)")),
]  # fmt: skip


@dataclass
class Docker:
    """The docker CLI on one node."""

    node: str = "local"
    wrap: Wrap | None = None
    binary: str = "docker"

    def argv(self, args: Sequence[str]) -> list[str]:
        """``args`` are docker's arguments; a rendered argv that starts with "docker" is accepted as is."""
        args = list(args)
        if args[:1] == ["docker"]:
            args = args[1:]
        local = [self.binary, *args]
        return self.wrap(local) if self.wrap else local

    def run(self, args: Sequence[str], *, check: bool = True, timeout: float | None = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = self.argv(args)
        log.debug("docker on %s: %s", self.node, shlex.join(argv))
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        except FileNotFoundError:
            raise ToolNotFound("docker", hint=f"install Docker on node {self.node} (Debian: apt-get install docker.io)") from None
        except subprocess.TimeoutExpired:
            raise DockerError("docker", argv, None, f"no answer within {timeout:.0f} s on node {self.node}") from None
        if check and proc.returncode != 0:
            raise self.error(argv, proc.returncode, proc.stderr)
        return proc

    def error(self, argv: list[str], returncode: int | None, stderr: str) -> DockerError:
        known = explain(stderr)
        if known:
            message, hint = known
            err = DockerError("docker", argv, returncode, stderr, hint=hint)
            err.message = f"node {self.node}: {message}"
            return err
        err = DockerError("docker", argv, returncode, stderr)
        # docker ends its errors with "Run 'docker --help' ..."; the useful line is the one before.
        useful = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith("Run '")]
        if useful:
            err.message = f"node {self.node}: docker failed: {useful[-1].removeprefix('docker: ')}"
        return err

    # ---- queries -------------------------------------------------------------------------------

    def facts(self, images: Sequence[str] = ()) -> DockerFacts:
        info = json.loads(self.run(["info", "--format", "{{json .}}"]).stdout)
        if info.get("ServerErrors"):
            raise self.error(self.argv(["info"]), 1, "\n".join(info["ServerErrors"]))
        present = {img: self.image_present(img) for img in images}
        return DockerFacts(server_version=str(info.get("ServerVersion", "?")), runtimes=tuple(sorted(info.get("Runtimes") or {})), images=present)

    def image_present(self, image: str) -> bool:
        return self.run(["image", "inspect", "--format", "{{.Id}}", image], check=False).returncode == 0

    def pull(self, image: str, timeout: float = 1800) -> None:
        self.run(["pull", image], timeout=timeout)

    def containers(self, labels: dict[str, str]) -> list[dict]:
        """Every container (running or not) carrying all these labels, as ``docker ps`` rows."""
        args = ["ps", "--all", "--no-trunc", "--format", "{{json .}}"]
        for k, v in labels.items():
            args += ["--filter", f"label={k}={v}"]
        out = self.run(args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def inspect(self, names: Sequence[str]) -> list[dict]:
        """``docker inspect`` of the containers that exist among ``names`` (missing ones are skipped)."""
        if not names:
            return []
        proc = self.run(["container", "inspect", *names], check=False)
        try:
            return json.loads(proc.stdout or "[]")
        except json.JSONDecodeError:
            return []

    def remove(self, names: Sequence[str]) -> None:
        """Force-remove containers (SIGKILL if running); a container already gone is not an error."""
        if not names:
            return
        proc = self.run(["rm", "--force", *names], check=False)
        if proc.returncode != 0 and "No such container" not in proc.stderr:
            raise self.error(self.argv(["rm", "--force", *names]), proc.returncode, proc.stderr)

    def stop(self, names: Sequence[str], timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (docker stop)."""
        if names:
            self.run(["stop", "--time", str(int(timeout)), *names], check=False, timeout=timeout + 60)

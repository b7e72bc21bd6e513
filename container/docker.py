"""The one place corral talks to Docker: the ``docker`` CLI, argv lists only.

Why the CLI and not the SDK: the job's container runs attached in the node's tmux pane (``docker run``
in the foreground, so logs reach the pane and the run survives a dropped ssh connection), and the
same argv works on a remote node through corral's one way of reaching nodes
(``launcher.tools.ssh.run``: its ssh settings, ControlMaster, timeouts) without a Docker socket
forwarded. The queries and control actions (state by label, stop, removal, image presence, engine
facts) use the CLI too: docs/CONTAINERS.md has the measurement and the reasons.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from container.facts import DockerFacts
from launcher import aio
from launcher.config import NodeConfig, SSHConfig
from launcher.errors import ToolError, ToolNotFound
from launcher.tools import ssh

log = logging.getLogger(__name__)

LOCAL = NodeConfig(host="localhost", name="local")

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
    (
        r'could not select device driver "[^"]*" with capabilities: \[\[gpu\]\]',
        lambda m: ("GPUs were requested but Docker on this node has no NVIDIA runtime", NVIDIA_HINT),
    ),
    (r"error setting rlimit type (\d+): operation not permitted", _rlimit),
    (
        r"bind source path does not exist: (\S+)",
        lambda m: (f"mount source {m.group(1)} does not exist on the node", "create it, or fix container.mounts"),
    ),
    (
        r'adding custom device "([^"]+)": not a device node',
        lambda m: (f"{m.group(1)} is not a device node", "fix container.devices (or the node's /dev/infiniband)"),
    ),
    (
        r"(?:No such image|Unable to find image|pull access denied|repository does not exist|manifest unknown)[^\n]*",
        lambda m: (
            "the image is not on the node and could not be pulled",
            "build or load it on the node (docker build / docker load), or fix container.image",
        ),
    ),
    (
        r"Cannot connect to the Docker daemon[^\n]*",
        lambda m: ("the node's Docker engine is not running", "start it (systemctl start docker, or dockerd)"),
    ),
]


@dataclass
class Docker:
    """The docker CLI on one node: this machine by default, or a cluster node reached through
    ``launcher.tools.ssh.run`` (which runs ``localhost`` nodes locally)."""

    node: str = "local"
    target: NodeConfig = field(default_factory=lambda: LOCAL)
    ssh_cfg: SSHConfig = field(default_factory=SSHConfig)
    binary: str = "docker"

    @classmethod
    def on(cls, cluster, node: NodeConfig) -> Docker:
        """The docker CLI of a cluster node."""
        return cls(node=node.label, target=node, ssh_cfg=cluster.ssh)

    def argv(self, args: Sequence[str]) -> list[str]:
        """``args`` are docker's arguments; a rendered argv that starts with "docker" is accepted as is."""
        args = list(args)
        if args[:1] == ["docker"]:
            args = args[1:]
        return [self.binary, *args]

    async def arun(
        self, args: Sequence[str], *, check: bool = True, timeout: float | None = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run docker on the node; the CompletedProcess carries the node-side argv."""
        argv = self.argv(args)
        log.debug("docker on %s: %s", self.node, shlex.join(argv))
        try:
            done = await ssh.run(
                self.ssh_cfg,
                self.target,
                argv,
                input=None if input is None else input.encode(),
                timeout=timeout or 3600,
            )
        except ToolNotFound:
            raise ToolNotFound(
                "docker", hint=f"install Docker on node {self.node} (Debian: apt-get install docker.io)"
            ) from None
        if done.returncode == 124 and done.stderr.startswith("no answer within"):
            raise DockerError("docker", argv, None, f"no answer within {timeout:.0f} s on node {self.node}")
        if done.returncode == 127 and "not found" in done.stderr:
            raise ToolNotFound("docker", hint=f"install Docker on node {self.node} (Debian: apt-get install docker.io)")
        if not self.target.is_local and done.returncode == 255:
            raise DockerError("ssh", done.argv, 255, done.stderr, hint=f"node {self.node} must be reachable over ssh")
        proc = subprocess.CompletedProcess(argv, done.returncode, done.stdout, done.stderr)
        if check and proc.returncode != 0:
            raise self.error(argv, proc.returncode, proc.stderr)
        return proc

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float | None = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``arun`` for callers without an event loop (tests, the ``container`` commands)."""
        return aio.run(self.arun(args, check=check, timeout=timeout, input=input))

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
        return DockerFacts(
            server_version=str(info.get("ServerVersion", "?")),
            runtimes=tuple(sorted(info.get("Runtimes") or {})),
            images=present,
        )

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

    def states(self, labels: dict[str, str], node_label: str) -> list[dict]:
        """name, state, exit code, status text, image and the ``node_label`` label of every container
        carrying these labels: one ``docker ps`` (no inspect round trip)."""
        fields = ["{{.Names}}", "{{.State}}", "{{.Status}}", "{{.Image}}", '{{.Label "' + node_label + '"}}']
        args = ["ps", "--all", "--no-trunc", "--format", "\t".join(fields)]
        for k, v in labels.items():
            args += ["--filter", f"label={k}={v}"]
        return [parse_state_row(line) for line in self.run(args).stdout.splitlines() if line.strip()]

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


def parse_state_row(line: str) -> dict:
    """One row of ``Docker.states``' format; the exit code comes from the status text ("Exited (137) 2 seconds ago")."""
    name, state, status, image, node = (line.split("\t") + [""] * 5)[:5]
    m = re.match(r"Exited \((-?\d+)\)", status)
    return {
        "node": node or "?",
        "name": name,
        "state": state,
        "exit_code": int(m.group(1)) if m and state == "exited" else None,
        "status": status,
        "image": image,
    }

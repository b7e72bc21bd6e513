"""The house rules that a reader cannot see at a glance, checked on the source itself.

* Processes are started only by the choke point of their tool (docs/ARCHITECTURE.md, "Choke
  points"): an AST scan of every shipped module for subprocess, asyncio subprocesses, os.exec*,
  os.system/popen/spawn*. A new external tool gets its own module here, with the reason.
* Coroutines are run from synchronous code by ``launcher.aio.run`` alone (a Ctrl-C always interrupts).
* No shipped module imports the tests or the project's self-measurements (``perf/``), and none
  edits ``sys.path``: workers are started by module (``python -m benchmarks.volume.worker``).

The import layers themselves are import-linter contracts in pyproject.toml (``lint-imports``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("launcher", "benchmarks", "container")

CHOKE_POINTS = {
    "launcher/tools/ssh.py": "commands on nodes: ssh, or directly for localhost (quoting, clean environment, timeouts)",
    "launcher/agent/node_agent.py": "the node side of the agent: runs on the node, standard library only",
    "container/docker.py": "the docker CLI",
    "launcher/tools/slurm.py": "the Slurm clients: sbatch, squeue, scontrol, scancel, srun, sinfo (argv lists; over ssh to slurm.login when set)",
    "launcher/top/node_sampler.py": "corral top's node side, shipped to the agent: nvidia-smi and the NVML sampler process, standard library only",
    "benchmarks/volume/fio.py": "fio, run by the volume worker on its own node",
    "launcher/watchdog/pyspy.py": "py-spy dump of a rank's stack, run by the hang watchdog on its own node (standard library only)",
}
OS_SPAWNERS = {"system", "popen", "fork", "forkpty"}
ASYNC_SPAWNERS = {"create_subprocess_exec", "create_subprocess_shell"}


def shipped_modules() -> list[Path]:
    return sorted(p for pkg in SHIPPED for p in (REPO / pkg).rglob("*.py"))


def process_starts(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every way of starting a process found in ``tree``."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            hits += [
                (node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in ("subprocess", "pty")
            ]
        elif isinstance(node, ast.ImportFrom) and node.module in ("subprocess", "pty", "os", "asyncio"):
            names = {a.name for a in node.names}
            bad = names & (
                {"Popen", "run", "call", "check_call", "check_output", "spawn"}
                if node.module in ("subprocess", "pty")
                else OS_SPAWNERS | ASYNC_SPAWNERS | {n for n in names if n.startswith(("exec", "spawn"))}
            )
            hits += [(node.lineno, f"from {node.module} import {n}") for n in sorted(bad)]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, name = node.value.id, node.attr
            if owner == "os" and (name in OS_SPAWNERS or name.startswith(("exec", "spawn", "posix_spawn"))):
                hits.append((node.lineno, f"os.{name}"))
            elif owner == "asyncio" and name in ASYNC_SPAWNERS:
                hits.append((node.lineno, f"asyncio.{name}"))
            elif owner == "subprocess":
                hits.append((node.lineno, f"subprocess.{name}"))
    return hits


def test_scanner_sees_every_way_of_starting_a_process():
    src = "import subprocess\nimport os, asyncio\nfrom subprocess import Popen\nos.execvpe('a', [], {})\nos.system('x')\nasyncio.create_subprocess_exec('a')\n"
    found = {what for _, what in process_starts(ast.parse(src))}
    assert found == {
        "import subprocess",
        "from subprocess import Popen",
        "os.execvpe",
        "os.system",
        "asyncio.create_subprocess_exec",
    }


@pytest.mark.parametrize("path", shipped_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_only_choke_points_start_processes(path):
    rel = str(path.relative_to(REPO))
    if rel in CHOKE_POINTS:
        return
    hits = process_starts(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    assert not hits, (
        f"{rel} starts a process itself ({', '.join(f'line {n}: {w}' for n, w in hits)}); "
        "go through the tool's choke point (launcher.api.run_on_node / launcher.tools.ssh for commands on nodes, "
        "container/docker.py for docker), or make this module the choke point of a new tool in CHOKE_POINTS"
    )


def test_choke_points_exist():
    assert all((REPO / rel).is_file() for rel in CHOKE_POINTS), [
        rel for rel in CHOKE_POINTS if not (REPO / rel).is_file()
    ]


def test_coroutines_are_run_from_synchronous_code_only_by_launcher_aio():
    """``asyncio.run`` loses a Ctrl-C that a coroutine swallowed; ``launcher.aio.run`` does not (its docstring)."""
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in shipped_modules()
        if path != REPO / "launcher" / "aio.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.Attribute)
        and node.attr in ("run", "Runner")
        and getattr(node.value, "id", "") == "asyncio"
    ]
    assert not found, f"asyncio.run outside launcher/aio.py (use launcher.aio.run): {found}"


@pytest.mark.parametrize("path", shipped_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_modules_import_no_tests_or_perf_and_leave_sys_path_alone(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots = {node.module.split(".")[0]}
        else:
            roots = set()
        assert not roots & {"tests", "perf"}, f"{path.relative_to(REPO)}:{node.lineno} imports test or perf code"
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            parent_calls = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.value is node
                and n.func.attr in ("insert", "append")
            ]
            assert not parent_calls, (
                f"{path.relative_to(REPO)}:{node.lineno} edits sys.path; start workers with python -m"
            )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Shipped module -> the shipped modules it imports, anywhere in it (function bodies and
    ``TYPE_CHECKING`` blocks too: an import inside a function is still a dependency)."""
    paths = {module_name(p): p for p in shipped_modules()}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                # `from pkg import mod` depends on pkg.mod when that is a module, else on pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_shipped_modules():
    """A cycle means two rooms that are really one, or a piece in the wrong room (docs/ARCHITECTURE.md).
    A package's ``__init__`` that re-exports its submodules counts as the package importing them."""
    found = cycles(import_graph())
    assert not found, "import cycles (each a group of modules that import each other): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_no_module_outside_a_backend_imports_its_internals():
    """Each ``launcher/backends/<x>/`` package is its backend's own; only the registry
    (``launcher/backends/base.py``) names it, as a ``module:class`` string. Covers a new backend package too."""
    backends = sorted(p.parent.name for p in (REPO / "launcher" / "backends").glob("*/__init__.py"))
    assert {"ssh", "slurm"} <= set(backends)
    offenders = []
    for name, edges in import_graph().items():
        for target in edges:
            for b in backends:
                inside = f"launcher.backends.{b}"
                if (target == inside or target.startswith(inside + ".")) and not (
                    name == inside or name.startswith(inside + ".")
                ):
                    offenders.append(f"{name} imports {target}")
    assert not offenders, offenders

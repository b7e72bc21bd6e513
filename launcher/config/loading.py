"""Reading config files: YAML (safe_load) -> strict models, with errors people can act on.

Every problem is reported as ``path.to.field: message (got VALUE)``; YAML syntax
errors carry line and column. Nothing here raises anything but ConfigError for bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from launcher.errors import ConfigError, UserError

M = TypeVar("M", bound=BaseModel)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLUSTER_FILE = REPO_ROOT / "configs" / "local.yaml"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from a file; any failure becomes a ConfigError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = "" if p.is_absolute() else f" (looked in {Path.cwd()})"
        raise ConfigError(str(p), [f"file not found{where}"]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read: {exc}"]) from None
    return parse_yaml(text, str(p))


def parse_yaml(text: str, source: str = "<string>") -> dict[str, Any]:
    """Parse YAML text that must hold a mapping at the top."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError(source, [f"YAML syntax error at {where}{problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"YAML error: {exc}"]) from None
    if data is None:
        raise ConfigError(source, ["the file is empty; expected a mapping of settings"])
    if not isinstance(data, dict):
        raise ConfigError(source, [f"expected a mapping of settings at the top, got {type(data).__name__}"])
    return data


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _data_path(loc: tuple[Any, ...], data: Any) -> tuple[list[str], Any, bool]:
    """Split a pydantic error location into the part that exists in the input.

    pydantic adds union-member tags (``int``, ``literal['auto']``) to locations;
    they mean nothing to a person editing YAML, so keep only keys found in the data.
    Returns (path, value at the deepest real key, whether the whole loc was real).
    """
    path: list[str] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and not _looks_like_tag(part):
            path.append(part)  # a missing or unknown key: still a real field name
            return path, None, False
        else:
            continue
        path.append(str(part))
    return path, cur, True


def _looks_like_tag(part: str) -> bool:
    return "[" in part or part in {
        "int",
        "str",
        "float",
        "bool",
        "function-after",
        "function-before",
        "constrained-str",
    }


def format_validation_error(err: ValidationError, data: Any) -> list[str]:
    """One line per field: ``path: message (got VALUE)``; union alternatives are merged."""
    merged: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for e in err.errors(include_url=False):
        path, value, real = _data_path(tuple(e["loc"]), data)
        key = ".".join(path) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `corral config schema` lists the keys)"
        if msg not in merged.setdefault(key, []):
            merged[key].append(msg)
        if real and e["type"] not in ("missing", "extra_forbidden") and not isinstance(value, (dict, list)):
            got[key] = _short(value)
    lines = []
    for key, msgs in merged.items():
        line = f"{key}: {' or '.join(msgs)}"
        if key in got:
            line += f" (got {got[key]})"
        lines.append(line)
    return lines


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate a mapping against a model; a failure lists every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, format_validation_error(err, data)) from None


def load_model(model: type[M], path: str | Path) -> M:
    return validate(model, read_yaml(path), str(path))


PROJECT_MARKERS = ("runs", ".git")
"""What makes a directory the project directory of the embedded cluster (see ``project_dir``)."""


def project_dir(start: str | Path | None = None) -> Path:
    """The nearest directory, from ``start`` (the current one) upward, holding ``runs/`` or
    ``.git``; else ``start`` itself. The embedded cluster's relative paths (``./runs``,
    ``./checkpoints``, workdir ``.``) are taken from it, so every command finds the same runs
    from any subdirectory of a project, as git finds its repository."""
    here = Path(start or os.getcwd()).absolute()
    for d in (here, *here.parents):
        if any((d / m).exists() for m in PROJECT_MARKERS):
            return d
    return here


def load_cluster(path: str | Path | None = None):
    """The cluster file given with -c, or the embedded one-node localhost default.

    Relative paths in a cluster file are relative to that file's directory; those of the
    embedded default to the project directory (``project_dir``).
    """
    from launcher.config.cluster import ClusterConfig, NodeConfig

    if path is not None:
        cfg = load_model(ClusterConfig, path)
        cfg.set_base_dir(str(Path(path).absolute().parent))
        return cfg
    if DEFAULT_CLUSTER_FILE.exists():
        cfg = load_model(ClusterConfig, DEFAULT_CLUSTER_FILE)
    else:
        cfg = ClusterConfig(nodes=[NodeConfig(host="localhost")])
    cfg.set_base_dir(str(project_dir()))
    return cfg


def load_job(path: str | Path):
    """A job file; its own relative paths (``env_file``) are relative to its directory."""
    from launcher.config.job import JobConfig

    job = load_model(JobConfig, path)
    job.set_base_dir(str(Path(path).absolute().parent))
    return job


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b=value`` overrides to a raw mapping (values parsed as YAML scalars).

    Returns a new mapping; list items are addressed by index (``args.0=x``).
    """
    import copy

    out = copy.deepcopy(data)
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set max_restarts=2")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) and not raw.lstrip().startswith(("{", "[")):
            value = raw
        cur: Any = out
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            elif isinstance(cur, dict):
                cur = cur.setdefault(part, {})
            else:
                raise UserError(f"--set {key}: '{part}' is not a section that can hold keys")
        last = parts[-1]
        if isinstance(cur, list) and last.isdigit() and int(last) < len(cur):
            cur[int(last)] = value
        elif isinstance(cur, dict):
            # Environment values stay strings even when they look like numbers.
            cur[last] = value
        else:
            raise UserError(f"--set {key}: cannot set a key inside a value")
    return out

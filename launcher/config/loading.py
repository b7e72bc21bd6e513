"""Reading config files: YAML (safe_load) -> strict models, with errors people can act on.

Every problem is reported as ``path.to.field: message (got VALUE)``; YAML syntax
errors carry line and column. Nothing here raises anything but ConfigError for bad input.
"""

from __future__ import annotations

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
        raise ConfigError(str(p), ["file not found"]) from None
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
    return "[" in part or part in {"int", "str", "float", "bool", "function-after", "function-before", "constrained-str"}


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


def load_cluster(path: str | Path | None = None):
    """The cluster file given with -c, or the embedded one-node localhost default."""
    from launcher.config.cluster import ClusterConfig, NodeConfig

    if path is not None:
        return load_model(ClusterConfig, path)
    if DEFAULT_CLUSTER_FILE.exists():
        return load_model(ClusterConfig, DEFAULT_CLUSTER_FILE)
    return ClusterConfig(nodes=[NodeConfig(host="localhost")])


def load_job(path: str | Path):
    from launcher.config.job import JobConfig

    return load_model(JobConfig, path)


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

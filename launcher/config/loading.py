"""Reading config files: YAML (safe_load) -> strict models, with errors people can act on.

Every problem is reported as ``path.to.field: message (got VALUE)``; YAML syntax
errors carry line and column. Nothing here raises anything but ConfigError for bad input.
"""

from __future__ import annotations

import os
import re
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


TYPE_WORDS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
}
"""pydantic's type errors, as what a value of that type looks like in YAML."""


def _pattern_words() -> dict[str, str]:
    from launcher.config.cluster import SLURM_WORD
    from launcher.config.job import CONTAINER_PATH, NNODES_RANGE

    return {
        NNODES_RANGE.pattern: "a range MIN:MAX such as 2:4",
        CONTAINER_PATH: "an absolute path (starting with /)",
        SLURM_WORD: "one word of letters, digits and _.,:+=@-",
    }


NAME_PATTERN = re.compile(r"^\^\[A-Za-z0-9\]\[A-Za-z0-9([^\]]*)\](?:\{0,(\d+)\}|\*)\$$")
"""The names corral's configs take (jobs, sweeps, nodes, labels): ``^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`` and kin."""


def _name_pattern_words(pattern: str) -> str | None:
    m = NAME_PATTERN.match(pattern)
    if m is None:
        return None
    chars = ["letters", "digits", *(f"'{c}'" for c in m.group(1))]
    longest = f", at most {int(m.group(2)) + 1} characters" if m.group(2) else ""
    return f"a name of {', '.join(chars[:-1])} and {chars[-1]} (starting with a letter or digit{longest})"


def _accepted(e: dict[str, Any]) -> str | None:
    """What a type error's field accepts, in words; None for an error that is not about the type."""
    kind = e["type"]
    if kind in TYPE_WORDS:
        return TYPE_WORDS[kind]
    if kind == "literal_error":
        return str(e["ctx"]["expected"])
    if kind == "string_pattern_mismatch":
        pattern = str(e["ctx"]["pattern"])
        return _pattern_words().get(pattern) or _name_pattern_words(pattern) or f"text matching the pattern {pattern}"
    return None


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _model_at(model: Any, path: list[str]) -> Any:
    """The pydantic model that holds the last key of ``path`` (list indexes and dict keys pass through), or None."""
    cur = model
    for part in path[:-1]:
        if part.isdigit() or cur is None:
            continue  # a list index: the item type is the field's model, found below
        field = cur.model_fields.get(part)
        cur = _model_in(field.annotation) if field is not None else None
    return cur


def _model_in(annotation: Any) -> Any:
    """The first BaseModel class inside a type (``list[NodeConfig]``, ``SlurmConfig | None``, ...)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


SCHEMA_KINDS = {"ClusterConfig": "cluster", "JobConfig": "job"}
"""Models with a `corral config schema KIND`: the unknown-key hint names the command for the file's kind."""


def _unknown_key(path: list[str], model: Any) -> str:
    import difflib

    known = sorted(getattr(_model_at(model, path), "model_fields", {})) if model is not None else []
    close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.6) if path else []
    kind = SCHEMA_KINDS.get(getattr(model, "__name__", ""))
    where = f"`corral config schema {kind}` lists the keys" if kind else "check the spelling"
    if close:
        return f"unknown key; did you mean {close[0]}? ({where})"
    return f"unknown key ({where})" if kind else "unknown key (check the spelling)"


def format_validation_error(err: ValidationError, data: Any, model: Any = None) -> list[str]:
    """One line per field: ``path: message (got VALUE)``; union alternatives are merged.

    A wrong type reads ``path: expected A or B (got VALUE)``; an unknown key close to a known
    one of ``model`` (the validated model) says ``did you mean KEY?``.
    """
    merged: dict[str, list[str]] = {}
    accepted: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for e in err.errors(include_url=False):
        path, value, real = _data_path(tuple(e["loc"]), data)
        key = ".".join(path) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        words = _accepted(e) if e["type"] != "extra_forbidden" else None
        if e["type"] == "extra_forbidden":
            msg = _unknown_key(path, model)
        if words is not None:
            if words not in accepted.setdefault(key, []):
                accepted[key].append(words)
            merged.setdefault(key, [])
        elif msg not in merged.setdefault(key, []):
            merged[key].append(msg)
        if real and e["type"] not in ("missing", "extra_forbidden") and not isinstance(value, (dict, list)):
            got[key] = _short(value)
        elif real and words is not None and isinstance(value, (dict, list)):
            got[key] = "a list" if isinstance(value, list) else "a mapping"
    lines = []
    for key, msgs in merged.items():
        parts = ([f"expected {_either(accepted[key])}"] if accepted.get(key) else []) + msgs
        line = f"{key}: {' or '.join(parts)}"
        if key in got:
            line += f" (got {got[key]})"
        lines.append(line)
    return lines


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate a mapping against a model; a failure lists every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, format_validation_error(err, data, model)) from None


def load_model(model: type[M], path: str | Path) -> M:
    data = read_yaml(path)
    try:
        return validate(model, data, str(path))
    except ConfigError as err:
        note = wrong_kind_note(data, SCHEMA_KINDS[model.__name__]) if model.__name__ in SCHEMA_KINDS else None
        if note is None:
            raise
        raise ConfigError(err.source, [note, *err.problems]) from None


CLUSTER_MARKERS = ("nodes", "slurm")
"""Keys that only a cluster file has and that every cluster file has one of."""


def _kind_votes(data: dict[str, Any]) -> dict[str, list[str]]:
    """Per kind, the keys of ``data`` (or close misspellings: ``node`` for ``nodes``) that only that kind has."""
    import difflib

    from launcher.config.cluster import ClusterConfig
    from launcher.config.job import JobConfig

    only = {
        "cluster": set(ClusterConfig.model_fields) - set(JobConfig.model_fields),
        "job": set(JobConfig.model_fields) - set(ClusterConfig.model_fields),
    }
    votes: dict[str, list[str]] = {"cluster": [], "job": []}
    for key in map(str, data):
        exact = [kind for kind, keys in only.items() if key in keys]
        if exact:
            votes[exact[0]].append(f"'{key}'")
            continue
        # a misspelling counts for the kind whose key it is closest to ('node': 'nodes' before 'nnodes')
        best = {
            kind: max(((difflib.SequenceMatcher(None, key, k).ratio(), k) for k in sorted(keys)), default=(0.0, ""))
            for kind, keys in only.items()
        }
        kind = max(best, key=lambda k: best[k][0])
        ratio, close = best[kind]
        if ratio >= 0.75 and all(best[other][0] < ratio for other in best if other != kind):
            votes[kind].append(f"'{key}' (like '{close}')")
    return votes


def guess_kind(data: dict[str, Any]) -> tuple[str, str]:
    """Whether a mapping is a cluster or a job file, and why, for people: ``('cluster', "it has 'slurm:'")``.

    A file with ``nodes:`` or ``slurm:`` is a cluster. Otherwise its keys vote: each key (or a close
    misspelling of one) that only one kind has counts for that kind; a tie is a job.
    """
    for marker in CLUSTER_MARKERS:
        if marker in data:
            return "cluster", f"it has '{marker}:'"
    votes = _kind_votes(data)
    if len(votes["cluster"]) > len(votes["job"]):
        keys = votes["cluster"]
        what = "is a cluster key" if len(keys) == 1 else "are cluster keys"
        return "cluster", f"it has no 'nodes:' or 'slurm:', but {', '.join(keys)} {what}"
    return "job", "it has no 'nodes:' or 'slurm:'"


def wrong_kind_note(data: dict[str, Any], expected: str) -> str | None:
    """When a file given as a ``expected`` file reads as the other kind, one line saying so; else None."""
    kind, _ = guess_kind(data)
    votes = _kind_votes(data)[kind]
    if kind == expected or (kind == "job" and not votes):
        return None
    keys = ", ".join(votes) if kind == "job" else guess_kind(data)[1].removeprefix("it has ")
    where = (
        "the job argument, and the cluster file with -c" if kind == "job" else "-c, and the job file as the argument"
    )
    return f"this looks like a {kind} file, not a {expected} file ({keys}): give it as {where}"


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
    embedded default to the project directory (``project_dir``), also when it is named
    (``configs/local.yaml``, as help examples do): naming it is the same as leaving -c out.
    """
    from launcher.config.cluster import ClusterConfig, NodeConfig

    if path is not None and Path(path).resolve() != DEFAULT_CLUSTER_FILE.resolve():
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

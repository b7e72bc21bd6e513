"""Shared building blocks for the strict config models."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment too."""

    # defer_build: a model's validator is built when first used, so a command pays only for the files it reads
    # (building every config model at import was ~0.1 s of each `corral` start)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, defer_build=True)


class FileModel(StrictModel):
    """A whole config file: it remembers the directory it was read from (not a field), which
    its relative paths are taken from."""

    _base_dir: str | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> str | None:
        """The directory relative paths of this file are taken from; None when not read from a file."""
        return self._base_dir

    def set_base_dir(self, path: str | None) -> None:
        self._base_dir = path


def _scalar_to_str(value: Any) -> Any:
    # YAML turns `OMP_NUM_THREADS: 4` into an int and `DEBUG: yes` into a bool;
    # an environment only holds strings, so accept scalars and spell them as a shell would.
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_scalar_to_str)]
"""An environment variable value: a string, or a YAML scalar spelled as a string."""

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env_names(env: dict[str, str]) -> dict[str, str]:
    """Reject names a shell could not export (they would be silently dropped or break quoting)."""
    bad = [k for k in env if not ENV_NAME.match(k)]
    if bad:
        raise ValueError(
            f"invalid environment variable name(s) {bad}: use letters, digits and '_', not starting with a digit"
        )
    return env

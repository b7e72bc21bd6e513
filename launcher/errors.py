"""Typed errors that the CLI turns into one readable line and an exit code.

Exit codes follow the convention in docs/ARCHITECTURE.md: 2 for bad input
(a config, an argument, a node that cannot be used), 1 for a run that failed.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base class: ``str(err)`` is a message for people, ``exit_code`` what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UserError(CorralError):
    """Bad input: a config field, a command-line value, an unusable node. Exit 2."""

    exit_code = 2


class PreflightFailed(UserError):
    """A check before the launch failed (a node's, or the scheduler's): nothing was launched. Exit 2.

    Every backend raises a subclass of it, so callers catch one type whatever runs the job."""


class ConfigError(UserError):
    """A config file that cannot be read or does not validate; carries one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        body = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{body}")


class ToolError(CorralError):
    """An external tool (ssh, tmux, docker, torchrun, fio) failed; carries its argv and stderr."""

    def __init__(
        self, tool: str, argv: list[str], returncode: int | None, stderr: str, *, hint: str | None = None
    ) -> None:
        self.tool = tool
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr.strip()
        detail = self.stderr.splitlines()[-1] if self.stderr else f"exit status {returncode}"
        super().__init__(f"{tool} failed: {detail}", hint=hint)


class ToolNotFound(ToolError):
    """The external tool is not installed or not on PATH."""

    exit_code = 2

    def __init__(self, tool: str, *, hint: str | None = None) -> None:
        super().__init__(
            tool, [tool], None, f"{tool}: command not found", hint=hint or f"install {tool} and make sure it is on PATH"
        )


class RunFailed(CorralError):
    """A job, benchmark or check ran and failed (exit 1)."""

    exit_code = 1

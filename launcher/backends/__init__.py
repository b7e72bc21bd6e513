"""Execution backends behind one interface (``base.Backend``): ssh + tmux (``ssh/``), Slurm (``slurm/``).

The cluster file picks the backend that launches a job (``backend_for``); the run record names
the one that answers for it afterwards (``backend_of``). Each backend is one package that owns
everything of its kind; nothing outside it imports its modules (an import contract), only this
registry does, by name.
"""

from __future__ import annotations

from launcher.backends.base import (
    AttachPlan,
    Backend,
    Capabilities,
    Description,
    PreflightView,
    backend_for,
    backend_name,
    backend_named,
    backend_of,
    register,
    registered,
    unregister,
)

__all__ = [
    "AttachPlan",
    "Backend",
    "Capabilities",
    "Description",
    "PreflightView",
    "backend_for",
    "backend_name",
    "backend_named",
    "backend_of",
    "register",
    "registered",
    "unregister",
]

"""A backend for tests only: every node's ranks run as plain local processes (no ssh, no tmux).

It exists to prove the seam: it lives in this package alone and becomes a backend with one line,
``launcher.backends.register("procs", "tests.infra.procs_backend.backend:ProcsBackend")``, after
which a cluster file with ``backend: procs`` runs through ``corral launch``/``ps``/``logs``/``stop``
and passes the same contract tests as the ssh and Slurm backends (tests/test_backend_contract.py).
"""

REGISTRATION = ("procs", "tests.infra.procs_backend.backend:ProcsBackend")

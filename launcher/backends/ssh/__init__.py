"""The ssh + tmux backend: every node reached over ssh (or directly for ``localhost``), each rank
group in a tmux session that survives the launcher: ``execute`` (start, status, stop), ``logs``,
``preflight`` (verdicts from the node agents' probes), ``backend`` (the seam)."""

"""The hang watchdog (docs/WATCHDOG.md): ``judge`` (pure verdicts), ``node`` (the process beside
the job on every node), ``procs`` (``/proc``), ``pyspy`` (the py-spy choke point), ``ship`` (the
files a launch writes to a node), ``events`` (the run record's view of what it did)."""

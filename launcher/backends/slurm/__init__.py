"""The Slurm backend: a job is one batch job. ``script`` (pure sbatch script and node wrapper),
``state`` (pure parsers of scontrol/sinfo output, the Slurm -> corral state table), ``backend``
(preflight checks, submit, status, logs, stop, attach). The Slurm clients run only through
``launcher.tools.slurm``."""

"""Hyperparameter sweeps: config, trial generation, journal + lock, scheduling, the detached controller.

See docs/SWEEPS.md. Pure parts (config, generate, scheduler, journal replay, trial_job)
never touch ssh or tmux; ``backend.py`` runs trials through ``launcher.api``.
"""

"""The sweep's Optuna study: TPE asks for bayes trials, pruners judge intermediate metrics, tells close trials.

The study lives beside corral's journal in Optuna's own journal storage (a file, appended
under Optuna's open-file lock: ``O_CREAT|O_EXCL``, no symlinks, which the target cloud's
shared drives refuse), so ``optuna-dashboard`` can open it. optuna is imported only here,
and only when a sweep uses a study (``method: bayes`` or ``early_terminate``).

Order of writes, and why both journals always agree after a crash (corral's journal is the
record of what ran; the study follows it):

1. ``ask``           the study gets a RUNNING trial (params sampled for bayes);
2. journal ``start`` (with the Optuna trial number), then the launch;
3. journal ``end``   (done / failed / pruned; a pruned run is stopped after this record);
4. ``tell``          COMPLETE with the journal's metric, PRUNED, or FAIL.

Killed between 1 and 2: a RUNNING study trial no start names (an *orphan*): bayes starts it
as its next new trial, other methods mark it FAIL (it never ran). Killed between 2 and 3:
the next controller adopts or records the run, as without a study. Killed between 3 and 4:
the journal has a final result the study lacks: ``settlements`` tells it (a pruned run is
stopped again first; stopping is idempotent). Nothing is told twice: only RUNNING study
trials are told, and every tell follows its journal record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from launcher.sweep.config import SweepConfig
from launcher.sweep.journal import SweepState
from launcher.sweep.space import fixed_params, to_distributions

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

UNSTARTED = "corral_unstarted"
"""System attribute of a study trial that was asked but never started (marked FAIL by the next controller)."""
CORRAL_TRIAL = "corral_trial"
"""User attribute: the corral trial id a study trial belongs to (shown by optuna-dashboard)."""


@dataclass(frozen=True)
class Settle:
    """A tell the study still owes the journal."""

    trial: str
    number: int
    state: Literal["complete", "pruned", "fail"]
    value: Optional[float] = None
    run: Optional[str] = None
    """pruned: the run to stop (again) before telling, in case the controller died before stopping it."""


def settlements(state: SweepState, study_states: dict[int, str], retries: int) -> list[Settle]:
    """Pure: trials the journal has ended for good whose study trial is still RUNNING, and what to tell."""
    out = []
    for rec in state.trials.values():
        if rec.optuna is None or study_states.get(rec.optuna) != "RUNNING":
            continue
        s = rec.state(retries)
        if s == "done":
            metric = rec.done.metric  # type: ignore[union-attr]
            ok = metric is not None and math.isfinite(metric)
            out.append(Settle(rec.id, rec.optuna, "complete" if ok else "fail", metric if ok else None))
        elif s == "pruned":
            out.append(Settle(rec.id, rec.optuna, "pruned", rec.pruned.metric, rec.pruned.run))  # type: ignore[union-attr]
        elif s == "failed":
            out.append(Settle(rec.id, rec.optuna, "fail"))
    return out


def orphans(state: SweepState, study_states: dict[int, str]) -> list[int]:
    """Pure: RUNNING study trials that no journal start names (asked, then the controller died)."""
    named = {rec.optuna for rec in state.trials.values() if rec.optuna is not None}
    return sorted(n for n, s in study_states.items() if s == "RUNNING" and n not in named)


def disagreements(state: SweepState, trials: list[Any], retries: int) -> list[str]:
    """Where the study and the journal disagree (empty when they agree): for tests and `sweep status`.

    ``trials`` are the study's FrozenTrials. Agreement: every journal trial with an Optuna number
    has that study trial, RUNNING while the journal has it running or pending, finished as the
    journal ended it (same metric) otherwise; every study trial belongs to one journal trial, or
    was asked and never started (then FAIL with ``corral_unstarted``, or RUNNING until adopted).
    """
    by_number = {t.number: t for t in trials}
    problems, named = [], {}
    want = {"done": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "running": "RUNNING", "pending": "RUNNING"}
    for rec in state.trials.values():
        if rec.optuna is None:
            continue
        if rec.optuna in named:
            problems.append(f"Optuna trial {rec.optuna} is named by trials {named[rec.optuna]} and {rec.id}")
        named[rec.optuna] = rec.id
        t = by_number.get(rec.optuna)
        if t is None:
            problems.append(f"trial {rec.id}: Optuna trial {rec.optuna} is not in the study")
            continue
        s = rec.state(retries)
        expected = want[s]
        if s == "done" and rec.done.metric is None:  # type: ignore[union-attr]
            expected = "FAIL"
        if t.state.name != expected:
            problems.append(f"trial {rec.id}: journal says {s}, Optuna trial {t.number} is {t.state.name}")
        elif expected == "COMPLETE" and not math.isclose(t.value, rec.done.metric, rel_tol=1e-12):  # type: ignore[union-attr]
            problems.append(f"trial {rec.id}: journal metric {rec.done.metric}, Optuna value {t.value}")  # type: ignore[union-attr]
    for n, t in by_number.items():
        if n not in named and not (
            t.state.name in ("FAIL", "RUNNING") and (t.system_attrs.get(UNSTARTED) or t.state.name == "RUNNING")
        ):
            problems.append(f"Optuna trial {n} ({t.state.name}) belongs to no trial of the journal")
    return problems


def study_path(sweep_root: Path) -> Path:
    return sweep_root / "optuna.journal"


def file_storage(path: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal storage in a file, locked with its open-file lock (O_EXCL, no symlinks)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileOpenLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(_group_commit_backend(str(path), JournalFileOpenLock(str(path))))


def _group_commit_backend(path: str, lock: Any) -> Any:
    """Optuna's file backend, with one fsync per ``batch()`` instead of one per record.

    An ask writes a record per parameter and a poll a record per reported step; Optuna fsyncs each.
    In a batch each record is still appended whole under Optuna's lock and flushed; the file is
    fsynced once when the batch ends, before corral journals anything that depends on it (a crash
    inside a batch loses at most records the next controller recreates: an unstarted ask, steps
    it reports again).
    """
    from optuna.storages.journal import JournalFileBackend

    class GroupCommitFileBackend(JournalFileBackend):
        def __init__(self) -> None:
            super().__init__(path, lock_obj=lock)
            self.deferred = 0
            self.dirty = False

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            if not self.deferred:
                return super().append_logs(logs)
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            lock.acquire()
            try:
                with open(path, "ab") as f:
                    f.write(text.encode("utf-8"))
                    f.flush()
            finally:
                lock.release()
            self.dirty = True

        @contextmanager
        def batch(self) -> Iterator[None]:
            self.deferred += 1
            try:
                yield
            finally:
                self.deferred -= 1
                if not self.deferred and self.dirty:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    self.dirty = False

    return GroupCommitFileBackend()


def startup_trials(run_cap: int) -> int:
    """Random trials before TPE models the results: Optuna's 10, fewer for small sweeps (a quarter of run_cap, at least 3)."""
    return min(10, max(3, run_cap // 4))


def _resume_seed(seed: int, n_trials: int) -> int:
    # A fresh sweep samples from `seed` (reproducible); a resumed one must not replay the first draws.
    if n_trials == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{n_trials}".encode()).digest()[:4], "big")


class SweepStudy:
    """One sweep's study: ask (bayes: TPE over the mapped space), report + should-prune, tell."""

    def __init__(self, cfg: SweepConfig, storage: optuna.storages.BaseStorage | str) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cfg = cfg
        self.distributions = to_distributions(cfg.parameters) if cfg.method == "bayes" else {}
        self.fixed = fixed_params(cfg.parameters)
        direction = "minimize" if cfg.metric.goal == "minimize" else "maximize"
        self.study = optuna.create_study(
            study_name=cfg.name,
            storage=storage,
            direction=direction,
            load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(seed=cfg.seed),
            pruner=self._pruner(),
        )
        if cfg.method == "bayes":
            seed = _resume_seed(cfg.seed, len(self.study.get_trials(deepcopy=False)))
            # constant_liar: running trials count as bad guesses, so parallel asks spread out (Optuna's advice).
            # Independent TPE (Optuna's default before 5.0): on perf/sweep_bench.py's objective the multivariate one
            # stayed on a wrong categorical value for the whole budget in 2 seeds of 5, the independent one in none.
            self.study.sampler = optuna.samplers.TPESampler(
                seed=seed,
                constant_liar=(cfg.max_concurrent or 2) > 1,
                multivariate=False,
                n_startup_trials=startup_trials(cfg.run_cap or 0),
            )
        self.study_id = self.study._study_id  # Trial(study, id) needs the storage's id, which only this exposes

    def _pruner(self) -> optuna.pruners.BasePruner:
        import optuna

        et = self.cfg.early_terminate
        if et is None:
            return optuna.pruners.NopPruner()
        if et.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=et.first_milestone, max_resource=et.max_iter or "auto", reduction_factor=et.eta
            )
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=et.first_milestone, reduction_factor=et.eta)

    # ---- what the study holds ----

    def trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def states(self) -> dict[int, str]:
        return {t.number: t.state.name for t in self.trials()}

    def params_of(self, number: int) -> dict[str, Any]:
        t = self.study._storage.get_trial(self._trial_id(number))
        return {**self.fixed, **t.params}

    def _batch(self) -> AbstractContextManager[None]:
        """One fsync for the records written inside (file storage); nothing to do in memory."""
        backend = getattr(self.study._storage, "_backend", None)
        return backend.batch() if hasattr(backend, "batch") else nullcontext()

    def _trial_id(self, number: int) -> int:
        return self.study._storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    # ---- ask / report / tell ----

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new RUNNING study trial: its number and (bayes) the parameters TPE picked, constants added."""
        with self._batch():
            trial = self.study.ask(self.distributions)
        return trial.number, {**self.fixed, **trial.params}

    def label(self, number: int, corral_trial: str) -> None:
        self.study._storage.set_trial_user_attr(self._trial_id(number), CORRAL_TRIAL, corral_trial)

    def report(self, number: int, points: list[tuple[int, float]], *, until_pruned: bool = True) -> Optional[int]:
        """Report the steps the study does not have yet; the first step at which the pruner says stop, or None.

        ``until_pruned``: stop reporting at that step (a running trial); else report every point (a finished one).
        """
        import optuna

        with self._batch():
            return self._report(optuna.trial.Trial(self.study, self._trial_id(number)), points, until_pruned)

    def _report(self, trial: Any, points: list[tuple[int, float]], until_pruned: bool) -> Optional[int]:
        et = self.cfg.early_terminate
        known = trial._cached_frozen_trial.intermediate_values
        verdict = None
        for step, value in points:
            if step in known:
                continue
            trial.report(value, step)
            if et is None or (et.max_iter is not None and step >= et.max_iter):
                continue  # W&B judges no milestone at or beyond max_iter
            if step >= et.first_milestone and trial.should_prune():
                verdict = step if verdict is None else verdict
                if until_pruned:
                    break
        return verdict

    def tell(self, s: Settle) -> None:
        from optuna.trial import TrialState

        if self.study._storage.get_trial(self._trial_id(s.number)).state != TrialState.RUNNING:
            return  # told already (a tell is the last write for a trial): never twice
        if s.state == "complete":
            self.study.tell(s.number, s.value)
        elif s.state == "pruned":
            self.study.tell(s.number, state=TrialState.PRUNED)
        else:
            self.study.tell(s.number, state=TrialState.FAIL)

    def fail_unstarted(self, number: int) -> None:
        from optuna.trial import TrialState

        with self._batch():
            self.study._storage.set_trial_system_attr(self._trial_id(number), UNSTARTED, True)
            self.study.tell(number, state=TrialState.FAIL)

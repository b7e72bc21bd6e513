"""The sweep controller: holds the sweep's lock, starts trials as nodes free up, records everything in the journal.

It runs detached (in tmux on the head node, see ``detach.py``) as
``python -m launcher.sweep.controller --sweep-dir DIR [--cluster FILE] --token T``
and can be killed at any moment: a new controller replays the journal, adopts trials that
are still running, records those that ended meanwhile, and goes on. Every trial start is
journalled before the launch and every end after it is observed, so a crash can only
leave a ``start`` without an ``end``, which the next controller resolves by asking the
launch path how that run stands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from launcher.config import ClusterConfig, JobConfig
from launcher.errors import CorralError
from launcher.sweep.backend import TrialBackend
from launcher.sweep.config import Sweep, sweep_from_mapping
from launcher.sweep.generate import Trial, bayes_trial_id, generate_trials
from launcher.sweep.journal import Attempt, Journal, SweepState, TrialRecord, replay
from launcher.sweep.lock import HEARTBEAT_EVERY, LockLost, SweepLock
from launcher.sweep.metrics import best_value, metric_series, never_reported, read_reports
from launcher.sweep.paths import SweepPaths
from launcher.sweep.scheduler import StartDecision, judge_run, nodes_to_set_aside, plan_starts, sweep_over
from launcher.sweep.trial_job import build_trial_job

log = logging.getLogger(__name__)

EXIT_FINISHED, EXIT_STUCK, EXIT_REFUSED = 0, 1, 2
ASK = "+ask"
"""Id prefix of a bayes placeholder: a trial still to be asked of the study (hex ids never start with '+')."""
MAX_PARALLEL_SSH = 16
REPORT_WATCH_S = 0.05
"""early_terminate: how often, between rounds, the running trials' metrics files are checked for new reports, so a
prune is decided as each value is written, not one poll_interval later (a fast trial runs on in between)."""


def save_spec(paths: SweepPaths, sweep: Sweep) -> None:
    """Store the sweep with its job resolved inline, so a controller/status needs no other file."""
    data = sweep.config.model_dump(mode="json", exclude_none=True)
    data["job"] = sweep.job.model_dump(mode="json", exclude_none=True)
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.spec.with_name(paths.spec.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sweep": data, "source": sweep.source}, indent=2), encoding="utf-8")
    os.replace(tmp, paths.spec)


def load_spec(paths: SweepPaths) -> Sweep:
    try:
        data = json.loads(paths.spec.read_text(encoding="utf-8"))
    except FileNotFoundError:
        from launcher.errors import UserError

        raise UserError(
            f"no sweep at {paths.root}", hint="check the name and the cluster's storage.runs (-c CLUSTER)"
        ) from None
    return sweep_from_mapping(data["sweep"], data.get("source", str(paths.spec)))


class Controller:
    """One controller's life: acquire, reconcile, loop (poll, record, start), release."""

    def __init__(
        self,
        sweep: Sweep,
        cluster: ClusterConfig,
        backend: TrialBackend,
        paths: SweepPaths,
        *,
        session: Optional[str] = None,
        token: Optional[str] = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        study: Any = None,
    ) -> None:
        self.sweep, self.cluster, self.backend, self.paths = sweep, cluster, backend, paths
        self.cfg = sweep.config
        self.planned: list[Trial] = generate_trials(self.cfg)
        self.trials: list[Trial] = list(self.planned)
        self.study = study
        """The sweep's SweepStudy (bayes or early_terminate); opened by reconcile, under the lock. Tests pass an in-memory one."""
        self.adopted: dict[str, tuple[int, dict[str, Any]]] = {}
        """bayes: trials asked of the study whose start the last controller never journalled -> (Optuna number, params)."""
        self.by_id = {t.id: t for t in self.trials}
        from launcher import api
        from launcher.sweep.slots import trial_slots

        self.places_nodes = api.capabilities(cluster).places_nodes
        """The backend places each trial's nodes: the sweep's nodes are submission slots, not machines."""
        self.nodes = trial_slots(cluster, self.cfg, len(self.trials), places_nodes=self.places_nodes)
        self.journal = Journal(paths.journal)
        self.lock = SweepLock(paths.lock, sweep.name, session=session, token=token)
        self.state = SweepState()
        self.clock, self.sleep = clock, sleep
        self.preflighted: set[str] = set()
        self._last_beat = 0.0
        self._report_sizes: dict[str, int] = {}
        """early_terminate: per running run, the size of its metrics file when the pruner last judged it."""

    # ---- life cycle ----

    def run(self) -> int:
        """Run the sweep to its end; returns the process exit code. Raises LockHeld if another controller runs it."""
        self.lock.acquire()
        try:
            self._record(
                "controller", action="start", pid=os.getpid(), host=self.lock.info.host, token=self.lock.info.token
            )
            self.reconcile()
            while True:
                if self.paths.stop_request.exists():
                    self.stop_all("stopped by `corral sweep stop`")
                    self.paths.stop_request.unlink(missing_ok=True)
                    self._record("controller", action="exit", reason="stopped")
                    return EXIT_FINISHED
                over = self.step()
                if over:
                    if over == "finished":
                        self._record("finished", counts=self.counts())
                        log.info("sweep %s finished: %s", self.sweep.name, self.counts())
                        self._record("controller", action="exit", reason="finished")
                        return EXIT_FINISHED
                    log.error("sweep %s cannot go on: %s", self.sweep.name, over)
                    self._record("controller", action="exit", reason=over)
                    return EXIT_STUCK
                self.pause()
        except LockLost as exc:
            log.error("%s; this controller stops without touching the journal", exc)
            return EXIT_REFUSED
        finally:
            self.lock.release()

    def pause(self) -> None:
        """The wait between rounds. With early_terminate it is cut into short slices, and a running trial whose
        metrics file grew is judged at once: the pruner's verdict reaches the trial within a slice of its report."""
        if self.study is None or self.cfg.early_terminate is None:
            self.sleep(self.cfg.poll_interval)
            return
        slices = max(1, round(self.cfg.poll_interval / REPORT_WATCH_S))
        for _ in range(slices):
            self.sleep(self.cfg.poll_interval / slices)
            for trial, att in self.state.running():
                if self._reports_grew(att.run):
                    self._judge_progress(trial, att)

    def _reports_grew(self, run: str) -> bool:
        from launcher.report import METRICS_FILE

        try:
            size = (self.backend.run_dir(run) / METRICS_FILE).stat().st_size
        except OSError:
            return False
        grew = size != self._report_sizes.get(run)
        self._report_sizes[run] = size
        return grew

    def reload(self) -> None:
        self.state = replay(self.journal.read())

    def _record(self, ev: str, **fields: Any) -> None:
        self._beat()
        rec = self.journal.append(ev, **fields)
        self.state.apply(rec)

    def _beat(self, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._last_beat >= HEARTBEAT_EVERY:
            self.lock.heartbeat()
            self._last_beat = now

    def counts(self) -> dict[str, int]:
        from launcher.sweep.scheduler import counts

        return counts(self.trials, self.state, self.cfg.retries)

    # ---- the work ----

    def reconcile(self) -> None:
        """After (re)start: the journal's running attempts are adopted if still running, recorded if they ended."""
        self.reload()
        if self.cfg.uses_study:
            self.reconcile_study()
        for trial, att in self.state.running():
            log.info(
                "trial %s attempt %d (%s) was running when the last controller ended; checking it",
                trial.id,
                att.number,
                att.run,
            )
        self.poll_running()

    def reconcile_study(self) -> None:
        """Tell the study what the journal ended while it was not told; adopt or fail trials asked but never started."""
        from launcher.sweep.study import SweepStudy, file_storage, orphans, settlements, study_path

        if self.study is None:
            self.study = SweepStudy(self.cfg, file_storage(study_path(self.paths.root)))
        states = self.study.states()
        for s in settlements(self.state, states, self.cfg.retries):
            log.info("trial %s ended %s before the last controller told the study; telling it now", s.trial, s.state)
            if s.run:
                self._stop_quietly(s.run)  # pruned, and perhaps never stopped: stopping is idempotent
            self.study.tell(s)
        room = max((self.cfg.run_cap or 0) - self.state.started_trials(), 0)
        for n in orphans(self.state, states):
            if self.cfg.method == "bayes" and len(self.adopted) < room:
                params = self.study.params_of(n)
                self.adopted[bayes_trial_id(n, params)] = (n, params)
                log.info("Optuna trial %d was asked but never started: it is the next trial", n)
            else:
                self.study.fail_unstarted(n)
        self.refresh_trials()

    def refresh_trials(self) -> None:
        """bayes: the journal's trials, adopted asks, then one placeholder per trial still to ask (up to run_cap)."""
        if self.cfg.method != "bayes":
            return
        known = [Trial(t.id, t.params) for t in self.state.trials.values()]
        adopted = [Trial(tid, params) for tid, (_, params) in self.adopted.items() if tid not in self.state.trials]
        room = max((self.cfg.run_cap or 0) - self.state.started_trials() - len(adopted), 0)
        self.trials = known + adopted + [Trial(f"{ASK}{k}", {}) for k in range(room)]

    def step(self) -> Optional[str]:
        """One round: record ended trials, set bad nodes aside, start what fits. Returns why the sweep is over, or None."""
        self._beat()
        self.poll_running()
        for node in [] if self.places_nodes else nodes_to_set_aside(self.state):  # slots are not machines
            streak = ", ".join(self.state.streaks[node])
            log.warning("node %s failed different trials in a row (%s): setting it aside", node, streak)
            self._record("node_aside", node=node, reason=f"failed trials {streak} in a row")
        self.refresh_trials()
        self.start_all(plan_starts(self.trials, self.state, self.nodes, self.cfg))
        self.refresh_trials()
        return sweep_over(self.trials, self.state, self.nodes, self.cfg)

    def start_all(self, decisions: list[StartDecision]) -> None:
        """Journal every start first, then launch them side by side (each launch is seconds of ssh)."""
        jobs = []
        for d in decisions:
            d, number = self._study_trial(d)
            job = build_trial_job(self.sweep, d.trial, d.attempt)
            self._record(
                "start",
                trial=d.trial.id,
                attempt=d.attempt,
                run=job.name,
                nodes=list(d.nodes),
                params=d.trial.params,
                **({"optuna": number} if number is not None else {}),
            )
            if number is not None and d.attempt == 1 and self.cfg.method != "bayes":
                # grid/random study trials have no parameters: the label is what links them to corral's trials in
                # optuna-dashboard (a bayes trial is known by its parameters, and its Optuna number is in the journal)
                self.study.label(number, d.trial.id)
            log.info("starting trial %s attempt %d on %s as %s", d.trial.id, d.attempt, ",".join(d.nodes), job.name)
            jobs.append((d, job))
        errors = _side_by_side([lambda d=d, job=job: self._launch(job, list(d.nodes)) for d, job in jobs])
        for (d, job), err in zip(jobs, errors):
            if err is None:
                self.preflighted |= set(d.nodes)
                continue
            if not isinstance(err, CorralError):
                log.error("launching %s", job.name, exc_info=err)
            self._end(d.trial.id, d.attempt, job.name, "failed", {}, error=f"launch failed: {_describe(err)}")
            self._stop_quietly(job.name)
            self._settle(d.trial.id)

    def _study_trial(self, d: StartDecision) -> tuple[StartDecision, Optional[int]]:
        """The decision's trial in the study: asked now (a bayes placeholder gets TPE's params), adopted, or as journalled."""
        if self.study is None:
            return d, None
        rec = self.state.trials.get(d.trial.id)
        if rec is not None and rec.optuna is not None:
            return d, rec.optuna
        if d.trial.id in self.adopted:
            return d, self.adopted.pop(d.trial.id)[0]
        number, params = self.study.ask()
        if d.trial.id.startswith(ASK):
            d = dataclasses.replace(d, trial=Trial(bayes_trial_id(number, params), params))
        return d, number

    def _launch(self, job: JobConfig, nodes: list[str]) -> None:
        preflight = not set(nodes) <= self.preflighted
        self.backend.launch(job, nodes, plain=self.cfg.plain, preflight=preflight)

    def poll_running(self) -> None:
        running = self.state.running()
        results = _side_by_side([lambda att=att: self.backend.poll(att.run) for _, att in running], want_results=True)
        for (trial, att), (seen, err) in zip(running, results):
            if err is not None:
                log.warning("cannot check %s yet: %s", att.run, _describe(err))
                continue
            outcome = judge_run(att.nodes, seen)
            if outcome.result is None:
                self._judge_progress(trial, att)
                continue
            if outcome.stop_rest or outcome.result == "lost":
                self._stop_quietly(att.run)
            self._finish(trial, att, outcome.result, outcome.exit_codes)

    def _judge_progress(self, trial: TrialRecord, att: Attempt) -> None:
        """early_terminate: hand the study the steps reported so far; prune the trial if the pruner says so."""
        if self.study is None or self.cfg.early_terminate is None or trial.optuna is None:
            return
        records = read_reports(self.backend.run_dir(att.run))
        series = metric_series(records, self.cfg.metric.name)
        step = self.study.report(trial.optuna, series)
        if step is None:
            return
        # Journal first, then stop, then tell: a controller killed in between finds `pruned` in the journal and
        # the study trial RUNNING, and stops (idempotent) and tells it; the trial is never judged twice.
        metric = best_value(records, self.cfg.metric.name, self.cfg.metric.goal)
        et = self.cfg.early_terminate
        value = dict(series).get(step)
        why = (
            f"pruned at step {step} by early_terminate ({et.pruner}): {self.cfg.metric.name}={value:.6g} there "
            f"was not in the best 1/{et.eta} of the trials that reached that step"
        )
        self._end(trial.id, att.number, att.run, "pruned", {}, metric=metric, error=why, step=step)
        self._stop_quietly(att.run)
        # the step it really stopped at: a trial runs on between its report and the stop
        after = metric_series(read_reports(self.backend.run_dir(att.run)), self.cfg.metric.name)
        if after:
            self._record("stopped_at", trial=trial.id, attempt=att.number, run=att.run, step=after[-1][0])
        self._settle(trial.id)

    def _settle(self, trial_id: str) -> None:
        """Tell the study how a trial ended for good (after its journal record; nothing while it may run again)."""
        from launcher.sweep.study import settlements

        rec = self.state.trials.get(trial_id)
        if self.study is None or rec is None or rec.optuna is None:
            return
        for s in settlements(self.state, {rec.optuna: "RUNNING"}, self.cfg.retries):
            if s.trial == trial_id:
                self.study.tell(s)

    def _finish(self, trial: TrialRecord, att: Attempt, result: str, codes: dict[str, Optional[int]]) -> None:
        records = read_reports(self.backend.run_dir(att.run))
        metric = best_value(records, self.cfg.metric.name, self.cfg.metric.goal)
        if self.study is not None and trial.optuna is not None and self.cfg.early_terminate is not None:
            # its whole curve: the pruner's milestone values and the dashboard's plot (a verdict now changes nothing)
            self.study.report(trial.optuna, metric_series(records, self.cfg.metric.name), until_pruned=False)
        error = None
        if result == "done" and metric is None:
            error = never_reported(self.cfg.metric.name)
            log.warning("trial %s: %s", trial.id, error)
        elif result == "failed":
            error = "exit status " + ", ".join(f"{n}: {c}" for n, c in codes.items()) if codes else "failed"
        elif result == "lost":
            error = "its run vanished (no tmux session, no exit status) while no controller watched; it will run again"
        self._end(trial.id, att.number, att.run, result, codes, metric=metric, error=error)
        self._settle(trial.id)

    def _end(
        self,
        trial_id: str,
        attempt: int,
        run: str,
        result: str,
        codes: dict[str, Optional[int]],
        *,
        metric: Optional[float] = None,
        error: Optional[str] = None,
        step: Optional[int] = None,
    ) -> None:
        log.info("trial %s attempt %d: %s%s", trial_id, attempt, result, f" ({error})" if error else "")
        self._record(
            "end",
            trial=trial_id,
            attempt=attempt,
            run=run,
            result=result,
            exit_codes=codes,
            metric=metric,
            error=error,
            **({"step": step} if step is not None else {}),
        )

    def _stop_quietly(self, run: str) -> None:
        try:
            self.backend.stop(run)
        except Exception as exc:  # noqa: BLE001 - best effort: the run may never have started
            log.warning("stopping %s: %s", run, exc)

    def stop_all(self, reason: str) -> None:
        """Stop every running trial and record it as stopped (it runs again when the sweep is resumed)."""
        for trial, att in self.state.running():
            self._stop_quietly(att.run)
            self._end(trial.id, att.number, att.run, "stopped", {}, error=reason)


def _describe(err: BaseException) -> str:
    return str(err) if isinstance(err, CorralError) else f"{type(err).__name__}: {err}"


def _side_by_side(calls: list[Callable[[], Any]], want_results: bool = False) -> list[Any]:
    """Run calls in threads (ssh-bound, so threads suffice); per call its exception, or (result, exception)."""
    if not calls:
        return []

    def one(call: Callable[[], Any]) -> tuple[Any, Optional[BaseException]]:
        try:
            return call(), None
        except Exception as exc:  # noqa: BLE001 - reported per call by the caller
            return None, exc

    if len(calls) == 1:
        out = [one(calls[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(len(calls), MAX_PARALLEL_SSH)) as pool:
            out = list(pool.map(one, calls))
    return out if want_results else [err for _, err in out]


# ---- entry point: python -m launcher.sweep.controller ----------------------------


def main(argv: Optional[list[str]] = None) -> int:
    from launcher.config import load_cluster
    from launcher.config.exclude import exclude_nodes, exclusions
    from launcher.sweep.backend import LaunchBackend
    from launcher.sweep.lock import LockHeld

    p = argparse.ArgumentParser(prog="python -m launcher.sweep.controller", description=__doc__.splitlines()[0])
    p.add_argument("--sweep-dir", required=True, type=Path)
    p.add_argument("--cluster", type=Path, default=None)
    p.add_argument("--exclude", action="append", default=[], help="A node of the cluster file to leave out.")
    p.add_argument("--token", default=None, help="Names the file a refusal is written to, for the CLI that started us.")
    p.add_argument("--session", default=None, help="The tmux session this controller runs in.")
    args = p.parse_args(argv)
    args.token = args.token or uuid.uuid4().hex
    paths = SweepPaths(args.sweep_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(paths.log)],
        force=True,
    )
    try:
        sweep = load_spec(paths)
        cluster = exclude_nodes(load_cluster(args.cluster), exclusions(args.exclude))
        controller = Controller(sweep, cluster, LaunchBackend(cluster), paths, session=args.session, token=args.token)
        return controller.run()
    except LockHeld as exc:
        paths.refusal(args.token).write_text(str(exc) + "\n", encoding="utf-8")
        log.error("%s", exc)
        return EXIT_REFUSED
    except CorralError as exc:
        paths.refusal(args.token).write_text(str(exc) + "\n", encoding="utf-8")
        log.error("%s", exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())

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
import json
import logging
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

from launcher.config import ClusterConfig, JobConfig
from launcher.errors import CorralError
from launcher.sweep.backend import TrialBackend
from launcher.sweep.config import Sweep, sweep_from_mapping
from launcher.sweep.generate import Trial, generate_trials
from launcher.sweep.journal import Attempt, Journal, SweepState, TrialRecord, replay
from launcher.sweep.lock import HEARTBEAT_EVERY, LockLost, SweepLock
from launcher.sweep.metrics import best_value, never_reported, read_reports
from launcher.sweep.paths import SweepPaths
from launcher.sweep.scheduler import StartDecision, judge_run, nodes_to_set_aside, plan_starts, sweep_over
from launcher.sweep.trial_job import build_trial_job

log = logging.getLogger(__name__)

EXIT_FINISHED, EXIT_STUCK, EXIT_REFUSED = 0, 1, 2
MAX_PARALLEL_SSH = 16


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

        raise UserError(f"no sweep at {paths.root}", hint="check the name and the cluster's storage.runs (-c CLUSTER)") from None
    return sweep_from_mapping(data["sweep"], data.get("source", str(paths.spec)))


class Controller:
    """One controller's life: acquire, reconcile, loop (poll, record, start), release."""

    def __init__(self, sweep: Sweep, cluster: ClusterConfig, backend: TrialBackend, paths: SweepPaths, *,
                 session: Optional[str] = None, token: Optional[str] = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.sweep, self.cluster, self.backend, self.paths = sweep, cluster, backend, paths
        self.cfg = sweep.config
        self.trials: list[Trial] = generate_trials(self.cfg)
        self.by_id = {t.id: t for t in self.trials}
        from launcher.sweep.slurm_slots import trial_slots

        self.nodes = trial_slots(cluster, self.cfg, len(self.trials))
        self.journal = Journal(paths.journal)
        self.lock = SweepLock(paths.lock, sweep.name, session=session, token=token)
        self.state = SweepState()
        self.clock, self.sleep = clock, sleep
        self.preflighted: set[str] = set()
        self._last_beat = 0.0

    # ---- life cycle ----

    def run(self) -> int:
        """Run the sweep to its end; returns the process exit code. Raises LockHeld if another controller runs it."""
        self.lock.acquire()
        try:
            self._record("controller", action="start", pid=os.getpid(), host=self.lock.info.host, token=self.lock.info.token)
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
                self.sleep(self.cfg.poll_interval)
        except LockLost as exc:
            log.error("%s; this controller stops without touching the journal", exc)
            return EXIT_REFUSED
        finally:
            self.lock.release()

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
        for trial, att in self.state.running():
            log.info("trial %s attempt %d (%s) was running when the last controller ended; checking it", trial.id, att.number, att.run)
        self.poll_running()

    def step(self) -> Optional[str]:
        """One round: record ended trials, set bad nodes aside, start what fits. Returns why the sweep is over, or None."""
        self._beat()
        self.poll_running()
        for node in [] if self.cluster.slurm is not None else nodes_to_set_aside(self.state):  # Slurm slots are not machines
            streak = ", ".join(self.state.streaks[node])
            log.warning("node %s failed different trials in a row (%s): setting it aside", node, streak)
            self._record("node_aside", node=node, reason=f"failed trials {streak} in a row")
        self.start_all(plan_starts(self.trials, self.state, self.nodes, self.cfg))
        return sweep_over(self.trials, self.state, self.nodes, self.cfg)

    def start_all(self, decisions: list[StartDecision]) -> None:
        """Journal every start first, then launch them side by side (each launch is seconds of ssh)."""
        jobs = []
        for d in decisions:
            job = build_trial_job(self.sweep, d.trial, d.attempt)
            self._record("start", trial=d.trial.id, attempt=d.attempt, run=job.name, nodes=list(d.nodes), params=d.trial.params)
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
                continue
            if outcome.stop_rest or outcome.result == "lost":
                self._stop_quietly(att.run)
            self._finish(trial, att, outcome.result, outcome.exit_codes)

    def _finish(self, trial: TrialRecord, att: Attempt, result: str, codes: dict[str, Optional[int]]) -> None:
        metric = best_value(read_reports(self.backend.run_dir(att.run)), self.cfg.metric.name, self.cfg.metric.goal)
        error = None
        if result == "done" and metric is None:
            error = never_reported(self.cfg.metric.name)
            log.warning("trial %s: %s", trial.id, error)
        elif result == "failed":
            error = "exit status " + ", ".join(f"{n}: {c}" for n, c in codes.items()) if codes else "failed"
        elif result == "lost":
            error = "its run vanished (no tmux session, no exit status) while no controller watched; it will run again"
        self._end(trial.id, att.number, att.run, result, codes, metric=metric, error=error)

    def _end(self, trial_id: str, attempt: int, run: str, result: str, codes: dict[str, Optional[int]], *,
             metric: Optional[float] = None, error: Optional[str] = None) -> None:  # fmt: skip
        log.info("trial %s attempt %d: %s%s", trial_id, attempt, result, f" ({error})" if error else "")
        self._record("end", trial=trial_id, attempt=attempt, run=run, result=result, exit_codes=codes, metric=metric, error=error)

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
    from launcher.sweep.backend import LaunchBackend
    from launcher.sweep.lock import LockHeld

    p = argparse.ArgumentParser(prog="python -m launcher.sweep.controller", description=__doc__.splitlines()[0])
    p.add_argument("--sweep-dir", required=True, type=Path)
    p.add_argument("--cluster", type=Path, default=None)
    p.add_argument("--token", default=None, help="Names the file a refusal is written to, for the CLI that started us.")
    p.add_argument("--session", default=None, help="The tmux session this controller runs in.")
    args = p.parse_args(argv)
    args.token = args.token or uuid.uuid4().hex
    paths = SweepPaths(args.sweep_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(paths.log)], force=True)  # fmt: skip
    try:
        sweep = load_spec(paths)
        cluster = load_cluster(args.cluster)
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

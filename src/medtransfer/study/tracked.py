"""A study mirrored to MLflow (``study run --mlflow``): one experiment per study, one MLflow run per study run.

The driver logs each run as its outcome is recorded in the store (never a worker: local processes
and Ray tasks then behave the same), and once more at the end of the call for runs finished by an
earlier one (a resume, a first call without ``--mlflow``, a run adopted after a kill). Every run is
looked up by its ``medtransfer.run_id`` tag first, so resuming never logs a run twice.

Skipped and failed runs are logged too (MLflow status KILLED / FAILED, reason in the tag
``medtransfer.reason``), so the experiment counts the plan as the store does; a run that later
succeeds (its ImageNet weights were placed, ``--retry-failed``) replaces its earlier entry.
A tracker error mid-study is a warning line, not a stop: the results are safe in the store and
the run folders, and the next call logs what is missing.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from rich.console import Console

from ..kinds import RunRole, RunStatus
from ..run_folder import RunFolder, RunMetrics
from ..tracking import TAG, TrackedRun, Tracker, TrackingStore
from .grid import Plan, PlannedRun, hashed_config


def experiment_name(plan: Plan, study_dir: Path) -> str:
    """The spec's ``name``, else the study folder's name."""
    return plan.spec.name or study_dir.name


class StudyTracker:
    def __init__(self, target: str, plan: Plan, study_dir: Path, plan_hash: str, console: Console):
        self.tracker = Tracker(TrackingStore.parse(target), experiment_name(plan, study_dir))
        self.study_dir, self.plan_hash, self.console = study_dir, plan_hash, console

    def record(self, run: PlannedRun, status: RunStatus, reason: str | None = None,
               metrics: RunMetrics | None = None, started_at: str | None = None,
               finished_at: str | None = None) -> None:
        """Log one run's outcome, as the store has just recorded it."""
        self._log(self._tracked(run, status, reason, metrics, started_at, finished_at))

    def catch_up(self, plan: Plan, rows: list[dict]) -> int:
        """Log the plan's runs the store holds and the experiment lacks (with their status); returns how many."""
        by_id = {r["run_id"]: r for r in rows}
        count = 0
        logged = self.tracker.logged()
        for run in plan.all_runs:
            row = by_id.get(run.run_id)
            if row is None or logged.get(run.run_id, ("", ""))[1] == row["status"]:
                continue   # already there with this status: build nothing (a resume checks every run)
            metrics = RunMetrics.from_json(json.loads(row["metrics_json"])) if row.get("metrics_json") else None
            count += self._log(self._tracked(run, RunStatus(row["status"]), row.get("reason"), metrics,
                                             row.get("started_at"), row.get("finished_at")))
        return count

    def _log(self, tracked: TrackedRun) -> bool:
        """A tracker error is a warning line: the store already holds the result."""
        try:
            self.tracker.log(tracked)
            return True
        except Exception as err:   # MLflow, SQLite, a full disk
            first = (str(err).strip().splitlines() or [""])[0][:200]
            self.console.print(f"mlflow: run {tracked.key} not logged ({type(err).__name__}: {first}); "
                               "the next `study run --mlflow` logs it", markup=False, highlight=False)
            return False

    def _tracked(self, run: PlannedRun, status: RunStatus, reason, metrics, started_at, finished_at) -> TrackedRun:
        folder = RunFolder(self.study_dir / run.run_dir)
        cfg = run.config
        name = (f"source {run.source}" if run.role is RunRole.SOURCE
                else f"{run.recipe} N={cfg.train.n_train} seed={cfg.train.seed}")
        tags = {TAG + "role": str(run.role), TAG + "method": str(run.method), TAG + "study": self.tracker.experiment,
                TAG + "plan": self.plan_hash, TAG + "task": run.task, TAG + "recipe": run.recipe,
                TAG + "run_dir": str(folder.path)}
        return TrackedRun(name=name, status=status, params=hashed_config(cfg, run.method),
                          folder=folder if folder.path.is_dir() else None, metrics=metrics, key=run.run_id,
                          reason=reason, tags=tags, started=_seconds(started_at), finished=_seconds(finished_at))


def _seconds(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None

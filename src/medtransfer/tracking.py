"""Finished runs logged to MLflow (optional extra: ``pip install 'medtransfer[mlflow]'``).

Why a finished run, logged after the fact: the run folder is the unit of truth, so the tracker
only mirrors it. Logging from the driver once a run is over works the same for every executor
(local processes, Ray workers on other machines), and a tracker that fails can never lose a run.

Where: a folder (the default, ``mlruns/``) holds an SQLite store ``mlflow.db`` and the artifacts
in ``artifacts/``. MLflow 3 refuses its old file store (``./mlruns`` of ``meta.yaml`` files)
unless ``MLFLOW_ALLOW_FILE_STORE`` is set, so a plain folder gets the database backend MLflow
recommends; ``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`` shows it. A folder that
already is a file store, or a ``file:`` URI, is written as a file store (the user chose it, so
the opt-out is set for this process). Any other URI (``sqlite:///``, ``http://``) goes to MLflow as is.

What: params are the run's config, flattened to dotted keys; metrics are the per-epoch history
(step = epoch) and the final val/test AUROC / AUPRC (macro and per label); tags say the run id,
status and reason, method, role, study and plan; artifacts are the run folder's small files
(weights stay in the folder: the ``medtransfer.run_dir`` tag names it).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import MedtransferError, MissingExtra
from .kinds import RunStatus
from .run_folder import MetricBlock, RunFolder, RunMetrics

DEFAULT_FOLDER = "mlruns"          # bare --mlflow: STUDY_DIR/mlruns for a study, ./mlruns for train
TRAIN_EXPERIMENT = "medtransfer"   # the experiment of runs made by `medtransfer train`
DATABASE = "mlflow.db"
ARTIFACTS = "artifacts"
TAG = "medtransfer."
RUN_ID_TAG = TAG + "run_id"        # what a resumed study searches for, so no run is logged twice
STATUS_TAG = TAG + "status"
# the run folder's files worth keeping next to the metrics (weights are not: up to hundreds of MB each)
ARTIFACT_FILES = (RunFolder.CONFIG, RunFolder.METRICS, RunFolder.FAILED, RunFolder.LOG, RunFolder.PREDICTIONS,
                  RunFolder.LR_TRACE, RunFolder.COEFFICIENTS, RunFolder.OUTER_PREDICTIONS)
_MLFLOW_STATUS = {RunStatus.DONE: "FINISHED", RunStatus.FAILED: "FAILED", RunStatus.SKIPPED: "KILLED"}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")   # a scheme of two letters or more (not a C: drive)
_PARAM_LIMIT = 6000     # MLflow's longest param value
_BATCH_PARAMS, _BATCH_METRICS = 100, 1000


def require_mlflow() -> None:
    """Fail before any run starts when the extra is missing (a study would otherwise train for nothing)."""
    try:
        import mlflow  # noqa: F401
    except ImportError as err:
        raise MissingExtra(f"--mlflow needs the mlflow package ({err}): pip install 'medtransfer[mlflow]'") from None


@dataclass(frozen=True)
class TrackingStore:
    """Where the runs go: an MLflow tracking URI, and the artifact folder of new experiments (None: MLflow's)."""
    uri: str
    artifact_location: str | None = None
    file_store: bool = False

    @classmethod
    def parse(cls, target: str | os.PathLike) -> "TrackingStore":
        """A URI as given; a folder -> its SQLite store and artifacts folder (or the file store it already holds)."""
        text = str(target)
        if _URI.match(text):
            return cls(text, file_store=text.startswith("file:"))
        folder = Path(text).expanduser().resolve()
        if any(folder.glob("*/meta.yaml")):   # an MLflow file store made earlier: keep writing it
            return cls(folder.as_uri(), file_store=True)
        return cls(f"sqlite:///{folder / DATABASE}", (folder / ARTIFACTS).as_uri())

    @property
    def folder(self) -> Path | None:
        """The local folder to create first (SQLite does not create its parent folder)."""
        if self.uri.startswith("sqlite:///"):
            return Path(self.uri[len("sqlite:///"):]).parent
        return None


@dataclass(frozen=True)
class TrackedRun:
    """One run as the tracker sees it: plain values, built by whoever knows the run (a study, ``train``)."""
    name: str
    status: RunStatus
    params: dict[str, Any]                 # the config tree (nested dicts); flattened to dotted keys
    folder: RunFolder | None = None        # its files become artifacts
    metrics: RunMetrics | None = None
    key: str | None = None                 # the study run id: a run with this tag is never logged twice
    reason: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    started: float | None = None           # seconds since the epoch
    finished: float | None = None


class Tracker:
    """One MLflow experiment, written through ``MlflowClient`` (no global active run, nothing left open)."""

    def __init__(self, store: TrackingStore, experiment: str):
        require_mlflow()
        self.store, self.experiment = store, experiment
        self._logged: dict[str, tuple[str, str]] | None = None
        with _quiet():
            from mlflow import MlflowClient

            if store.file_store:
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            if store.folder is not None:
                store.folder.mkdir(parents=True, exist_ok=True)
            try:
                self.client = MlflowClient(tracking_uri=store.uri)
                found = self.client.get_experiment_by_name(experiment)
                self.experiment_id = found.experiment_id if found else self.client.create_experiment(
                    experiment, artifact_location=store.artifact_location)
            except Exception as err:   # a bad URI, an unreachable server, a locked database: before any run
                raise MedtransferError(f"--mlflow {store.uri}: cannot open MLflow experiment {experiment!r}: "
                                       f"{_first_line(err)}") from None

    def logged(self) -> dict[str, tuple[str, str]]:
        """{medtransfer run id: (MLflow run id, status)} of the experiment's live runs (searched once)."""
        if self._logged is None:
            self._logged = {}
            with _quiet():
                runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` != ''",
                                               max_results=50000)
            for run in runs:
                tags = run.data.tags
                self._logged.setdefault(tags[RUN_ID_TAG], (run.info.run_id, tags.get(STATUS_TAG, "")))
        return self._logged

    def is_logged(self, run: TrackedRun) -> bool:
        return run.key is not None and self.logged().get(run.key, ("", ""))[1] == run.status

    def log(self, run: TrackedRun) -> str | None:
        """Log ``run``; returns its MLflow run id, or None when it is already there with this status.

        A run logged earlier with another status (skipped, then done once its weights were placed) is
        replaced: the experiment keeps one run per study run, saying where it stands now.
        """
        if self.is_logged(run):
            return None
        with _quiet():
            if run.key is not None and run.key in self.logged():
                self.client.delete_run(self.logged().pop(run.key)[0])
            mlflow_id = self._create(run)
        if run.key is not None:
            self.logged()[run.key] = (mlflow_id, run.status)
        return mlflow_id

    def _create(self, run: TrackedRun) -> str:
        from mlflow.entities import Metric, Param

        tags = {RUN_ID_TAG: run.key, STATUS_TAG: str(run.status), TAG + "reason": run.reason, **run.tags}
        started = run.started or time.time()
        created = self.client.create_run(self.experiment_id, start_time=_ms(started), run_name=run.name,
                                         tags={k: str(v)[:_PARAM_LIMIT] for k, v in tags.items() if v is not None})
        mlflow_id = created.info.run_id
        params = [Param(k, v) for k, v in flat_params(run.params).items()]
        metrics = [Metric(k, v, _ms(run.finished or started), step)
                   for k, v, step in run_metrics(run.metrics)] if run.metrics else []
        for i in range(0, len(params), _BATCH_PARAMS):
            self.client.log_batch(mlflow_id, params=params[i:i + _BATCH_PARAMS])
        for i in range(0, len(metrics), _BATCH_METRICS):
            self.client.log_batch(mlflow_id, metrics=metrics[i:i + _BATCH_METRICS])
        for path in _artifacts(run.folder):
            self.client.log_artifact(mlflow_id, str(path))
        self.client.set_terminated(mlflow_id, _MLFLOW_STATUS[run.status], end_time=_ms(run.finished or time.time()))
        return mlflow_id


def train_tracker(target: str) -> Tracker:
    """The experiment ``medtransfer train --mlflow TARGET`` logs its runs to."""
    return Tracker(TrackingStore.parse(target), TRAIN_EXPERIMENT)


def log_train_run(tracker: Tracker, cfg, folder: RunFolder) -> None:
    """Log a `train` run folder (no study: no run-id tag, so training again logs a second run, as it should).

    ``cfg``: the run's ``RunConfig``. A tracker error is one line saying the run itself is safe in its folder."""
    params = cfg.model_dump(mode="json")
    params.pop("radiomics", None)   # a CNN run does not read these keys
    run = folder_run(folder, params, name=folder.path.name, tags={TAG + "method": "cnn", TAG + "role": "train"})
    try:
        tracker.log(run)
    except Exception as err:   # the run itself is safe in its folder; say so in one line
        raise MedtransferError(f"{folder.path}: the run is saved but was not logged to MLflow "
                               f"({tracker.store.uri}): {type(err).__name__}: {str(err).splitlines()[0][:300]}") from None


def folder_run(folder: RunFolder, params: dict[str, Any], *, name: str, tags: dict[str, str] | None = None,
               key: str | None = None) -> TrackedRun:
    """A run folder as it stands on disk: done with its metrics.json, else failed with failed.json's reason."""
    tags = {TAG + "run_dir": str(folder.path.resolve()), **(tags or {})}
    if folder.is_finished:
        metrics = folder.read_metrics()
        finished = folder.metrics_path.stat().st_mtime
        return TrackedRun(name, RunStatus.DONE, params, folder, metrics, key, tags=tags,
                          started=finished - float(metrics.seconds or 0.0), finished=finished)
    return TrackedRun(name, RunStatus.FAILED, params, folder, None, key, folder.failure_reason() or "no reason recorded",
                      tags)


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"train.lr": "0.001", ...}; lists as JSON, long values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out[name] = text[:_PARAM_LIMIT]
    return out


def run_metrics(metrics: RunMetrics) -> Iterator[tuple[str, float, int]]:
    """(name, value, step) for every number worth plotting: the history by epoch, then the final scores."""
    chosen = metrics.details.get("selected_by")
    cv = chosen if isinstance(chosen, dict) and chosen.get("kind") == "cv" else None
    for record in metrics.history:
        epoch = int(record.get("epoch") or 0)
        for name in ("train_loss", "val_loss", "seconds"):
            yield from _number(f"epoch_{name}" if name == "seconds" else name, record.get(name), epoch)
        if cv is None:
            yield from _number("val_auroc_epoch", record.get("val_auroc_macro"), epoch)
        for part, lr in zip(("early", "late", "head"), record.get("lrs") or []):
            yield from _number(f"lr_{part}", lr, epoch)
    if cv is not None:   # the final fit is not validated: its rounds' validation AUROC is the folds' mean
        for epoch, value in enumerate(cv.get("mean_curve") or [], start=1):
            yield from _number("val_auroc_epoch", value, epoch)
        for name in ("cv_auroc_mean", "cv_auroc_se", "folds", "chosen_round"):
            yield from _number(name, cv.get(name), 0)
    for split in ("val", "test"):
        block = metrics.block(split) or MetricBlock()
        for kind, macro, per_label in (("auroc", block.auroc_macro, block.auroc),
                                       ("auprc", block.auprc_macro, block.auprc)):
            yield from _number(f"{split}_{kind}", macro, 0)
            for label, value in per_label.items():
                yield from _number(f"{split}_{kind}.{_metric_name(label)}", value, 0)
        yield from _number(f"{split}_accuracy", block.accuracy, 0)
    best = next((r for r in metrics.history if r.get("epoch") == metrics.best_epoch), None)
    if best is not None:
        yield from _number("best_val_loss", best.get("val_loss"), 0)
    for name in ("n_train_images", "n_train_patients", "n_val_images", "n_test_images", "epochs_run",
                 "best_epoch", "seconds"):
        yield from _number(name, getattr(metrics, name), 0)
    for name, value in metrics.details.items():   # radiomics: chosen_C, n_features, ...
        yield from _number(name, value, 0)
    estimate = metrics.details.get("test_estimate")
    if isinstance(estimate, dict) and estimate.get("kind") == "outer_cv":   # runs.outer_cv: a small test split
        interval = estimate.get("auroc_ci") if isinstance(estimate.get("auroc_ci"), dict) else {}
        for name, value in (("outer_cv_auroc", estimate.get("auroc")), ("outer_cv_auroc_low", interval.get("low")),
                            ("outer_cv_auroc_high", interval.get("high")),
                            ("outer_cv_fold_auroc_mean", estimate.get("fold_auroc_mean")),
                            ("outer_cv_fold_auroc_se", estimate.get("fold_auroc_se"))):
            yield from _number(name, value, 0)


def _number(name: str, value: Any, step: int) -> Iterator[tuple[str, float, int]]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield name, float(value), step


def _metric_name(label: str) -> str:
    """MLflow names allow letters, digits and ``_-. :/``; anything else in a label becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", str(label))


def _artifacts(folder: RunFolder | None) -> list[Path]:
    if folder is None:
        return []
    return [folder / name for name in ARTIFACT_FILES if (folder / name).is_file()]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


@contextmanager
def _quiet():
    """MLflow's INFO lines (database migrations) and SQLAlchemy deprecation warnings are not the user's
    business during a study; real errors still raise."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*noload.*")
            warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

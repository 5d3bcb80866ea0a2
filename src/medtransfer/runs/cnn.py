"""One CNN run, end to end: prepare (data, device, model with its init), fit, score, write the run folder.

``train_run`` is ``medtransfer train`` / ``pretrain`` and a study's CNN job. Its stages are separate
(``prepare_cnn_run``, ``fit_prepared``, ``finish_cnn_run``) because a pack of runs (``runs.packs``)
prepares and finishes each run the same way and fits them together.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..config import RunConfig, resolve_data_root
from ..data import PreparedData
from ..errors import MedtransferError
from ..kinds import InitKind, SelectionKind, Strategy, TestEstimateKind
from ..models import create_model, save_weights
from ..models.init_resolve import resolve_init
from ..models.xrv_init import xrv_weights_file
from ..parallel import torch_threads
from ..run_folder import RunFolder, RunMetrics
from ..tracking import log_train_run, train_tracker
from ..train import fit, resolve_device
from ..train.device import seed_everything
from ..train.features import FeatureTable
from ..xrv_weights import XrvWeights, leak_note, pretraining_of, target_images
from .baselines import compare_baselines, verdict_details
from .checkpoint_leaks import checkpoint_leak_notes
from .cv import CvOutcome, SelectionPlan, cross_validate, fit_on_pool, plan_selection
from .data_split import prepare_run_data
from .features import run_features, split_scores
from .folder_protocol import Log, recorded_run
from .outer_cv import estimate_test, plan_test_estimate
from .probe import ProbeCv, ProbeOutcome, fit_probe
from .scoring import SplitScores, score_run


def train_run(cfg: RunConfig, out: Path, data_root: Path | None = None, *,
              overwrite: bool = False, echo: bool = True, progress: bool = True,
              mlflow: str | None = None, check_leaks: bool = False) -> RunMetrics:
    """Train and evaluate one recipe; returns the metrics written to ``out/metrics.json``.

    ``check_leaks`` (``medtransfer train``): refuse, before the run folder is created, a ``checkpoint:`` init
    whose run was trained on this run's patients or images (``runs.checkpoint_leaks``); a study checks its
    sources itself (``study.disjoint``, which honours ``allow_overlap``), so its runs leave it off.

    ``mlflow`` (a tracking URI or folder) logs the finished or failed run folder to the experiment
    ``medtransfer``; the store is opened first, so a missing package or a bad URI costs no training.
    """
    root = data_root or resolve_data_root(None)
    tracker = train_tracker(mlflow) if mlflow else None
    checked = checkpoint_leak_notes(cfg, root) if check_leaks else []
    try:
        with torch_threads(cfg.train.threads):
            metrics = recorded_run(cfg, out, overwrite, echo,
                                   lambda folder, log, started: _train_and_evaluate(cfg, folder, root, log, progress,
                                                                                    started, checked))
    except Exception:
        if tracker is not None and RunFolder(out).failed_path.is_file():   # the run failed (not a refused --out)
            try:
                log_train_run(tracker, cfg, RunFolder(out))
            except MedtransferError as also:   # the run's own error is the one to report
                print(f"medtransfer: warning: {also}", file=sys.stderr)
        raise
    if tracker is not None:
        log_train_run(tracker, cfg, RunFolder(out))
    return metrics


def _train_and_evaluate(cfg: RunConfig, folder: RunFolder, data_root: Path, log: Log, progress: bool,
                        started: float, leak_notes: list[str]) -> RunMetrics:
    log(f"medtransfer train -> {folder.path}")
    for note in leak_notes:
        log(note)
    run = prepare_cnn_run(cfg, data_root, log, progress)
    outer = plan_test_estimate(cfg, run.data, run.idx, run.model, log)   # before the fit: it copies the untrained model
    if outer.kind is TestEstimateKind.OUTER_CV and run.features is not None:   # its folds reach every labelled image
        run.features = run_features(cfg, run.data, None, run.model, run.device, data_root, log)
    with step_bar(progress and sys.stderr.isatty()) as on_step:
        result = fit_prepared(cfg, run, log, on_step)
    return estimate_test(cfg, outer, run, folder, finish_cnn_run(cfg, folder, run, result, log, started), log,
                         fit_prepared)


@dataclass
class PreparedRun:
    """What a CNN run has before it trains: its data, index sets, model and device (see ``prepare_cnn_run``)."""
    data: PreparedData
    idx: dict[str, np.ndarray]
    model: torch.nn.Module
    device: torch.device
    n_patients: int
    overlap: dict[str, str]
    selection: SelectionPlan
    cv: CvOutcome | ProbeCv | None = None   # set by ``fit_prepared`` when the run cross-validates
    features: FeatureTable | None = None    # cached backbone features (a probe; a frozen run without augmentation)
    probe: ProbeOutcome | None = None       # set by ``fit_prepared`` for a probe


def prepare_cnn_run(cfg: RunConfig, data_root: Path, log: Log, progress: bool) -> PreparedRun:
    """Everything before ``fit``: the split and N-subset, the device and the model with its init."""
    if cfg.model.init.kind is InitKind.XRV:   # a missing weights file is reported before any data is read
        xrv_weights_file(cfg.model.init.xrv_name, log)
    data, idx = prepare_run_data(cfg, data_root, log, progress)
    n_patients = int(len(np.unique(data.patient_ids[idx["train"]])))
    log(f"training on {len(idx['train'])} images from {n_patients} patients; "
        f"val {len(idx['val'])}, test {len(idx['test'])} images")
    device = resolve_device(cfg.train.device)
    log(f"device: {device}, {torch.get_num_threads()} CPU threads")
    init = resolve_init(cfg.model.init)
    seed_everything(cfg.train.seed)   # a scratch model's starting weights come from the global RNG
    model = create_model(cfg.model.arch, len(data.label_names), init=init, dropout=cfg.model.dropout, log=log)
    overlap = pretraining_overlap(cfg, log)
    selection = plan_selection(cfg, data, idx)
    log(f"selection: {selection.kind.value} ({selection.reason})")
    features = run_features(cfg, data, idx, model, device, data_root, log)
    return PreparedRun(data, idx, model, device, n_patients, overlap, selection, features=features)


def fit_prepared(cfg: RunConfig, run: PreparedRun, log: Log, on_step=None):
    """``fit`` on a prepared run's training and validation images; with cross-validated selection
    (``runs.cv``), its folds and then one fit on the whole N-pool (``run.cv`` keeps what the folds measured)."""
    data, idx = run.data, run.idx
    if cfg.train.strategy == Strategy.PROBE:
        result, run.probe = fit_probe(cfg, data, idx, run.selection, run.model, run.features, log)
        run.cv = run.probe.cv
        return result
    if run.selection.kind is SelectionKind.CV:
        run.cv = cross_validate(cfg, data, run.selection, run.model, run.device, log, run.features)
        return fit_on_pool(cfg, data, run.cv, run.model, run.device, log, on_step, run.features)
    features = run.features.head_inputs(idx["train"], idx["val"]) if run.features is not None else None
    return fit(run.model, data.images[idx["train"]], data.labels[idx["train"]], data.images[idx["val"]],
               data.labels[idx["val"]], task_kind=cfg.task.kind, cfg=cfg.train, device=run.device, log=log,
               on_step=on_step, features=features)


def finish_cnn_run(cfg: RunConfig, folder: RunFolder, run: PreparedRun, result, log: Log,
                   started: float) -> RunMetrics:
    """Everything after ``fit``: predictions, metrics with the test CI, thresholds, weights, LR trace."""
    data, model, device = run.data, run.model, run.device
    train_idx, val_idx, test_idx = run.idx["train"], run.idx["val"], run.idx["test"]
    log(f"stopped: {result.stopped_reason}" + (f"; best epoch {result.best_epoch} of {result.epochs_run}"
                                               if result.epochs_run else ""))
    kind, batch = cfg.task.kind, max(cfg.train.batch_size, 128)
    if run.cv is None:
        val = SplitScores(val_idx, split_scores(model, data, val_idx, run.features, kind, batch, device),
                          folder.val_predictions_path)
    else:   # the folds' out-of-fold scores stand for validation: the final model saw every pool image
        val = SplitScores(run.cv.oof_rows, run.cv.oof_scores, folder.val_predictions_path, run.cv.fold_auroc)
        train_idx = val_idx = run.cv.plan.pool
    test = SplitScores(test_idx, split_scores(model, data, test_idx, run.features, kind, batch, device),
                       folder.predictions_path)
    scored = score_run(folder, data, kind, val, test, log)
    for note in scored.thresholds.notes():
        log(f"threshold {note}")
    compared = compare_baselines(cfg, folder, data, train_idx, test_idx, scored.test_interval, log)
    save_weights(model, folder.weights_path)
    _write_lr_trace(folder.lr_trace_path, result.lr_trace)
    return RunMetrics(
        task_kind=kind, label_names=data.label_names, val=scored.val, test=scored.test,
        n_train_images=int(len(train_idx)), n_val_images=int(len(val_idx)),
        n_train_patients=run.n_patients if run.cv is None else run.cv.pool_patients,
        n_test_images=int(len(test_idx)), epochs_run=int(result.epochs_run), best_epoch=int(result.best_epoch),
        stopped_reason=result.stopped_reason, seconds=round(time.time() - started, 2), device=str(device),
        torch_threads=torch.get_num_threads(), history=[r.to_dict() for r in result.history],
        details={**run.overlap, "budget": budget_record(result.budget),
                 "selected_by": run.selection.record() if run.cv is None else run.cv.record(),
                 **({"probe": run.probe.record()} if run.probe is not None else {}),
                 **verdict_details(scored, compared)})


def budget_record(budget) -> dict:
    """metrics.json's ``budget``: the optimiser steps the run trained and why that many (a probe: none)."""
    if budget is None:
        return {"total_steps": 0, "set_by": "none: a probe fits a logistic regression, no optimiser step"}
    return {"total_steps": budget.total_steps, "round_steps": budget.round_steps, "rounds": budget.rounds,
            "steps_per_epoch": budget.steps_per_epoch, "set_by": budget.set_by}


def pretraining_overlap(cfg: RunConfig, log: Log) -> dict[str, str]:
    """Warn in train.log when the init's pretraining may have seen this run's test images.

    torchxrayvision's weights and RAD-DINO were trained on public chest X-ray collections (NIH ChestX-ray14
    among others): fine-tuning or probing them on NIH images and testing on NIH's test split measures partly
    memory. The returned ``pretraining_overlap`` key marks the run's metrics.json; the report marks every such
    recipe from its init and arch.
    """
    weights = pretraining_of(str(cfg.model.init), cfg.model.arch)
    if weights is None:
        return {}
    if isinstance(weights, XrvWeights) and cfg.image_size != weights.input_size:
        log(f"note: {weights.label} was trained on {weights.input_size} px images; this run uses {cfg.image_size} px")
    images = target_images(cfg.data.source, cfg.data.name)
    if not weights.saw(images):
        log(f"note: {leak_note(weights)}")
        return {}
    log(f"WARNING: this run's data are {images} images and {weights.label} was pretrained on them "
        f"({', '.join(weights.trained_on)}): its test images may have been seen in pretraining, "
        "so the test AUROC is optimistic")
    return {"pretraining_overlap": f"{weights.label} saw {images}"}


@contextmanager
def step_bar(show: bool):
    """A rich bar over a fit's optimiser steps on a terminal (log lines print above it); else no hook:
    train.log and a non-terminal stderr get the per-epoch lines the loop logs anyway."""
    if not show:
        yield None
        return
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                  TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("training", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _write_lr_trace(path: Path, trace: list[list[float]]) -> None:
    lines = ["step,lr_early,lr_late,lr_head"] + [
        f"{i}," + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(trace)]
    path.write_text("\n".join(lines) + "\n")

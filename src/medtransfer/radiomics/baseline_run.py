"""One radiomics-baseline run, with the same run folder as a CNN run (``medtransfer.runs.cnn.train_run``).

The splits and the N-subset come from the same ``prepare_run_data`` call a CNN run makes (same
data config, ``train.n_train``, ``train.seed``), so the baseline is scored on exactly the
CNN runs' test images and the comparison is paired; it ends in the same scoring tail
(``runs.scoring.score_run``).

Images whose feature extraction failed: left out of training (they carry no features to
learn from), kept in val and test with the training medians imputed for every feature
(every test image keeps a score, so the pairing with the CNN runs stays complete; such an
image gets the score of an "average" image). Both counts are logged and kept in metrics.json.

Run folder: config.yaml, train.log, predictions_test.csv (the CNN columns), coefficients.csv
(weights per standardised feature and label), metrics.json (last, atomically; the CNN keys
plus ``method: radiomics``, the chosen C and how, the feature counts and settings, and, as every
run's, its verdict against chance and the pixel baseline: ``runs.baselines``); failed.json
instead when the run fails.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..config import RunConfig, resolve_data_root
from ..data import PreparedData
from ..errors import DataError
from ..kinds import RunMethod, SelectionKind
from ..run_folder import RunFolder, RunMetrics
from ..runs.baselines import compare_baselines, verdict_details
from ..runs.cv import SelectionPlan, plan_selection, validation_share
from ..runs.data_split import prepare_run_data
from ..runs.folder_protocol import Log, recorded_run
from ..runs.scoring import SplitScores, score_run
from .baseline import RadiomicsBaseline, fit_radiomics_baseline
from .extract import extract_features

MAX_NAMED = 5   # failed images named in the log; the rest are counted

FeatureFn = Callable[..., object]   # (data, task, rcfg, data_root, progress=, log=) -> FeatureTable


def default_feature_fn() -> FeatureFn:
    return extract_features


def radiomics_run(cfg: RunConfig, out: Path, data_root: Path | None = None, *, overwrite: bool = False,
                  echo: bool = True, progress: bool = True, feature_fn: FeatureFn | None = None) -> RunMetrics:
    """Extract (or reuse) features, fit the baseline on the N-subset, score val/test; returns metrics.json's dict.

    ``feature_fn`` stands in for ``extract_features`` (tests pass a cheap one); it must return an
    object with ``features`` (DataFrame indexed by image_id), ``failed`` ({image_id: reason}) and ``settings``.
    """
    root = data_root or resolve_data_root(None)
    return recorded_run(cfg, out, overwrite, echo,
                        lambda folder, log, started: _fit_and_evaluate(cfg, folder, root, log, progress, started,
                                                                       feature_fn or default_feature_fn()))


@dataclass(frozen=True)
class _Fitted:
    """The baseline fitted on the training rows that have features, and how C was chosen."""
    model: RadiomicsBaseline
    chosen_c: float
    note: str
    train_rows: np.ndarray
    n_patients: int
    selection_val_ids: list[str]     # the validation images C was chosen on (pool_cv: the N-pool's share)
    pool_rows: np.ndarray            # dataset indices of the pool C was chosen on: training rows, then validation
    plan: SelectionPlan              # the CNN runs' selection at this data, N and seed (runs.cv)


def _fit_and_evaluate(cfg: RunConfig, folder: RunFolder, data_root: Path, log: Log, progress: bool, started: float,
                      feature_fn: FeatureFn) -> RunMetrics:
    log(f"medtransfer radiomics baseline -> {folder.path}")
    data, idx = prepare_run_data(cfg, data_root, log, progress)
    table = feature_fn(cfg.data, cfg.task, cfg.radiomics, data_root, progress=progress, log=log)
    features: pd.DataFrame = table.features
    if features.shape[1] == 0:
        raise DataError(f"radiomics: no features were extracted for {cfg.data.source} "
                        f"({len(table.failed)} images failed)")
    log(f"features: {features.shape[1]} per image for {len(features)} images")
    frames, missing = _frames_by_split(features, table.failed, data, idx, log)
    fitted = _fit(cfg, data, idx, frames, log)
    model = fitted.model
    val = (SplitScores(idx["val"], model.predict_scores(frames["val"])) if not model.refit_on_pool else
           SplitScores(fitted.pool_rows, model.oof_scores, folds=model.fold_auroc))   # fitted on every pool row: OOF
    scored = score_run(folder, data, cfg.task.kind, val,
                       SplitScores(idx["test"], model.predict_scores(frames["test"]), folder.predictions_path), log)
    model.coefficients(data.label_names).to_csv(folder.coefficients_path, float_format="%.6g")
    fit_rows = fitted.pool_rows if model.refit_on_pool else fitted.train_rows   # the rows the radiomics model fitted
    compared = compare_baselines(cfg, folder, data, fit_rows, idx["test"], scored.test_interval, log)
    return RunMetrics(
        task_kind=cfg.task.kind, label_names=data.label_names, val=scored.val, test=scored.test,
        n_train_images=int(len(fitted.pool_rows if model.refit_on_pool else fitted.train_rows)),
        n_train_patients=fitted.n_patients, n_val_images=int(len(val.rows)), n_test_images=int(len(idx["test"])), epochs_run=None, best_epoch=None,
        stopped_reason="radiomics baseline: no epochs", seconds=round(time.time() - started, 2), device="cpu",
        method=RunMethod.RADIOMICS, details={**_details(cfg, fitted, features, missing, getattr(table, "settings", None)),
                                             **verdict_details(scored, compared)})


def _frames_by_split(features: pd.DataFrame, failed: dict[str, str], data: PreparedData, idx: dict[str, np.ndarray],
                     log: Log) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]]]:
    """Each split's feature rows in the split's order (an image without features: a row of NaN), and
    the ids of those images per split, which the log names."""
    frames, missing = {}, {}
    for split, rows in idx.items():
        ids = [data.image_ids[i] for i in rows]
        frames[split] = features.reindex(ids)          # an image without features: a row of NaN
        missing[split] = [i for i, ok in zip(ids, frames[split].notna().any(axis=1)) if not ok]
        if missing[split]:
            shown = ", ".join(f"{i} ({failed.get(i, 'not in the feature table')})" for i in missing[split][:MAX_NAMED])
            more = f" and {len(missing[split]) - MAX_NAMED} more" if len(missing[split]) > MAX_NAMED else ""
            what = "left out of training" if split == "train" else "scored with median-imputed features"
            log(f"{split}: {len(missing[split])} images without features, {what}: {shown}{more}")
    return frames, missing


def _fit(cfg: RunConfig, data: PreparedData, idx: dict[str, np.ndarray], frames: dict[str, pd.DataFrame],
         log: Log) -> _Fitted:
    """The baseline on the training images that have features; C chosen as ``radiomics.selection`` says."""
    keep = frames["train"].notna().any(axis=1).to_numpy()
    train_rows = idx["train"][keep]
    if len(train_rows) == 0:
        raise DataError(f"radiomics: feature extraction failed for all {len(idx['train'])} training images")
    n_patients = int(len(np.unique(data.patient_ids[train_rows])))
    log(f"training on {len(train_rows)} images from {n_patients} patients; "
        f"val {len(idx['val'])}, test {len(idx['test'])} images")
    val_pos = _selection_val(cfg, data, idx, frames["val"], log)
    val_rows = idx["val"][val_pos]
    plan = plan_selection(cfg, data, idx)
    model, chosen_c, note = fit_radiomics_baseline(
        frames["train"][keep], data.labels[train_rows], frames["val"].iloc[val_pos], data.labels[val_rows],
        cfg.task.kind, cfg.radiomics, groups_train=data.patient_ids[train_rows], groups_val=data.patient_ids[val_rows],
        seed=cfg.train.seed, n_outputs=len(data.label_names), label_names=data.label_names,
        cv_folds=cfg.train.cv_folds, refit_on_pool=plan.kind is SelectionKind.CV)
    log(note)
    for line in model.notes:
        log(line)
    pool_rows = np.concatenate([train_rows, val_rows])
    if model.refit_on_pool:
        n_patients = int(len(np.unique(data.patient_ids[pool_rows])))
    return _Fitted(model, chosen_c, note, train_rows, n_patients, [str(data.image_ids[i]) for i in val_rows],
                   pool_rows, plan)


def _selection_val(cfg: RunConfig, data: PreparedData, idx: dict[str, np.ndarray], val_frame: pd.DataFrame,
                   log: Log) -> np.ndarray:
    """Positions in ``idx["val"]`` of the validation images C may be chosen on. pool_cv: the share a user with
    N training images would hold out (the CNN runs' ``data.val_size=proportional`` draw, the same call), less
    images without features (an imputed row says nothing about C), never the whole validation split. Other
    selections: the validation split as the run has it."""
    if cfg.radiomics.selection != "pool_cv":
        return np.arange(len(idx["val"]))
    share = validation_share(cfg, data, idx)
    in_share = np.isin(idx["val"], share) & val_frame.notna().any(axis=1).to_numpy()
    log(f"radiomics C: chosen inside the N-pool: {len(idx['train'])} training + {int(in_share.sum())} of "
        f"{len(idx['val'])} validation images (the proportional share with features)")
    return np.flatnonzero(in_share)


def _chosen_on(model: RadiomicsBaseline, fitted: _Fitted) -> dict[str, Any]:
    """Which images C was chosen on (counts, folds; pool_cv: the validation share's ids, so a reader can check
    that no image outside the N-pool informed C)."""
    pool = model.selection == "pool_cv"
    out = {"images": ("the N-pool: the training subset and its proportional validation share" if pool
                      else "the training subset and the validation split"), **model.chosen_on}
    if pool:
        out["val_image_ids"] = fitted.selection_val_ids
    return out


def _details(cfg: RunConfig, fitted: _Fitted, features: pd.DataFrame, missing: dict[str, list[str]],
             settings) -> dict[str, Any]:
    """metrics.json's radiomics keys: the chosen C and how, the penalty, the feature counts and settings."""
    model = fitted.model
    return {
        "chosen_C": float(fitted.chosen_c),
        "selection": model.selection,
        "selection_note": fitted.note,
        "c_chosen_on": _chosen_on(model, fitted),
        "selection_scores": {f"{c:g}": s for c, s in model.selection_scores.items()},
        "penalty": cfg.radiomics.penalty,
        "n_features": int(features.shape[1]),
        "n_features_used": len(model.kept_features),
        "images_without_features": {split: len(ids) for split, ids in missing.items()},
        "feature_settings": settings,
        "notes": model.notes,
        "selected_by": _selection_record(fitted),
    }


def _selection_record(fitted: _Fitted) -> dict[str, Any]:
    """metrics.json's ``selected_by``, as a CNN run's (runs.cv): cv with the chosen C's fold AUROCs where the
    baseline was refitted on the pool, else holdout with the CNN runs' reason."""
    model, plan = fitted.model, fitted.plan
    if not model.refit_on_pool:
        return {"kind": SelectionKind.HOLDOUT.value, "reason": plan.reason}
    folds = [None if not math.isfinite(v) else round(float(v), 6) for v in model.fold_auroc]
    finite = [v for v in folds if v is not None]
    return {"kind": SelectionKind.CV.value, "reason": plan.reason, "folds": len(folds),
            "pool_images": int(len(fitted.pool_rows)), "pool_patients": fitted.n_patients, "fold_auroc": folds,
            "cv_auroc_mean": round(float(np.mean(finite)), 6) if finite else None}

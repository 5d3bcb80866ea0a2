"""One radiomics-baseline run, with the same run folder as a CNN run (``medtransfer.runs.train_run``).

The splits and the N-subset come from the same ``prepare_data`` call a CNN run makes (same
data config, ``train.n_train``, ``train.seed``), so the baseline is scored on exactly the
CNN runs' test images and the comparison is paired.

Images whose feature extraction failed: left out of training (they carry no features to
learn from), kept in val and test with the training medians imputed for every feature
(every test image keeps a score, so the pairing with the CNN runs stays complete; such an
image gets the score of an "average" image). Both counts are logged and kept in metrics.json.

Run folder: config.yaml, train.log, predictions_test.csv (the CNN columns), coefficients.csv
(weights per standardised feature and label), metrics.json (last, atomically; the CNN keys
plus ``method: radiomics``, the chosen C and how, the feature counts and settings);
failed.json instead when the run fails.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..config import RunConfig, resolve_data_root
from ..errors import DataError
from ..kinds import RunMethod
from ..run_folder import RunFolder, RunMetrics
from ..runs import (add_operating_points, add_test_interval, prepare_run_data, recorded_run, run_thresholds,
                    write_predictions)
from .baseline import fit_radiomics_baseline

MAX_NAMED = 5   # failed images named in the log; the rest are counted

FeatureFn = Callable[..., object]   # (data, task, rcfg, data_root, progress=, log=) -> FeatureTable


def default_feature_fn() -> FeatureFn:
    from .extract import extract_features

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


def _fit_and_evaluate(cfg: RunConfig, folder: RunFolder, data_root: Path, log, progress: bool, started: float,
                      feature_fn: FeatureFn) -> RunMetrics:
    from ..evaluate import score_metrics

    log(f"medtransfer radiomics baseline -> {folder.path}")
    data, idx = prepare_run_data(cfg, data_root, log, progress)

    table = feature_fn(cfg.data, cfg.task, cfg.radiomics, data_root, progress=progress, log=log)
    features: pd.DataFrame = table.features
    if features.shape[1] == 0:
        raise DataError(f"radiomics: no features were extracted for {cfg.data.source} "
                        f"({len(table.failed)} images failed)")
    log(f"features: {features.shape[1]} per image for {len(features)} images")

    frames, missing = {}, {}
    for split, rows in idx.items():
        ids = [data.image_ids[i] for i in rows]
        frames[split] = features.reindex(ids)          # an image without features: a row of NaN
        missing[split] = [i for i, ok in zip(ids, frames[split].notna().any(axis=1)) if not ok]
        if missing[split]:
            shown = ", ".join(f"{i} ({table.failed.get(i, 'not in the feature table')})" for i in missing[split][:MAX_NAMED])
            more = f" and {len(missing[split]) - MAX_NAMED} more" if len(missing[split]) > MAX_NAMED else ""
            what = "left out of training" if split == "train" else "scored with median-imputed features"
            log(f"{split}: {len(missing[split])} images without features, {what}: {shown}{more}")
    keep = frames["train"].notna().any(axis=1).to_numpy()
    train_rows = idx["train"][keep]
    if len(train_rows) == 0:
        raise DataError(f"radiomics: feature extraction failed for all {len(idx['train'])} training images")
    n_patients = int(len(np.unique(data.patient_ids[train_rows])))
    log(f"training on {len(train_rows)} images from {n_patients} patients; "
        f"val {len(idx['val'])}, test {len(idx['test'])} images")

    model, chosen_c, note = fit_radiomics_baseline(
        frames["train"][keep], data.labels[train_rows], frames["val"], data.labels[idx["val"]], cfg.task.kind,
        cfg.radiomics, groups_train=data.patient_ids[train_rows], groups_val=data.patient_ids[idx["val"]],
        seed=cfg.train.seed, n_outputs=len(data.label_names), label_names=data.label_names)
    log(note)
    for line in model.notes:
        log(line)

    scored, raw = {}, {}
    for split in ("val", "test"):
        rows = idx[split]
        scores = model.predict_scores(frames[split])
        scored[split] = score_metrics(data.labels[rows], scores, cfg.task.kind, data.label_names)
        raw[split] = (data.labels[rows], scores)
        if split == "test":
            write_predictions(folder.predictions_path, [data.image_ids[i] for i in rows],
                              data.labels[rows], scores, data.label_names, cfg.task.kind,
                              data.patient_ids[rows] if data.has_patient_ids else None)
    add_test_interval(scored, folder, cfg.task.kind, *raw["test"], data, idx["test"], log)
    thresholds = run_thresholds(cfg.task.kind, data.label_names, raw["val"], raw["test"])
    folder.write_thresholds(thresholds)
    add_operating_points(scored, thresholds)
    model.coefficients(data.label_names).to_csv(folder.coefficients_path, float_format="%.6g")
    details = {
        "chosen_C": float(chosen_c),
        "selection": model.selection,
        "selection_note": note,
        "selection_scores": {f"{c:g}": s for c, s in model.selection_scores.items()},
        "penalty": cfg.radiomics.penalty,
        "n_features": int(features.shape[1]),
        "n_features_used": len(model.kept_features),
        "images_without_features": {split: len(ids) for split, ids in missing.items()},
        "feature_settings": getattr(table, "settings", None),
        "notes": model.notes,
    }
    return RunMetrics(
        task_kind=cfg.task.kind, label_names=data.label_names, val=scored["val"], test=scored["test"],
        n_train_images=int(len(train_rows)), n_train_patients=n_patients, n_val_images=int(len(idx["val"])),
        n_test_images=int(len(idx["test"])), epochs_run=None, best_epoch=None,
        stopped_reason="radiomics baseline: no epochs", seconds=round(time.time() - started, 2), device="cpu",
        method=RunMethod.RADIOMICS, details=details)

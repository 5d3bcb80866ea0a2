"""Each finished run's test bootstrap draws, as the report combines (seeds) and pairs (recipes) them.

A run written by this version keeps its draws in ``test_bootstrap.npz`` (``evaluate.per_run``);
an older run's are recomputed here from its ``predictions_test.csv`` with the same resample
seed (patients where the file has a ``patient_id`` column, else images), so every run of a
study on the same test images has the same patient resamples either way. Each comes with a
fingerprint of its test set: draws are only combined or paired across equal fingerprints.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import MedtransferError
from ..evaluate.bootstrap import bootstrap_auroc_samples
from ..evaluate.per_run import RUN_BOOTSTRAP_N, RUN_BOOTSTRAP_SEED, test_set_fingerprint
from ..kinds import RunStatus
from ..run_folder import RunFolder
from .paired import UnusablePredictions, read_predictions


class RunDraws(NamedTuple):
    values: np.ndarray      # (B,) test AUROC of each patient resample
    test_set: str           # fingerprint of the test images and clusters (evaluate.per_run.test_set_fingerprint)


def run_draws(study_dir: Path | None, runs: pd.DataFrame) -> dict[str, RunDraws]:
    """run_id -> its test draws, for every done run whose draws exist or can be rebuilt."""
    out: dict[str, RunDraws] = {}
    if study_dir is None:
        return out
    done = runs[(runs["status"] == RunStatus.DONE) & runs["run_dir"].notna()]
    for run_id, run_dir, kind in zip(done["run_id"], done["run_dir"], done["task_kind"]):
        folder = RunFolder(Path(study_dir) / str(run_dir))
        saved = folder.read_bootstrap()
        got = (RunDraws(np.asarray(saved[0], dtype=np.float64), saved[1]) if saved
               else _from_predictions(folder.predictions_path, kind))
        if got is not None and len(got.values):
            out[run_id] = got
    return out


def baseline_draws(study_dir: Path | None, runs: pd.DataFrame, key: str) -> dict[str, RunDraws]:
    """run_id -> the test draws of the baseline ``key`` fitted beside that run (runs.baselines): the run's own
    patient resamples scored by the baseline, so the run and its baseline pair as two recipes do. Runs from
    before baselines were fitted are left out."""
    out: dict[str, RunDraws] = {}
    if study_dir is None:
        return out
    done = runs[(runs["status"] == RunStatus.DONE) & runs["run_dir"].notna()]
    for run_id, run_dir in zip(done["run_id"], done["run_dir"]):
        saved = RunFolder(Path(study_dir) / str(run_dir)).read_baseline_bootstrap(key)
        if saved is not None and len(saved[0]):
            out[run_id] = RunDraws(np.asarray(saved[0], dtype=np.float64), saved[1])
    return out


def val_draws(study_dir: Path | None, runs: pd.DataFrame) -> dict[str, RunDraws]:
    """run_id -> its VALIDATION draws, rebuilt from ``predictions_val.csv`` where the run kept it.

    The recipe choice is made on validation, so whether two recipes can be told apart there is a question
    about the validation images: the same resample seed gives two runs scored on the same validation
    images the same resamples (a paired bootstrap, as for test). Runs without the file are left out.
    """
    out: dict[str, RunDraws] = {}
    if study_dir is None:
        return out
    done = runs[(runs["status"] == RunStatus.DONE) & runs["run_dir"].notna()]
    if "selection" in done:   # a cross-validated run's are out-of-fold scores: its folds are compared instead
        done = done[done["selection"] != "cv"]
    for run_id, run_dir, kind in zip(done["run_id"], done["run_dir"], done["task_kind"]):
        got = _from_predictions(RunFolder(Path(study_dir) / str(run_dir)).val_predictions_path, kind)
        if got is not None and len(got.values):
            out[run_id] = got
    return out


def _from_predictions(path: Path, task_kind) -> RunDraws | None:
    try:
        targets, scores = read_predictions(path, task_kind)
        ids = pd.read_csv(path, usecols=lambda c: c in ("image_id", "patient_id"), dtype=str)
        clusters = (ids["patient_id"] if "patient_id" in ids.columns else ids["image_id"]).to_numpy()
        values = bootstrap_auroc_samples(targets.to_numpy(), scores.to_numpy(), clusters, n_boot=RUN_BOOTSTRAP_N,
                                         seed=RUN_BOOTSTRAP_SEED)
        return RunDraws(values, test_set_fingerprint(ids["image_id"].to_numpy(), clusters))
    except (UnusablePredictions, MedtransferError, OSError, ValueError):
        return None

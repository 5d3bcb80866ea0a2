"""Paired DeLong test of two runs of a study from their predictions_test.csv files.

The only place the report reads run folders. Image ids are used to pair the two
runs' rows and never leave this module; what comes back is numbers and a short
reason that names no file, image or patient.

Every task kind is tested on its macro AUROC (the study's headline number):
binary = the one label; multi-label = mean over findings; multiclass = mean of the
one-vs-rest AUROCs; labels without both classes in the test split are left out,
as in ``score_metrics``. See ``delong_paired_macro`` for the variance.

Where the predictions carry patient ids (the data has them), images of one patient are one cluster for
every task kind (``delong_paired_macro_clustered``, Obuchowski 1997), as the bootstrap resamples patients;
a DeLong that ignored the clusters would give optimistic p-values. Each result names its ``test``: one of
``CLUSTERED``, ``UNCLUSTERED``, or, where the clustered DeLong cannot be computed, ``BOOTSTRAP_ONLY``
(the page then rests on the patient-clustered bootstrap interval alone).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MedtransferError
from ..evaluate.delong import delong_paired_macro, delong_paired_macro_clustered
from ..kinds import TaskKind
from ..run_folder import RunFolder

PREDICTIONS = RunFolder.PREDICTIONS
CLUSTERED = "DeLong, clustered by patient (Obuchowski)"
UNCLUSTERED = "DeLong (one image per patient)"
BOOTSTRAP_ONLY = "clustered bootstrap only"


class UnusablePredictions(Exception):
    """Why a run's test predictions cannot be paired or resampled (a short reason, no paths or ids)."""


def read_predictions(path: Path, task_kind: TaskKind | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(targets, scores): two DataFrames indexed by image id, one 0/1 / score column per label."""
    if not path.is_file():
        raise UnusablePredictions(f"{PREDICTIONS} not found")
    try:
        frame = pd.read_csv(path, dtype={"image_id": str})
    except (OSError, ValueError) as err:
        raise UnusablePredictions(f"{PREDICTIONS} unreadable ({type(err).__name__})") from None
    labels = [c[len("score_"):] for c in frame.columns if c.startswith("score_")]
    if "image_id" not in frame.columns or not labels:
        raise UnusablePredictions(f"{PREDICTIONS} lacks image_id or score_ columns")
    if frame["image_id"].duplicated().any():
        raise UnusablePredictions(f"{PREDICTIONS} lists an image twice")
    frame = frame.set_index("image_id")
    scores = frame[[f"score_{n}" for n in labels]].set_axis(labels, axis=1)
    if task_kind == TaskKind.MULTICLASS or ("true" in frame.columns and f"true_{labels[0]}" not in frame.columns):
        if "true" not in frame.columns:
            raise UnusablePredictions(f"{PREDICTIONS} lacks the 'true' column")
        truth = frame["true"].astype(str)
        targets = pd.DataFrame({n: (truth == n).astype(int) for n in labels}, index=frame.index)
    else:
        missing = [n for n in labels if f"true_{n}" not in frame.columns]
        if missing:
            raise UnusablePredictions(f"{PREDICTIONS} lacks a true_ column for a scored label")
        targets = frame[[f"true_{n}" for n in labels]].set_axis(labels, axis=1)
    return targets, scores


def read_patient_ids(path: Path) -> pd.Series | None:
    """image id -> patient id from a predictions file's ``patient_id`` column (None for files without one)."""
    try:
        frame = pd.read_csv(path, usecols=lambda c: c in ("image_id", "patient_id"), dtype=str)
    except (OSError, ValueError):
        return None
    if "patient_id" not in frame.columns or "image_id" not in frame.columns:
        return None
    return frame.set_index("image_id")["patient_id"]


def _load(study_dir: Path, run_dir, task_kind, cache: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    if run_dir is None or pd.isna(run_dir):
        raise UnusablePredictions("run folder not recorded")
    key = (str(run_dir), task_kind)
    if key not in cache:
        try:
            cache[key] = read_predictions(study_dir / str(run_dir) / PREDICTIONS, task_kind)
        except UnusablePredictions as err:
            cache[key] = err
    if isinstance(cache[key], UnusablePredictions):
        raise cache[key]
    return cache[key]


def _shared(ta: pd.DataFrame, sa: pd.DataFrame, tb: pd.DataFrame, sb: pd.DataFrame) -> tuple[pd.Index, str | None]:
    """(the images both runs scored, a note when that is not all of them); UnusablePredictions if they disagree."""
    if list(sa.columns) != list(sb.columns):
        raise UnusablePredictions("the two runs scored different labels")
    shared = ta.index.intersection(tb.index)
    if len(shared) == 0:
        raise UnusablePredictions("no test image scored by both runs")
    if not np.array_equal(ta.loc[shared].to_numpy(), tb.loc[shared].to_numpy()):
        raise UnusablePredictions("the two runs disagree on the test labels")
    note = None if len(shared) == len(ta) == len(tb) else (
        f"only {len(shared)} of {max(len(ta), len(tb))} test images scored by both runs")
    return shared, note


def _test(targets: np.ndarray, a: np.ndarray, b: np.ndarray, patients: pd.Series | None, shared: pd.Index
          ) -> tuple[dict, str]:
    """(DeLong result, which test): clustered by patient where the predictions carry patient ids."""
    if patients is None:
        return delong_paired_macro(targets, a, b), UNCLUSTERED
    ids = patients.reindex(shared)
    if ids.isna().any():
        raise UnusablePredictions(f"patient ids missing for some test images: {BOOTSTRAP_ONLY}")
    try:
        return delong_paired_macro_clustered(targets, a, b, ids.to_numpy()), CLUSTERED
    except MedtransferError as err:      # e.g. under 2 patients with a positive: the message names no patient
        raise UnusablePredictions(f"{str(err).split(': ', 1)[-1]}; {BOOTSTRAP_ONLY}") from None


def paired_delong(study_dir: Path, run_dir_a, run_dir_b, task_kind: TaskKind | None, cache: dict | None = None) -> dict:
    """DeLong test of macro AUROC(a) - AUROC(b) on the test images both runs scored.

    Returns diff, se, p_value, ci_low, ci_high, n_images, n_labels, ``test`` (which DeLong: clustered by
    patient where the predictions carry patient ids, see the module docstring) and ``note`` (None when the
    two runs scored exactly the same images), or p_value None and ``note`` saying why no test was possible.
    ``cache`` (a dict) lets a caller read each run's file once.
    """
    cache = {} if cache is None else cache
    try:
        ta, sa = _load(study_dir, run_dir_a, task_kind, cache)
        tb, sb = _load(study_dir, run_dir_b, task_kind, cache)
        shared, note = _shared(ta, sa, tb, sb)
        patients = read_patient_ids(study_dir / str(run_dir_a) / PREDICTIONS)
        got, test = _test(ta.loc[shared].to_numpy(), sa.loc[shared].to_numpy(), sb.loc[shared].to_numpy(),
                          patients, shared)
    except UnusablePredictions as err:
        return {"p_value": None, "note": str(err), **({"test": BOOTSTRAP_ONLY} if BOOTSTRAP_ONLY in str(err) else {})}
    except MedtransferError as err:      # e.g. fewer than 2 positives: the message names no image
        return {"p_value": None, "note": str(err).split(": ", 1)[-1]}
    return {**{k: got[k] for k in ("diff", "se", "p_value", "ci_low", "ci_high", "n_labels")},
            "n_images": int(len(shared)), "note": note, "test": test}

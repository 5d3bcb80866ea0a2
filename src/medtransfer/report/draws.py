"""Each finished run's test bootstrap draws, as the report combines (seeds) and pairs (recipes) them.

A run written by this version keeps its draws in ``test_bootstrap.npy`` (``evaluate.per_run``);
an older run's are recomputed here from its ``predictions_test.csv`` with the same resample
seed (patients where the file has a ``patient_id`` column, else images), so every run of a
study on the same test images has the same patient resamples either way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MedtransferError
from ..evaluate.bootstrap import bootstrap_auroc_samples
from ..evaluate.per_run import RUN_BOOTSTRAP_N, RUN_BOOTSTRAP_SEED
from ..kinds import RunStatus
from ..run_folder import RunFolder
from .paired import _Unusable, read_predictions


def run_draws(study_dir: Path | None, runs: pd.DataFrame) -> dict[str, np.ndarray]:
    """run_id -> its (B,) test AUROC draws, for every done run whose draws exist or can be rebuilt."""
    out: dict[str, np.ndarray] = {}
    if study_dir is None:
        return out
    done = runs[(runs["status"] == RunStatus.DONE) & runs["run_dir"].notna()]
    for run_id, run_dir, kind in zip(done["run_id"], done["run_dir"], done["task_kind"]):
        folder = RunFolder(Path(study_dir) / str(run_dir))
        draws = folder.read_bootstrap()
        if draws is None:
            draws = _from_predictions(folder, kind)
        if draws is not None and len(draws):
            out[run_id] = np.asarray(draws, dtype=np.float64)
    return out


def _from_predictions(folder: RunFolder, task_kind) -> np.ndarray | None:
    try:
        targets, scores = read_predictions(folder.predictions_path, task_kind)
        ids = pd.read_csv(folder.predictions_path, usecols=lambda c: c in ("image_id", "patient_id"),
                          dtype=str)
        clusters = (ids["patient_id"] if "patient_id" in ids.columns else ids["image_id"]).to_numpy()
        return bootstrap_auroc_samples(targets.to_numpy(), scores.to_numpy(), clusters, n_boot=RUN_BOOTSTRAP_N,
                                       seed=RUN_BOOTSTRAP_SEED)
    except (_Unusable, MedtransferError, OSError, ValueError):
        return None

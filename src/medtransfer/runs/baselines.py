"""The simple baseline every run is measured against on its own split, and the run's verdict (issue 24).

A model that does not beat a logistic regression on 16 x 16 pixels (``radiomics.pixels``) has not shown that it
learned anything a user needs a CNN for, so every run (``medtransfer train``, a study's CNN and radiomics runs,
advise's final run) fits that baseline on the run's own training images (its N-pool when it cross-validated,
as the model trained on), scores it on the run's own test images and resamples it on the same test patients
as the model: model - baseline is then a paired difference (``evaluate.per_run.compare_with_baseline``). It
costs seconds. metrics.json keeps ``baselines`` (each comparison) and ``verdict`` (better than chance, than
each baseline, what to suspect); the run folder keeps the baseline's draws (``baseline_bootstrap.npz``) for a
report to pair over seeds. The radiomics baseline is a run of its own in a study: its features cost minutes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import RunConfig
from ..data import PreparedData
from ..errors import MedtransferError
from ..evaluate.per_run import BaselineComparison, RunInterval, compare_with_baseline
from ..radiomics.pixels import PIXEL_BASELINE, PIXEL_KEY, fit_pixel_baseline
from ..run_folder import RunFolder
from .folder_protocol import Log
from .scoring import Scored, SplitScores, run_verdict, split_interval


@dataclass(frozen=True)
class Compared:
    """The baselines compared with a run's model, and those that could not be (each with why)."""
    baselines: list[BaselineComparison] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def compare_baselines(cfg: RunConfig, folder: RunFolder, data: PreparedData, fit_rows: np.ndarray,
                      test_rows: np.ndarray, model: RunInterval | None, log: Log) -> Compared:
    """Fit the pixel baseline on ``fit_rows``, score it on ``test_rows`` and compare it with the model's test
    interval; a baseline that cannot be fitted or compared is said, never a reason to fail the run."""
    if model is None:
        return Compared(missing=[f"{PIXEL_BASELINE}: the model's test AUROC has no interval"])
    try:
        base = fit_pixel_baseline(data.images[fit_rows], data.labels[fit_rows], data.clusters(fit_rows),
                                  cfg.task.kind, seed=cfg.train.seed, label_names=list(data.label_names),
                                  cv_folds=cfg.train.cv_folds)
    except MedtransferError as err:
        log(f"{PIXEL_BASELINE}: not fitted ({err})")
        return Compared(missing=[f"{PIXEL_BASELINE}: not fitted ({err})"])
    log(base.note)
    interval = split_interval(data, cfg.task.kind, SplitScores(test_rows, base.predict_scores(data.images[test_rows])))
    compared = None if interval is None else compare_with_baseline(model, interval, PIXEL_BASELINE, base.note)
    if compared is None:
        log(f"{PIXEL_BASELINE}: its test AUROC has no interval on these test images: not compared")
        return Compared(missing=[f"{PIXEL_BASELINE}: no test interval on these test images"])
    folder.write_baseline_bootstrap({PIXEL_KEY: interval.draws}, interval.test_set)
    log(f"{PIXEL_BASELINE}: test AUROC {compared.auroc:.4f} (95% CI {compared.low:.4f} to {compared.high:.4f}); "
        f"model - baseline {compared.difference:+.4f} (95% CI {compared.diff_low:+.4f} to {compared.diff_high:+.4f})")
    return Compared([compared])


def verdict_details(scored: Scored, compared: Compared) -> dict:
    """metrics.json's ``baselines`` and ``verdict`` keys (``evaluate.per_run.RunVerdict`` reads them back)."""
    verdict = run_verdict(scored, compared.baselines, compared.missing)
    return {"baselines": [b.to_json() for b in compared.baselines], "verdict": verdict.to_json()}

"""A probe run (``train.strategy: probe``): the run's model, its backbone frozen, gets a logistic regression on
the backbone's features as its head (``train.probe``), and the run folder is a CNN run's (``runs.cnn``).

The regression sees what a CNN run of the same N and seed sees. When the run cross-validates, C is chosen on the
folds of the run's N-pool (the training subset and its validation share, ``runs.cv``), the folds every CNN run of
that (N, seed) cell uses, and the regression is fitted on the whole N-pool with the folds' out-of-fold scores as
its validation predictions. When the run selects on a validation split (holdout), C is chosen on patient-grouped
folds of the training subset alone and the regression fitted on it: the validation images, on which the study
ranks the probe against the CNN recipes, took no part in choosing it. (A CNN run's validation images do choose
its stopping round, so on a validation split the comparison leans, a little, toward the CNN recipes.) The
features come from the feature cache (``train.features``), so a probe costs one forward pass over its images
at most, and none when a run before it used the same backbone and images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import RunConfig
from ..data import PreparedData
from ..data.splits import fold_strata, pool_folds
from ..evaluate.metrics import one_vs_rest_targets
from ..evaluate.summary import cv_corrected_ci
from ..kinds import SelectionKind, auroc_name
from ..train.device import cpu_state
from ..train.features import FeatureTable
from ..train.probe import PROBE_C_GRID, ProbeFit, fit_probe_head
from ..train.tracks import FitResult
from .cv import SelectionPlan
from .folder_protocol import Log


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


@dataclass(frozen=True)
class ProbeCv:
    """A probe fitted on its whole N-pool: what ``runs.cnn.finish_cnn_run`` reads of a cross-validated run
    (``runs.cv.CvOutcome``'s ``plan``, ``oof_rows``, ``oof_scores``, ``pool_patients`` and ``record``)."""
    plan: SelectionPlan
    fold_auroc: list[float]
    oof_rows: np.ndarray        # dataset indices of the pool, sorted
    oof_scores: np.ndarray      # their out-of-fold scores at the chosen C, in oof_rows' order
    pool_patients: int

    def record(self) -> dict:
        """metrics.json's ``selected_by``: a cv run's keys, with no rounds (a probe has none)."""
        summary = cv_corrected_ci(self.fold_auroc, len(self.fold_auroc))   # the folds share training images
        return {"kind": SelectionKind.CV.value, "reason": self.plan.reason, "folds": len(self.plan.folds),
                "pool_images": int(len(self.plan.pool)), "pool_patients": self.pool_patients,
                "fold_auroc": [_num(v) for v in self.fold_auroc],
                "cv_auroc_mean": _num(summary.mean) if summary.n else None, "cv_auroc_se": _num(summary.sd)}


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe run fitted, for train.log and metrics.json's ``probe`` block."""
    fit: ProbeFit
    folds: int
    pool_images: int             # the images C was chosen on: the N-pool (cv) or the training subset (holdout)
    fitted_on: str
    cv: ProbeCv | None           # set when the regression was fitted on the whole pool

    def record(self) -> dict:
        return {"chosen_C": self.fit.C, "c_grid": list(PROBE_C_GRID), "folds": self.folds,
                "pool_images": self.pool_images, "cv_auroc_by_C": {f"{c:g}": _num(s) for c, s in self.fit.c_scores.items()},
                "fitted_on": self.fitted_on, "notes": list(self.fit.notes)}


def fit_probe(cfg: RunConfig, data: PreparedData, idx: dict[str, np.ndarray], plan: SelectionPlan,
              model: torch.nn.Module, features: FeatureTable, log: Log) -> tuple[FitResult, ProbeOutcome]:
    """Choose C on the N-pool's folds, fit, write the regression into ``model``'s head (see the module docstring)."""
    kind, refit = cfg.task.kind, plan.kind is SelectionKind.CV
    pool = plan.pool if refit else np.asarray(idx["train"])   # cv: the training subset, then its validation share
    folds = plan.folds if refit else pool_folds(
        data.patient_ids[pool], fold_strata(one_vs_rest_targets(data.labels[pool], kind, len(data.label_names))),
        cfg.train.seed, cfg.train.cv_folds)
    fitted = fit_probe_head(features.take(pool), data.labels[pool], folds, np.arange(len(pool)), kind,
                            len(data.label_names), cfg.train.seed)
    fitted.head.write_into(model)
    fitted_on = (f"the whole N-pool ({len(pool)} images)" if refit else f"the training subset ({len(pool)} images)")
    shown = ", ".join(f"{c:g}: {'n/a' if s is None else f'{s:.3f}'}" for c, s in fitted.c_scores.items())
    on = f"the N-pool ({len(pool)} images)" if refit else f"the training subset ({len(pool)} images)"
    where = (f"{len(folds)}-fold patient-grouped CV on {on}, mean fold {auroc_name(kind)} per C: {shown}"
             if folds else "default")
    log(f"probe: logistic regression on {model.num_features} frozen backbone features, C={fitted.C:g} chosen by "
        f"{where}; fitted on {fitted_on}")
    for note in fitted.notes:
        log(f"probe: {note}")
    cv = None
    if refit:
        order = np.argsort(pool, kind="stable")
        cv = ProbeCv(plan, fitted.fold_auroc, pool[order], fitted.oof_scores[order].astype(np.float32),
                     int(len(np.unique(data.patient_ids[pool]))))
    result = FitResult(best_state=cpu_state(model), history=[], lr_trace=[], epochs_run=0, best_epoch=0,
                       stopped_reason=f"linear probe: no epochs (logistic regression, C={fitted.C:g})")
    return result, ProbeOutcome(fitted, len(folds), int(len(pool)), fitted_on, cv)

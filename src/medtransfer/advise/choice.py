"""How ``advise`` names its pick among the last rung's trials, and which trials it cannot tell apart.

The study's report names a recipe by the one-standard-error rule and lists the recipes within noise of the
best (``report.selection``); advise answers the same question on the same kind of evidence, so it uses the same
rule (issue 23: "advise uses the same rule"):

* the best is the trial with the highest validation AUROC (cross-validated: the mean over the folds);
* its standard error: with cross-validated trials the corrected SE over the folds (Nadeau & Bengio, as the
  report), with a validation split the sd of a bootstrap over its patients;
* the pick is the cheapest trial within 1 SE of the best (probe < frozen < gradual < full fine-tuning, then fewer
  steps); at equal cost the higher AUROC, then the better-ranked initialisation (the search's order) — never
  a name;
* a trial is *within noise* of the best when the paired 95% interval of their difference contains 0 (the
  fold-paired corrected t-interval, or the paired bootstrap over the same validation patients).

Nothing here trains; it reads the trials' AUROCs, fold AUROCs and validation scores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
import numpy as np

from ..errors import DataError
from ..evaluate.bootstrap import bootstrap_auroc_samples
from ..evaluate.metrics import one_vs_rest_targets
from ..evaluate.summary import cv_corrected_ci
from .plan import STRATEGY_COST
from .trials import SearchData, Trial

N_BOOT = 1000
LEVEL = 0.95
ONE_SE_RULE = ("one-standard-error rule: the cheapest recipe whose validation AUROC is within 1 SE of the best's "
               "(probe < frozen < gradual < full fine-tuning, then fewer steps; at equal cost the higher AUROC, then the "
               "better-ranked initialisation; never the name)")


@dataclass(frozen=True)
class PairedInterval:
    """A paired difference a - b of two trials on the same validation evidence, with its 95% interval."""
    difference: float
    low: float
    high: float
    method: str

    @property
    def separable(self) -> bool:
        """The interval excludes 0 (an undefined interval separates nothing)."""
        return math.isfinite(self.low) and math.isfinite(self.high) and not (self.low <= 0 <= self.high)


@dataclass(frozen=True)
class PickChoice:
    """The last rung's pick, the rule that named it, the best trial's SE and the trials within noise of the best."""
    pick: Trial
    best: Trial
    rule: str
    se: float
    se_method: str
    within_noise: tuple[Trial, ...] = field(default_factory=tuple)   # the best included
    n_trials: int = 0

    @property
    def noise_line(self) -> str:
        return f"{len(self.within_noise)} of {self.n_trials} recipes within noise of the best"

    def to_json(self) -> dict:
        return {"rule": self.rule, "best": self.best.arm.label, "pick": self.pick.arm.label,
                "se": None if not math.isfinite(self.se) else round(self.se, 6), "se_method": self.se_method,
                "within_noise": [t.arm.label for t in self.within_noise], "noise_line": self.noise_line}


def paired_interval(data: SearchData, a: Trial, b: Trial) -> PairedInterval:
    """AUROC(a) - AUROC(b) with its paired 95% interval (NaN bounds when there is no evidence to pair)."""
    diff = a.val_auroc - b.val_auroc
    if data.folds:
        if len(a.fold_auroc) != len(b.fold_auroc) or not a.fold_auroc:
            return PairedInterval(diff, math.nan, math.nan, "no fold scores to pair")
        ci = cv_corrected_ci(np.subtract(a.fold_auroc, b.fold_auroc), len(data.folds), LEVEL)
        return PairedInterval(ci.mean, ci.low, ci.high, "fold-paired corrected t-interval (Nadeau & Bengio)")
    low, high = _bootstrap_difference(data, a.val_scores, b.val_scores)
    return PairedInterval(diff, low, high, "paired bootstrap over the validation patients")


def _bootstrap_difference(data: SearchData, scores_a, scores_b) -> tuple[float, float]:
    """Percentile interval of AUROC(a) - AUROC(b) over the same validation-patient resamples."""
    if scores_a is None or scores_b is None:
        return math.nan, math.nan
    targets = one_vs_rest_targets(data.val.labels, data.task_kind, data.n_outputs)
    try:
        a = bootstrap_auroc_samples(targets, scores_a, data.val.clusters, n_boot=N_BOOT, seed=0)
        b = bootstrap_auroc_samples(targets, scores_b, data.val.clusters, n_boot=N_BOOT, seed=0)
    except DataError:
        return math.nan, math.nan
    low, high = np.nanquantile(a - b, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return float(low), float(high)


def standard_error(data: SearchData, trial: Trial) -> tuple[float, str]:
    """(SE of the trial's validation AUROC, how it was measured); NaN when it cannot be."""
    if data.folds:
        ci = cv_corrected_ci(trial.fold_auroc, len(data.folds), LEVEL)
        return ci.sd, "corrected SE over the cross-validation folds"
    if trial.val_scores is None:
        return math.nan, "no validation scores"
    targets = one_vs_rest_targets(data.val.labels, data.task_kind, data.n_outputs)
    try:
        draws = bootstrap_auroc_samples(targets, trial.val_scores, data.val.clusters, n_boot=N_BOOT, seed=0)
    except DataError:
        return math.nan, "no bootstrap over the validation patients"
    return float(np.nanstd(draws, ddof=1)), "bootstrap over the validation patients"


def one_se_pick(data: SearchData, trials: list[Trial], order: dict) -> PickChoice:
    """The pick among ``trials`` (one rung, equal steps) by ONE_SE_RULE; ``order``: arm -> the search's rank."""
    scored = sorted((t for t in trials if math.isfinite(t.val_auroc)), key=lambda t: (-t.val_auroc, order[t.arm]))
    best = scored[0]
    se, how = standard_error(data, best)
    reach = best.val_auroc - (se if math.isfinite(se) else 0.0) - 1e-9
    near = [t for t in scored if t.val_auroc >= reach]
    pick = min(near, key=lambda t: (STRATEGY_COST.get(t.arm.strategy, 1.0), t.steps, -t.val_auroc, order[t.arm]))
    rule = ONE_SE_RULE if len(near) > 1 else "highest validation AUROC; no other recipe within 1 SE"
    within = tuple([best] + [t for t in scored[1:] if not paired_interval(data, t, best).separable])
    return PickChoice(pick, best, rule, se, how, within, len(scored))

"""Rank candidates by how well their frozen features suit the target, before any fine-tuning.

Two estimators from ``evaluate.transferability``: LogME (the evidence of a Bayesian linear model
on the features; the ranking key, as in You et al. 2021) and a patient-grouped, cross-validated
logistic probe (what a practitioner would try first; shown beside it, and the benchmark checks
both against fine-tuned results). A candidate whose features are constant or NaN, or whose model
could not be built, is kept in the list as unusable with its reason; the others are still ranked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..evaluate.transferability import logme_score, probe_auroc, unusable_reason
from ..kinds import TaskKind
from .features import CandidateFeatures

METHOD = ("LogME (You et al., ICML 2021): log evidence per image of a Bayesian linear model of each label on the "
          "frozen penultimate features of the training images, mean over labels with both classes (one-vs-rest for "
          "multiclass); higher is better, comparable between candidates on the same images. Probe: AUROC of a "
          "logistic regression on the same features, cross-validated with folds grouped by patient. Ranked by LogME.")


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's transferability scores; ``rank`` 1 is the best, None when unusable (``unusable`` says why)."""
    name: str
    logme: float | None
    probe_auroc: float | None
    rank: int | None
    unusable: str | None = None
    probe_note: str | None = None      # why the probe has no value while LogME does
    n_features: int | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "rank": self.rank, "logme": self.logme, "probe_auroc": self.probe_auroc,
                "unusable": self.unusable, "probe_note": self.probe_note, "n_features": self.n_features,
                "feature_seconds": round(self.seconds, 3)}


def score_one(feats: CandidateFeatures, labels: np.ndarray, kind: TaskKind, n_outputs: int,
              groups: np.ndarray) -> CandidateScore:
    """LogME and probe of one candidate, or the reason it cannot be scored."""
    if feats.features is None:
        return CandidateScore(feats.name, None, None, None, unusable=feats.error or "no features",
                              seconds=feats.seconds)
    reason = unusable_reason(feats.features)
    n_features = int(feats.features.shape[1]) if feats.features.ndim == 2 else None
    if reason:
        return CandidateScore(feats.name, None, None, None, unusable=reason, n_features=n_features,
                              seconds=feats.seconds)
    try:
        logme = logme_score(feats.features, labels, kind, n_outputs)
    except DataError as err:
        return CandidateScore(feats.name, None, None, None, unusable=str(err), n_features=n_features,
                              seconds=feats.seconds)
    if not np.isfinite(logme):
        return CandidateScore(feats.name, None, None, None, unusable="LogME is not finite on these features",
                              n_features=n_features, seconds=feats.seconds)
    try:
        probe, note = probe_auroc(feats.features, labels, kind, n_outputs, groups), None
    except DataError as err:
        probe, note = None, str(err)
    return CandidateScore(feats.name, float(logme), probe, None, probe_note=note, n_features=n_features,
                          seconds=feats.seconds)


def rank_candidates(features: dict[str, CandidateFeatures], labels: np.ndarray, kind: TaskKind, n_outputs: int,
                    groups: np.ndarray) -> list[CandidateScore]:
    """Usable candidates by LogME (best first; ties by probe AUROC, then name), then the unusable ones."""
    scored = [score_one(f, labels, kind, n_outputs, groups) for f in features.values()]
    usable = sorted((s for s in scored if s.unusable is None),
                    key=lambda s: (-s.logme, -(s.probe_auroc if s.probe_auroc is not None else -np.inf), s.name))
    ranked = [CandidateScore(s.name, s.logme, s.probe_auroc, i + 1, None, s.probe_note, s.n_features, s.seconds)
              for i, s in enumerate(usable)]
    return ranked + sorted((s for s in scored if s.unusable is not None), key=lambda s: s.name)

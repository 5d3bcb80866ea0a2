"""Rank candidates by how well their frozen features suit the target, before any fine-tuning.

Four estimators from ``evaluate.transferability``: LogME (the evidence of a Bayesian linear model
on the features, You et al. 2021), a patient-grouped, cross-validated logistic probe (what a
practitioner would try first), a leave-one-patient-out k-NN AUROC (the plain score large
benchmarks find best, arXiv 2503.18528) and SFDA (a regularised Fisher discriminant challenged
with confidence-mixed features, Shao et al. 2022). All four are computed and shown; the ranking key
(``RANKED_BY``) is the one that agreed best with fine-tuning in benchmarks/advise_vs_grid.py
(weighted Kendall tau against the grid's fine-tuned ranking, in benchmarks/README.md), and the page
names it. A candidate whose features are constant or NaN, or whose model could not be built, is kept
in the list as unusable with its reason; the others are still ranked.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..errors import DataError
from ..evaluate.transferability import KNN_K, knn_auroc, logme_score, probe_auroc, sfda_score, unusable_reason
from ..kinds import TaskKind
from .features import CandidateFeatures


class RankScore(Enum):
    """A transferability score the candidates can be ranked by (the value: its name on the page)."""
    LOGME = "LogME"
    PROBE = "probe AUROC"
    KNN = "k-NN AUROC"
    SFDA = "SFDA"


# The ranking key: the score with the highest weighted Kendall tau against the grid's fine-tuned ranking in
# benchmarks/advise_vs_grid.py --ranking-only (benchmarks/README.md has the table).
RANKED_BY = RankScore.KNN

METHOD = ("LogME (You et al., ICML 2021): log evidence per image of a Bayesian linear model of each label on the "
          "frozen penultimate features of the training images, mean over labels with both classes (one-vs-rest for "
          "multiclass); higher is better, comparable between candidates on the same images. Probe: AUROC of a "
          "logistic regression on the same features, cross-validated with folds grouped by patient. k-NN: AUROC of "
          f"the share of positives among each image's {KNN_K} most similar images (cosine, standardised features) "
          "of other patients. SFDA (Shao et al., ECCV 2022): mean probability of each image's true class under a "
          "shrinkage Fisher discriminant on the standardised features, refitted after each image is pulled toward "
          "the other classes' mean by its own uncertainty; 0-1, higher is better (in-sample: it crowds toward 1 when "
          f"there are fewer images than features). Ranked by {RANKED_BY.value}, the score that agreed best with "
          "fine-tuned results in medtransfer's benchmark (benchmarks/README.md).")


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's transferability scores; ``rank`` 1 is the best, None when unusable (``unusable`` says why)."""
    name: str
    logme: float | None
    probe_auroc: float | None
    rank: int | None
    unusable: str | None = None
    probe_note: str | None = None      # why the probe (or the k-NN score, or SFDA) has no value while LogME does
    n_features: int | None = None
    seconds: float = 0.0
    knn_auroc: float | None = None
    sfda: float | None = None

    def score(self, by: RankScore) -> float | None:
        return {RankScore.LOGME: self.logme, RankScore.PROBE: self.probe_auroc, RankScore.KNN: self.knn_auroc,
                RankScore.SFDA: self.sfda}[by]

    def to_json(self) -> dict:
        return {"name": self.name, "rank": self.rank, "logme": self.logme, "probe_auroc": self.probe_auroc,
                "knn_auroc": self.knn_auroc, "sfda": self.sfda, "ranked_by": RANKED_BY.value,
                "unusable": self.unusable, "probe_note": self.probe_note, "n_features": self.n_features,
                "feature_seconds": round(self.seconds, 3)}


def score_one(feats: CandidateFeatures, labels: np.ndarray, kind: TaskKind, n_outputs: int,
              groups: np.ndarray) -> CandidateScore:
    """LogME, probe, k-NN and SFDA of one candidate, or the reason it cannot be scored."""
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
    notes = []
    try:
        probe = probe_auroc(feats.features, labels, kind, n_outputs, groups)
    except DataError as err:
        probe = None
        notes.append(str(err))
    try:
        knn = knn_auroc(feats.features, labels, kind, n_outputs, groups)
    except DataError as err:
        knn = None
        notes.append(str(err))
    try:
        sfda = sfda_score(feats.features, labels, kind, n_outputs)
    except DataError as err:
        sfda = None
        notes.append(str(err))
    if sfda is not None and n_features is not None and len(labels) <= n_features:
        sfda = None   # a number that says nothing about the features: not shown
        notes.append(f"SFDA not shown: with no more images ({len(labels)}) than features ({n_features}) it is near 1.0 "
                     "for any features (it scores the fit to the very images it was fitted on)")
    return CandidateScore(feats.name, float(logme), probe, None, probe_note="; ".join(notes) or None,
                          n_features=n_features, seconds=feats.seconds, knn_auroc=knn, sfda=sfda)


def rank_candidates(features: dict[str, CandidateFeatures], labels: np.ndarray, kind: TaskKind, n_outputs: int,
                    groups: np.ndarray, by: RankScore = RANKED_BY) -> list[CandidateScore]:
    """Usable candidates by ``by`` (best first; a candidate without that score after those with it; ties by
    LogME), then the unusable ones. Never by name alone: an exact tie on both keeps the features' order."""
    scored = [score_one(f, labels, kind, n_outputs, groups) for f in features.values()]

    def key(s: CandidateScore) -> tuple:
        value = s.score(by)
        return (value is None, -(value if value is not None else 0.0), -s.logme)
    usable = sorted((s for s in scored if s.unusable is None), key=key)
    ranked = [dataclasses.replace(s, rank=i + 1) for i, s in enumerate(usable)]
    return ranked + sorted((s for s in scored if s.unusable is not None), key=lambda s: s.name)

"""How well frozen features suit a target task, without fine-tuning: LogME, a linear probe and a k-NN score.

LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021) is the log marginal likelihood (evidence) per sample of a Bayesian
linear regression of each target on the features, with the prior precision ``alpha`` and the
noise precision ``beta`` set by MacKay's fixed-point iteration. One SVD of the feature matrix
makes every iteration O(min(n, d)), so a candidate is scored in seconds. Higher is better;
scores are comparable between candidates on the same target images (not across targets).

The second estimator is what a practitioner would try first: a logistic-regression probe on
the same features, its AUROC cross-validated with folds grouped by patient (images of one
patient never sit on both sides of a fold).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import DataError
from ..kinds import TaskKind


@dataclass(frozen=True)
class LogMEFit:
    evidence: float     # log evidence / n
    alpha: float        # prior precision of the weights
    beta: float         # noise precision
    iterations: int


def logme_single(features: np.ndarray, y: np.ndarray, tol: float = 1e-3, max_iter: int = 100) -> LogMEFit:
    """LogME of one real-valued target ``y`` (n,) on ``features`` (n, d)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2                               # eigenvalues of F^T F (the non-zero ones, at most min(n, d))
    z2 = (u.T @ y) ** 2
    outside = max(float(y @ y - z2.sum()), 0.0)  # the part of y no feature direction can explain
    alpha, beta = 1.0, 1.0
    for it in range(1, max_iter + 1):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * z2 / (sigma + t) ** 2).sum())
        res2 = float((z2 * (t / (sigma + t)) ** 2).sum()) + outside
        alpha = gamma / (m2 + 1e-5)
        beta = (n - gamma) / (res2 + 1e-5)
        if abs(alpha / beta - t) / t <= tol:
            break
    t = alpha / beta
    m2 = float((sigma * z2 / (sigma + t) ** 2).sum())
    res2 = float((z2 * (t / (sigma + t)) ** 2).sum()) + outside
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - sigma.size) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * res2 - alpha / 2 * m2
                - log_det / 2 - n / 2 * np.log(2 * np.pi))
    return LogMEFit(float(evidence / n), float(alpha), float(beta), it)


def target_columns(labels: np.ndarray, kind: TaskKind, n_outputs: int) -> list[np.ndarray]:
    """0/1 target columns with both classes: one per label (multi-label), one-vs-rest (multiclass), one (binary)."""
    labels = np.asarray(labels)
    if kind == TaskKind.MULTICLASS:
        cols = [(labels == c).astype(np.float64) for c in range(n_outputs)]
    else:
        cols = [np.asarray(c, dtype=np.float64) for c in labels.reshape(len(labels), -1).T]
    return [c for c in cols if 0 < c.sum() < len(c)]


def unusable_reason(features: np.ndarray) -> str | None:
    """Why a feature matrix cannot be scored (NaN/inf, or no varying feature), or None."""
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] < 2:
        return f"expected a 2-D matrix of at least 2 images, got shape {f.shape}"
    if not np.isfinite(f).all():
        return f"{int((~np.isfinite(f)).any(axis=1).sum())} of {f.shape[0]} images have NaN or infinite features"
    if np.ptp(f, axis=0).max() == 0:
        return f"all {f.shape[1]} features are constant over the {f.shape[0]} images"
    return None


def logme_score(features: np.ndarray, labels: np.ndarray, kind: TaskKind, n_outputs: int) -> float:
    """Mean LogME over the target columns that hold both classes (see ``target_columns``)."""
    reason = unusable_reason(features)
    if reason:
        raise DataError(f"LogME: {reason}")
    cols = target_columns(labels, kind, n_outputs)
    if not cols:
        raise DataError("LogME: no label has both classes among these images")
    f = np.asarray(features, dtype=np.float64)
    return float(np.mean([logme_single(f, c).evidence for c in cols]))


def probe_auroc(features: np.ndarray, labels: np.ndarray, kind: TaskKind, n_outputs: int, groups: np.ndarray,
                folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUROC of a logistic-regression probe, folds grouped by patient; mean over target columns."""
    reason = unusable_reason(features)
    if reason:
        raise DataError(f"probe: {reason}")
    f = np.asarray(features, dtype=np.float64)
    groups = np.asarray(groups)
    aurocs = []
    for y in target_columns(labels, kind, n_outputs):
        k = int(min(folds, y.sum(), len(y) - y.sum(), len(np.unique(groups))))
        if k < 2:
            continue
        scores = np.zeros(len(y))
        split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for train, test in split.split(f, y, groups):
            if y[train].min() == y[train].max():
                continue
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
            probe.fit(f[train], y[train])
            scores[test] = probe.decision_function(f[test])
        aurocs.append(roc_auc_score(y, scores))
    if not aurocs:
        raise DataError("probe: too few positives or patients for a cross-validated probe")
    return float(np.mean(aurocs))


KNN_CHUNK = 1024
KNN_K = 10   # neighbours: the benchmark's default (arXiv 2503.18528 reports k-NN robust to k over 5-20)


def knn_auroc(features: np.ndarray, labels: np.ndarray, kind: TaskKind, n_outputs: int, groups: np.ndarray,
              k: int = KNN_K) -> float:
    """Leave-one-patient-out k-nearest-neighbour AUROC on the frozen features; mean over target columns.

    Each image is scored by the share of positives among its ``k`` most similar images (cosine similarity of
    the standardised features) from *other* patients, so a patient's other images cannot vouch for it. A
    plain k-NN score ranks source models better than LogME and its kin across many benchmarks (arXiv
    2503.18528): it asks the question fine-tuning answers (do images of a class sit together?) with no model
    of the features' distribution, and costs one similarity matrix.
    """
    reason = unusable_reason(features)
    if reason:
        raise DataError(f"k-NN: {reason}")
    f = np.asarray(features, dtype=np.float64)
    f = (f - f.mean(axis=0)) / np.where(f.std(axis=0) > 0, f.std(axis=0), 1.0)
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    groups = np.asarray(groups)
    others = len(groups) - np.unique(groups, return_counts=True)[1].max()   # the fewest other-patient images
    kk = int(min(k, others))
    if kk < 1:
        raise DataError("k-NN: every image's patient holds all the images; no neighbour from another patient")
    nearest = np.empty((len(f), kk), dtype=np.int64)
    for start in range(0, len(f), KNN_CHUNK):        # rows at a time: memory stays O(chunk x n)
        sim = f[start:start + KNN_CHUNK] @ f.T
        sim[groups[start:start + KNN_CHUNK, None] == groups[None, :]] = -np.inf   # self and the same patient
        nearest[start:start + KNN_CHUNK] = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
    aurocs = [roc_auc_score(y, y[nearest].mean(axis=1)) for y in target_columns(labels, kind, n_outputs)]
    if not aurocs:
        raise DataError("k-NN: no label has both classes among these images")
    return float(np.mean(aurocs))

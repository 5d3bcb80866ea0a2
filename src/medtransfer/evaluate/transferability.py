"""How well frozen features suit a target task, without fine-tuning: LogME, a linear probe, a k-NN score and SFDA.

LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021) is the log marginal likelihood (evidence) per sample of a Bayesian
linear regression of each target on the features, with the prior precision ``alpha`` and the
noise precision ``beta`` set by MacKay's fixed-point iteration. One SVD of the feature matrix
makes every iteration O(min(n, d)), so a candidate is scored in seconds. Higher is better;
scores are comparable between candidates on the same target images (not across targets).

The second estimator is what a practitioner would try first: a logistic-regression probe on
the same features, its AUROC cross-validated with folds grouped by patient (images of one
patient never sit on both sides of a fold). The k-NN score and SFDA (Shao et al., ECCV 2022) are
described at their functions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax
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


SFDA_A = 1.0            # lambda = exp(-a * sigma(S_B)), a = 1 as in the paper's description (see sfda_score)
SFDA_MIN_SHRINK = 1e-10  # the reference implementation's floor on lambda, so the shrunk S_W stays invertible


@dataclass(frozen=True)
class FisherFit:
    """A regularised Fisher discriminant fitted to (n, r) coordinates: its shrinkage and in-sample posteriors."""
    shrinkage: float          # lambda: the weight of the identity-scaled target in the shrunk within-class scatter
    posteriors: np.ndarray    # (n, C) p(class | projected sample) of the Gaussian Bayes classifier
    means: np.ndarray         # (C, r) class means in the coordinates it was fitted on


def fisher_fit(z: np.ndarray, y: np.ndarray, n_features: int, shrinkage: float | None = None,
               a: float = SFDA_A) -> FisherFit:
    """Regularised FDA of ``z`` (n, r) with integer classes ``y`` (0..C-1, each present), then LDA posteriors.

    S_W (pooled within-class covariance) and S_B (between-class covariance, class priors as weights) are per
    sample, as the reference implementation's (np.cov, bias=1). S_W is shrunk toward the identity scaled by its
    mean variance over all ``n_features`` original features: (1 - lambda) S_W + lambda tr(S_W)/d I, with
    lambda = exp(-a sigma(S_B)) unless given (large between-class spread: the classes separate, little
    shrinkage needed). The projection is the top max(1, C-1) generalised eigenvectors of (S_B, shrunk S_W),
    scaled so the shrunk S_W is the identity there; the Bayes classifier there is a Gaussian per class with
    that shared identity covariance and the class frequencies as priors. S_B has rank C-1, so the posteriors
    equal those of a shrinkage LDA on all of ``z``.
    """
    n, r = z.shape
    classes = int(y.max()) + 1
    priors = np.bincount(y, minlength=classes) / n
    means = np.zeros((classes, r))
    np.add.at(means, y, z)
    means /= np.bincount(y, minlength=classes)[:, None]
    within = z - means[y]
    s_w = within.T @ within / n
    spread = means - priors @ means
    s_b = spread.T @ (priors[:, None] * spread)
    if shrinkage is None:
        shrinkage = max(float(np.exp(-a * np.linalg.eigvalsh(s_b)[-1])), SFDA_MIN_SHRINK)
    scale = np.trace(s_w) / n_features
    if scale <= 0:     # every class collapsed onto its mean: shrink toward the total variance instead
        scale = float(np.trace(np.cov(z.T, bias=True).reshape(r, r))) / n_features
    shrunk = (1 - shrinkage) * s_w + shrinkage * scale * np.eye(r)
    w_vals, w_vecs = np.linalg.eigh(shrunk)
    whiten = w_vecs / np.sqrt(np.maximum(w_vals, w_vals.max() * 1e-15))
    b_vals, b_vecs = np.linalg.eigh(whiten.T @ s_b @ whiten)
    k = max(1, min(classes - 1, r))
    proj = whiten @ b_vecs[:, np.argsort(b_vals)[::-1][:k]]      # U with U^T (shrunk S_W) U = I
    zp, mp = z @ proj, means @ proj
    logits = zp @ mp.T - 0.5 * (mp ** 2).sum(axis=1) + np.log(priors)
    return FisherFit(shrinkage, softmax(logits, axis=1), means)


def sfda_single(features: np.ndarray, y: np.ndarray, a: float = SFDA_A) -> float:
    """SFDA of standardised ``features`` (n, d) for one labelling ``y`` (n,) with at least two classes.

    (1) Regularised FDA and its Bayes classifier (``fisher_fit``) give each image p(own class). (2) ConfMix,
    the self-challenge: each image moves toward the mean of the *other* classes' means (their plain average),
    x' = p' x + (1 - p') m_other, with p' its own-class posterior softened by a softmax over the class
    posteriors (as the reference does: for two classes p' = sigmoid(2p - 1), so even a sure image moves 27%
    of the way); images the first classifier finds hard move most. (3) The FDA is refitted on the mixed
    features with the first fit's lambda, and the score is the mean p(own class) of the mixed images.
    Everything runs in the coordinates of the centred features' span (rank <= n - 1), which leaves every
    posterior unchanged (S_B, S_W and the means live there; the shrinkage target's scale keeps d).
    """
    classes, yi = np.unique(y, return_inverse=True)
    centred = features - features.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    keep = s > s.max() * max(centred.shape) * np.finfo(float).eps
    z = u[:, keep] * s[keep]
    first = fisher_fit(z, yi, features.shape[1], a=a)
    conf = softmax(first.posteriors, axis=1)[np.arange(len(yi)), yi][:, None]
    others = (first.means.sum(axis=0) - first.means) / (len(classes) - 1)
    mixed = conf * z + (1 - conf) * others[yi]
    second = fisher_fit(mixed, yi, features.shape[1], shrinkage=first.shrinkage, a=a)
    return float(second.posteriors[np.arange(len(yi)), yi].mean())


def sfda_score(features: np.ndarray, labels: np.ndarray, kind: TaskKind, n_outputs: int) -> float:
    """SFDA (Shao et al., "Not All Models Are Equal: Predicting Model Transferability in a Self-challenging
    Fisher Space", ECCV 2022): how well a Fisher discriminant on the frozen features still classifies the
    training images after they are pushed toward other classes (``sfda_single``); higher is better, in (0, 1].

    SFDA models fine-tuning's effect where LogME fits a linear regression: the Fisher projection separates the
    classes as training would, and the self-challenge asks whether that separation survives on hard images.
    Multiclass labels are one C-class problem (FDA is multiclass by nature; classes absent here are left out);
    binary and multi-label ones one 0/1 problem per label with both classes, averaged (as LogME). Features are
    standardised first (constant ones stay zero), so the score does not depend on their scale: lambda's
    exp(-sigma(S_B)) would otherwise. It is an in-sample score: with fewer images than features the classes are
    (nearly) linearly separable for any features, lambda is tiny and scores crowd toward 1.
    Defaults: a = 1 and lambda >= 1e-10; the ConfMix softening and the refit with the first lambda follow the
    authors' code (github.com/TencentARC/SFDA, metrics.py). That code differs from the paper's lambda: it uses
    exp(-5 sigma(S_W)) on raw features, which is the 1e-10 floor for any realistic features; it also uses
    every Fisher direction, not C-1, which gives the same posteriors as here.
    """
    reason = unusable_reason(features)
    if reason:
        raise DataError(f"SFDA: {reason}")
    f = np.asarray(features, dtype=np.float64)
    std = f.std(axis=0)
    f = (f - f.mean(axis=0)) / np.where(std > 0, std, 1.0)
    labels = np.asarray(labels)
    if kind == TaskKind.MULTICLASS:
        problems = [labels.reshape(-1).astype(np.int64)] if len(np.unique(labels)) > 1 else []
    else:
        problems = [c.astype(np.int64) for c in target_columns(labels, kind, n_outputs)]
    if not problems:
        raise DataError("SFDA: no label has both classes among these images")
    return float(np.mean([sfda_single(f, y) for y in problems]))

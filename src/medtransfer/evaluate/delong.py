"""DeLong's test for AUROCs on one test set (DeLong et al., Biometrics 1988), fast midrank form.

Two methods scored on the *same* test images are compared with a paired test:
their AUROCs are correlated (same easy and hard cases), and ignoring that
correlation throws most of the power away. DeLong estimates the covariance of
the AUROCs from the *structural components* (placement values):

* V10[i] for positive i: fraction of negatives it outranks (ties count 1/2),
* V01[j] for negative j: fraction of positives that outrank it,

so AUROC = mean(V10) = mean(V01), S10 = cov(V10), S01 = cov(V01) (ddof 1, one
row per method) and Var(AUROC) = S10/m + S01/n for m positives and n
negatives. Placements come from midranks (Sun & Xu, IEEE SPL 2014): with Tz the
midranks in the pooled set and Tx / Ty those within positives / negatives,
V10 = (Tz - Tx)/n and V01 = 1 - (Tz - Ty)/m, which is O(N log N) instead of O(m n).

``delong_paired`` treats each image as independent: with several images per
patient its intervals are too narrow. ``delong_paired_clustered`` sums the
components per patient first (Obuchowski, Biometrics 1997),
``delong_paired_macro_clustered`` does the same for the mean AUROC over labels,
and ``bootstrap.bootstrap_auroc_ci`` resamples patients.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from ..errors import DataError
from .bootstrap import binary_labels, checked_scores, patient_codes


def structural_components(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(aucs (k,), V10 (k, m), V01 (k, n)) for k score rows (or one 1-D score vector) on 0/1 ``y_true``."""
    y = binary_labels(y_true)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != len(y):
        raise DataError(f"scores: {s.shape[1]} scores for {len(y)} labels")
    if not np.isfinite(s).all():
        raise DataError("scores: contains NaN or infinite values")
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise DataError("y_true: AUROC needs at least one positive and one negative image")
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_covariance(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """(aucs (k,), covariance (k, k)) of the AUROCs of k score rows: S10/m + S01/n."""
    aucs, v10, v01 = structural_components(y_true, scores)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise DataError(f"y_true: DeLong's variance needs at least 2 positive and 2 negative images "
                        f"(got {m} and {n})")
    return aucs, np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def _normal_test(diff: float, var: float, alpha: float) -> dict:
    se = math.sqrt(max(var, 0.0))
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    else:   # identical rankings (or a degenerate set): no spread, so only "equal" is consistent
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
    half = float(stats.norm.ppf(1 - alpha / 2)) * se
    return {"diff": diff, "se": se, "z": z, "p_value": p, "ci_low": diff - half, "ci_high": diff + half}


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise DataError(f"alpha: must lie in (0, 1), got {alpha}")


def delong_paired(y_true, scores_a, scores_b, alpha: float = 0.05) -> dict:
    """Paired DeLong test of AUROC(a) - AUROC(b) on the same images.

    Returns auc_a, auc_b, diff, se, z, two-sided p_value and the (1 - alpha)
    normal interval ci_low / ci_high of the difference.
    """
    _check_alpha(alpha)
    y = binary_labels(y_true)
    a, b = checked_scores(scores_a, len(y), "scores_a"), checked_scores(scores_b, len(y), "scores_b")
    aucs, cov = delong_covariance(y, np.stack([a, b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]),
            **_normal_test(float(aucs[0] - aucs[1]), float(var), alpha)}


class _PatientComponents(NamedTuple):
    """One label's structural components summed per patient (Obuchowski 1997), for k score rows."""
    aucs: np.ndarray      # (k,)
    d10: np.ndarray       # (k, I): V10_i - m_i auc, patient i's positive placements about the AUROC
    d01: np.ndarray       # (k, I): V01_i - n_i auc
    m: int                # positive images
    n: int                # negative images
    with_pos: int         # patients with a positive image (I10)
    with_neg: int         # patients with a negative image (I01)


def _patient_components(y: np.ndarray, scores: np.ndarray, codes: np.ndarray, n_patients: int) -> _PatientComponents:
    aucs, v10, v01 = structural_components(y, scores)
    pos_at, neg_at = codes[y], codes[~y]
    pos_count = np.bincount(pos_at, minlength=n_patients)
    neg_count = np.bincount(neg_at, minlength=n_patients)
    d10 = np.stack([np.bincount(pos_at, weights=row, minlength=n_patients) for row in v10]) - np.outer(aucs, pos_count)
    d01 = np.stack([np.bincount(neg_at, weights=row, minlength=n_patients) for row in v01]) - np.outer(aucs, neg_count)
    return _PatientComponents(aucs, d10, d01, v10.shape[1], v01.shape[1], int((pos_count > 0).sum()),
                              int((neg_count > 0).sum()))


def delong_paired_clustered(y_true, scores_a, scores_b, patient_ids, alpha: float = 0.05) -> dict:
    """Paired DeLong test of AUROC(a) - AUROC(b) with images clustered by patient (Obuchowski 1997).

    Images of one patient are correlated, so their structural components are
    summed per patient before their spread is taken: with M positive and N
    negative images, V10_i / V01_i the sums of patient i's placements and m_i /
    n_i its positive / negative image counts,

        S10 = I10 / ((I10 - 1) M) sum_i (V10_i - m_i auc)(V10_i - m_i auc)'
        S01 = I01 / ((I01 - 1) N) sum_i (V01_i - n_i auc)(V01_i - n_i auc)'
        S11 = I / (I - 1) sum_i (V10_i - m_i auc)(V01_i - n_i auc)'
        Cov(auc) = S10 / M + S01 / N + (S11 + S11') / (M N)

    over I patients, I10 / I01 of them with a positive / negative image. A
    patient with images of both classes adds the S11 term. With one image per
    patient this is ``delong_paired`` exactly. Returns the keys of
    ``delong_paired`` plus ``n_patients``.
    """
    _check_alpha(alpha)
    y = binary_labels(y_true)
    a, b = checked_scores(scores_a, len(y), "scores_a"), checked_scores(scores_b, len(y), "scores_b")
    codes, n_patients = patient_codes(patient_ids, len(y))
    c = _patient_components(y, np.stack([a, b]), codes, n_patients)
    if c.with_pos < 2 or c.with_neg < 2:
        raise DataError(f"y_true: the clustered DeLong variance needs at least 2 patients with a positive and 2 with "
                        f"a negative image (got {c.with_pos} and {c.with_neg})")
    s10 = c.with_pos / ((c.with_pos - 1) * c.m) * (c.d10 @ c.d10.T)
    s01 = c.with_neg / ((c.with_neg - 1) * c.n) * (c.d01 @ c.d01.T)
    s11 = n_patients / (n_patients - 1) * (c.d10 @ c.d01.T)
    cov = s10 / c.m + s01 / c.n + (s11 + s11.T) / (c.m * c.n)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return {"auc_a": float(c.aucs[0]), "auc_b": float(c.aucs[1]),
            **_normal_test(float(c.aucs[0] - c.aucs[1]), float(var), alpha), "n_patients": n_patients}


def delong_auroc_ci(y_true, scores, alpha: float = 0.05) -> tuple[float, float, float]:
    """(auc, low, high): DeLong normal interval of one AUROC, cut to [0, 1] (as R's pROC does)."""
    _check_alpha(alpha)
    y = binary_labels(y_true)
    aucs, cov = delong_covariance(y, checked_scores(scores, len(y))[None, :])
    half = float(stats.norm.ppf(1 - alpha / 2)) * math.sqrt(max(cov[0, 0], 0.0))
    auc = float(aucs[0])
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def _influence(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(aucs (k,), psi (k, N)): each image's share of the AUROC's deviation, scaled so sum(psi^2) is DeLong's variance.

    psi = (V10 - auc) / sqrt(m (m - 1)) for positives and (V01 - auc) / sqrt(n (n - 1))
    for negatives; a class with one image has no estimable spread and adds 0.
    """
    aucs, v10, v01 = structural_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    psi = np.zeros((len(aucs), len(y)))
    if m > 1:
        psi[:, y] = (v10 - aucs[:, None]) / math.sqrt(m * (m - 1))
    if n > 1:
        psi[:, ~y] = (v01 - aucs[:, None]) / math.sqrt(n * (n - 1))
    return aucs, psi


def _label_scores(y_true, scores_a, scores_b):
    """Yield (k, 0/1 target, (2, N) scores of a and b) for each label with both classes ((N, K) inputs)."""
    y = np.asarray(y_true)
    if y.ndim == 1:
        y = y[:, None]
    a = np.asarray(scores_a, dtype=np.float64).reshape(len(y), -1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(len(y), -1)
    if a.shape != y.shape or b.shape != y.shape:
        raise DataError(f"scores: shapes {a.shape} and {b.shape} do not match y_true {y.shape}")
    used = 0
    for k in range(y.shape[1]):
        target = binary_labels(y[:, k], f"y_true[:, {k}]")
        if target.all() or not target.any():
            continue
        used += 1
        yield k, target, np.stack([checked_scores(a[:, k], len(y), "scores_a"),
                                   checked_scores(b[:, k], len(y), "scores_b")])
    if not used:
        raise DataError("y_true: no label has both positive and negative images")


def delong_paired_macro(y_true, scores_a, scores_b, alpha: float = 0.05) -> dict:
    """Paired DeLong-type test of the difference in *macro* AUROC over labels ((N, K) 0/1 targets).

    Labels without both classes are left out (as in ``score_metrics``). The
    variance of the mean over labels is the sum over images of the squared
    per-image influence, averaged over labels, so correlations between labels
    that share images are kept; for one label it equals ``delong_paired``
    exactly. Also returns ``n_labels`` (labels used). Multiclass: pass
    ``one_vs_rest_targets(labels, "multiclass", C)``. Treats every image as
    independent: with several images per patient use ``delong_paired_macro_clustered``.
    """
    _check_alpha(alpha)
    total_psi, auc_a, auc_b = 0.0, [], []
    for _, target, scores in _label_scores(y_true, scores_a, scores_b):
        aucs, psi = _influence(target, scores)
        total_psi = total_psi + psi[0] - psi[1]
        auc_a.append(aucs[0])
        auc_b.append(aucs[1])
    total_psi = total_psi / len(auc_a)
    mean_a, mean_b = float(np.mean(auc_a)), float(np.mean(auc_b))
    return {"auc_a": mean_a, "auc_b": mean_b, **_normal_test(mean_a - mean_b, float(total_psi @ total_psi), alpha),
            "n_labels": len(auc_a)}


def _small_sample(count: int) -> float:
    """sqrt(I / (I - 1)) for I patients with a class; 0 with fewer than 2 (no estimable spread, as ``_influence``)."""
    return math.sqrt(count / (count - 1)) if count > 1 else 0.0


def delong_paired_macro_clustered(y_true, scores_a, scores_b, patient_ids, alpha: float = 0.05) -> dict:
    """Paired DeLong test of the difference in macro AUROC with images clustered by patient (Obuchowski 1997).

    Per label k, the difference a - b's structural components are summed per
    patient (``delong_paired_clustered``): E10_ki = (D10a - D10b)_ki / M_k and
    E01_ki = (D01a - D01b)_ki / N_k, with D the per-patient sums of placements
    about the AUROC and M_k / N_k the label's positive / negative images. Each
    patient's influence on the macro difference is then the mean over the K labels of

        psi_ki = a_k E10_ki + b_k E01_ki,   a_k = sqrt(I10_k / (I10_k - 1)), b_k = sqrt(I01_k / (I01_k - 1))

    and Var = (1/K^2) [sum_i (sum_k psi_ki)^2 + sum_i sum_k 2 (I / (I - 1) - a_k b_k) E10_ki E01_ki]:
    the squared patient influences keep every correlation between labels and
    between a patient's images, and the second sum puts Obuchowski's own factor
    I / (I - 1) on a label's positive x negative term within a patient. So one
    label gives ``delong_paired_clustered`` exactly, and one image per patient
    (no patient is both positive and negative for a label) gives
    ``delong_paired_macro`` exactly. Returns its keys plus ``n_patients``.
    """
    _check_alpha(alpha)
    n_images = len(np.asarray(y_true))
    codes, n_patients = patient_codes(patient_ids, n_images)
    if n_patients < 2:
        raise DataError(f"patient_ids: the clustered DeLong variance needs at least 2 patients (got {n_patients})")
    influence, within, auc_a, auc_b = np.zeros(n_patients), 0.0, [], []
    for _, target, scores in _label_scores(y_true, scores_a, scores_b):
        c = _patient_components(target, scores, codes, n_patients)
        e10, e01 = (c.d10[0] - c.d10[1]) / c.m, (c.d01[0] - c.d01[1]) / c.n
        factor_pos, factor_neg = _small_sample(c.with_pos), _small_sample(c.with_neg)
        influence += factor_pos * e10 + factor_neg * e01
        within += 2 * (n_patients / (n_patients - 1) - factor_pos * factor_neg) * float(e10 @ e01)
        auc_a.append(c.aucs[0])
        auc_b.append(c.aucs[1])
    var = (float(influence @ influence) + within) / len(auc_a) ** 2
    mean_a, mean_b = float(np.mean(auc_a)), float(np.mean(auc_b))
    return {"auc_a": mean_a, "auc_b": mean_b, **_normal_test(mean_a - mean_b, var, alpha),
            "n_labels": len(auc_a), "n_patients": n_patients}

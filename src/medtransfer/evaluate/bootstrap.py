"""AUROC confidence intervals by bootstrapping patients, not images.

Images of one patient are correlated (same anatomy, same scanner, often the same
label), so resampling images pretends there is more independent evidence than
there is and gives intervals that are too narrow. Here each resample draws
*patients* with replacement and every image of a drawn patient enters, as many
times as the patient was drawn; the AUROC of the resample is then a weighted
AUROC with those integer counts as weights, computed for all resamples at once.

A resample that happens to hold no positive (or no negative) image has no AUROC;
it is **redrawn** (not skipped), so exactly ``n_boot`` resamples are used: the
interval is conditional on both classes being present, as the point estimate is.
The interval is the percentile interval of the resampled AUROCs.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse
from sklearn.metrics import roc_auc_score

from ..errors import DataError

_MAX_CELLS = 4_000_000      # resamples x max(patients, images) held at once (~32 MB of float64)
_MAX_ROUNDS = 50            # rounds of redraws before giving up on a nearly one-class set


class AurocCI(NamedTuple):
    auroc: float
    low: float
    high: float


def binary_labels(y_true, name: str = "y_true") -> np.ndarray:
    """``y_true`` as a 1-D bool array, or a DataError naming ``name`` (not 1-D, or a value other than 0/1)."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array of 0/1 labels, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{name}: labels must be 0/1 (found {sorted(set(np.unique(y).tolist()) - {0, 1})[:3]})")
    return y.astype(bool)


def checked_scores(scores, n: int, name: str = "scores") -> np.ndarray:
    """``scores`` as float64, or a DataError naming ``name`` (not ``n`` of them, or a NaN / infinite one)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[0] != n:
        raise DataError(f"{name}: {s.shape[0]} scores for {n} labels")
    if not np.isfinite(s).all():
        raise DataError(f"{name}: contains NaN or infinite values")
    return s


def patient_codes(patient_ids, n: int) -> tuple[np.ndarray, int]:
    """(code 0..P-1 of each image's patient, P) for ``n`` images; codes follow the ids' sorted order (ids of
    mixed types are compared as text). A DataError unless there is exactly one id per image."""
    ids = np.asarray(patient_ids)
    if ids.shape != (n,):
        raise DataError(f"patient_ids: expected {n} ids (one per image), got shape {ids.shape}")
    try:
        uniq, codes = np.unique(ids, return_inverse=True)     # patient k of a resample = k-th id in sorted order
    except TypeError:                                          # mixed types: compare as text
        uniq, codes = np.unique(ids.astype(str), return_inverse=True)
    return codes, len(uniq)


class _TieLevels:
    """Per patient, how many positive / negative images sit at each distinct score (ties count 1/2).

    A resample's weighted AUROC is then two sparse products of its patient
    counts, so all resamples are computed at once without expanding to images.
    """

    def __init__(self, scores: np.ndarray, positive: np.ndarray, codes: np.ndarray, n_patients: int):
        uniq, level = np.unique(scores, return_inverse=True)
        shape = (n_patients, len(uniq))
        self.pos = sparse.csr_matrix((np.ones(positive.sum()), (codes[positive], level[positive])), shape=shape)
        self.neg = sparse.csr_matrix((np.ones((~positive).sum()), (codes[~positive], level[~positive])), shape=shape)

    def aucs(self, counts: np.ndarray) -> np.ndarray:
        """Weighted AUROC for each row of patient ``counts`` (B, P); NaN where a class has zero weight."""
        pos = np.asarray((self.pos.T @ counts.T).T)
        neg = np.asarray((self.neg.T @ counts.T).T)
        below = np.cumsum(neg, axis=1) - neg
        num = (pos * (below + 0.5 * neg)).sum(axis=1)
        den = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)


def _resample(stat, n_patients: int, n_boot: int, seed: int, width: int) -> np.ndarray:
    """``n_boot`` finite values of ``stat(counts)`` over patient resamples, redrawing undefined ones.

    Each round draws ``n_boot`` resamples, row by row, as P patient indices from
    ``default_rng(seed).integers(0, P)``; the valid ones are kept in draw order.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CELLS // max(width, 1))   # width: patients or score levels, whichever is more
    kept, have = [], 0
    for _ in range(_MAX_ROUNDS):
        for size in np.diff(np.r_[np.arange(0, n_boot, chunk), n_boot]):
            drawn = rng.integers(0, n_patients, size=(size, n_patients))
            flat = (np.arange(size)[:, None] * n_patients + drawn).ravel()
            counts = np.bincount(flat, minlength=size * n_patients).reshape(size, n_patients).astype(np.float64)
            values = stat(counts)
            kept.append(values[np.isfinite(values)])
            have += len(kept[-1])
        if have >= n_boot:
            return np.concatenate(kept)[:n_boot]
    raise DataError(f"bootstrap: fewer than {n_boot} of {_MAX_ROUNDS * n_boot} patient resamples held both classes "
                    "(too few positive or negative patients)")


def _check_common(n_boot: int, alpha: float) -> None:
    if int(n_boot) < 1:
        raise DataError(f"n_boot: must be at least 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise DataError(f"alpha: must lie in (0, 1), got {alpha}")


def _macro_parts(y_true, scores) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    y = np.asarray(y_true)
    if y.ndim != 2:
        raise DataError(f"y_true: expected (N, K) 0/1 targets, got shape {y.shape}")
    s = checked_scores(scores, len(y))
    if s.shape != y.shape:
        raise DataError(f"scores: shape {s.shape} does not match y_true {y.shape}")
    targets = [binary_labels(y[:, k], f"y_true[:, {k}]") for k in range(y.shape[1])]
    defined = [k for k, t in enumerate(targets) if t.any() and not t.all()]
    if not defined:
        raise DataError("y_true: no label has both positive and negative images")
    return targets, s, defined


def bootstrap_auroc_samples(y_true, scores, patient_ids, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """The ``n_boot`` AUROCs of patient-level bootstrap resamples (macro AUROC for (N, K) targets).

    The resamples depend only on ``seed``, the labels and the patient ids, so two
    methods scored on the same images with the same seed get the *same*
    resamples: the difference of their samples is a paired bootstrap.
    """
    _check_common(n_boot, 0.05)
    if np.asarray(y_true).ndim == 2:
        targets, s, defined = _macro_parts(y_true, scores)
        codes, n_patients = patient_codes(patient_ids, len(s))
        levels = [_TieLevels(s[:, k], targets[k], codes, n_patients) for k in defined]

        def stat(counts):
            per_label = np.stack([lv.aucs(counts) for lv in levels])
            count = np.isfinite(per_label).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(count > 0, np.nansum(per_label, axis=0) / count, np.nan)
    else:
        y = binary_labels(y_true)
        s = checked_scores(scores, len(y))
        codes, n_patients = patient_codes(patient_ids, len(y))
        if y.all() or not y.any():
            raise DataError("y_true: AUROC needs at least one positive and one negative image")
        stat = _TieLevels(s, y, codes, n_patients).aucs
    return _resample(stat, n_patients, int(n_boot), seed, width=max(n_patients, len(s)))


def bootstrap_auroc_ci(y_true, scores, patient_ids, n_boot: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> AurocCI:
    """(auroc, low, high): test AUROC and its percentile (1 - alpha) interval over patient resamples.

    ``patient_ids`` has one entry per image; pass the image ids when the data has
    no patient ids (each image is then its own patient).
    """
    _check_common(n_boot, alpha)
    y = binary_labels(y_true)
    s = checked_scores(scores, len(y))
    samples = bootstrap_auroc_samples(y, s, patient_ids, n_boot, seed)
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return AurocCI(float(roc_auc_score(y, s)), float(low), float(high))


def bootstrap_macro_auroc_ci(y_true, scores, patient_ids, n_boot: int = 1000, seed: int = 0,
                             alpha: float = 0.05) -> AurocCI:
    """Macro AUROC over labels (columns of (N, K) 0/1 targets) with a patient-bootstrap interval.

    All labels share each patient resample, so the correlation between labels is
    kept. Labels without both classes in the full set are left out (as in
    ``score_metrics``); a label lacking a class in one resample is left out of
    that resample's mean; a resample where no label is defined is redrawn.
    Multiclass: pass ``one_vs_rest_targets(labels, "multiclass", C)``.
    """
    _check_common(n_boot, alpha)
    targets, s, defined = _macro_parts(y_true, scores)
    samples = bootstrap_auroc_samples(np.asarray(y_true), s, patient_ids, n_boot, seed)
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    point = float(np.mean([roc_auc_score(targets[k], s[:, k]) for k in defined]))
    return AurocCI(point, float(low), float(high))

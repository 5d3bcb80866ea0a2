"""Operating points of a binary classifier: a threshold chosen on validation, judged on test.

AUROC says how well a model ranks; a clinician acts on a yes/no. The threshold must come
from the validation split (choosing it on test would flatter the test accuracy), and is
then applied unchanged to the test scores. Youden's J (sensitivity + specificity - 1) is
the default criterion; a target sensitivity (e.g. 0.95 for a screening use) is the other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_curve

from ..errors import DataError


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float          # predict positive when score >= threshold
    criterion: str            # 'youden' | 'sensitivity>=0.95' | 'given'
    accuracy: float
    sensitivity: float
    specificity: float
    n_images: int

    def to_dict(self) -> dict:
        return asdict(self)


def _binary_pair(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise DataError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise DataError("an operating point needs 0/1 labels")
    if y.min() == y.max():
        raise DataError(f"an operating point needs both classes; all {y.size} labels are {int(y[0]) if y.size else '-'}")
    return y.astype(int), s


def youden_threshold(y_val, scores_val) -> float:
    """The validation threshold that maximises sensitivity + specificity - 1 (the first such, i.e. the highest)."""
    y, s = _binary_pair(y_val, scores_val)
    fpr, tpr, thresholds = roc_curve(y, s)
    finite = np.isfinite(thresholds)   # sklearn's first threshold is +inf (nobody positive)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


def sensitivity_threshold(y_val, scores_val, target: float) -> float:
    """The highest validation threshold whose sensitivity reaches ``target`` (most specific such point)."""
    if not 0.0 < target <= 1.0:
        raise DataError(f"a target sensitivity must be in (0, 1], got {target}")
    y, s = _binary_pair(y_val, scores_val)
    _, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    reach = np.flatnonzero((tpr >= target - 1e-12) & np.isfinite(thresholds))
    return float(thresholds[reach[0]])


def operating_point(y_true, scores, threshold: float, criterion: str) -> OperatingPoint:
    """Accuracy, sensitivity and specificity of ``score >= threshold`` on these labels."""
    y, s = _binary_pair(y_true, scores)
    predicted = s >= threshold
    positives, negatives = y == 1, y == 0
    return OperatingPoint(
        threshold=float(threshold), criterion=criterion,
        accuracy=float(np.mean(predicted == positives)),
        sensitivity=float(np.mean(predicted[positives])),
        specificity=float(np.mean(~predicted[negatives])),
        n_images=int(y.size))

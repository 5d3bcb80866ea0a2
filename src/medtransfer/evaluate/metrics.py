"""Per-label AUROC / AUPRC that say *why* a label has no value instead of crashing.

Small medical splits often hold no positive of a rare finding; sklearn raises then.
Here such a label gets ``None`` and a reason, and macro averages skip it (and say so).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ..kinds import TaskKind
from ..run_folder import MetricBlock


def one_vs_rest_targets(labels: np.ndarray, kind: TaskKind, n_outputs: int) -> np.ndarray:
    """(N,K) 0/1 targets aligned with the score columns, whatever the task kind."""
    labels = np.asarray(labels)
    if kind == TaskKind.MULTICLASS:
        return np.eye(n_outputs, dtype=np.float32)[labels.astype(np.int64)]
    if not len(labels):   # no rows: the columns cannot be read off the array
        return np.zeros((0, n_outputs), dtype=np.float32)
    return labels.reshape(len(labels), -1).astype(np.float32)


def _undefined_reason(y: np.ndarray) -> str | None:
    if len(y) == 0:
        return "no images in this split"
    positives = int(y.sum())
    if positives == 0:
        return "no positive cases in this split"
    if positives == len(y):
        return "no negative cases in this split"
    return None


def score_metrics(labels: np.ndarray, scores: np.ndarray, kind: TaskKind, label_names: list[str]) -> MetricBlock:
    """AUROC and AUPRC per label (one-vs-rest for multiclass) plus their macro means (metrics.json's block)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    targets = one_vs_rest_targets(labels, kind, scores.shape[1])
    auroc, auprc, undefined = {}, {}, {}
    for k, name in enumerate(label_names):
        y, s = targets[:, k], scores[:, k]
        reason = _undefined_reason(y)
        if reason is not None or not np.all(np.isfinite(s)):
            undefined[name] = reason or "non-finite scores"
            auroc[name] = auprc[name] = None
            continue
        auroc[name] = float(roc_auc_score(y, s))
        auprc[name] = float(average_precision_score(y, s))
    defined = [v for v in auroc.values() if v is not None]
    accuracy = (float(np.mean(scores.argmax(1) == np.asarray(labels).astype(np.int64)))
                if kind == TaskKind.MULTICLASS else None)
    return MetricBlock(
        auroc_macro=float(np.mean(defined)) if defined else None,
        auprc_macro=float(np.mean([v for v in auprc.values() if v is not None])) if defined else None,
        auroc=auroc, auprc=auprc, n_images=int(len(targets)), n_labels_scored=len(defined),
        undefined=undefined, accuracy=accuracy)


def macro_auroc(labels: np.ndarray, scores: np.ndarray, kind: TaskKind) -> float:
    """Macro AUROC over the labels where it is defined; NaN when none is (for early stopping)."""
    names = [str(i) for i in range(np.asarray(scores).reshape(len(scores), -1).shape[1])]
    value = score_metrics(labels, scores, kind, names).auroc_macro
    return float("nan") if value is None else value

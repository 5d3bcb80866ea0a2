"""Metrics (and later bootstrap CIs, DeLong, learning curves)."""
from .metrics import macro_auroc, one_vs_rest_targets, score_metrics

__all__ = ["macro_auroc", "one_vs_rest_targets", "score_metrics"]

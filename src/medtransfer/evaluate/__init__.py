"""Metrics per label, and summaries over seeds (t-intervals)."""
from .metrics import macro_auroc, one_vs_rest_targets, score_metrics
from .summary import MeanCI, diff_ci, mean_ci, t_interval

__all__ = ["MeanCI", "diff_ci", "macro_auroc", "mean_ci", "one_vs_rest_targets", "score_metrics", "t_interval"]

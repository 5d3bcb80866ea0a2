"""Metrics per label; summaries over seeds; bootstrap and DeLong intervals; CNN-vs-baseline crossover."""
from .bootstrap import AurocCI, bootstrap_auroc_ci, bootstrap_auroc_samples, bootstrap_macro_auroc_ci
from .crossover import crossover, seed_summary
from .delong import delong_auroc_ci, delong_paired, delong_paired_macro
from .metrics import macro_auroc, one_vs_rest_targets, score_metrics
from .summary import MeanCI, diff_ci, mean_ci, t_interval

__all__ = [
    "AurocCI", "MeanCI", "bootstrap_auroc_ci", "bootstrap_auroc_samples", "bootstrap_macro_auroc_ci", "crossover",
    "delong_auroc_ci", "delong_paired", "delong_paired_macro", "diff_ci", "macro_auroc", "mean_ci",
    "one_vs_rest_targets", "score_metrics", "seed_summary", "t_interval",
]

"""The study report: learning curves, best recipes and transfer gains from STUDY_DIR/results.sqlite.

    write_report(study_dir)  -> report.html (+ learning_curves.png, summary.csv) in study_dir
    study_summary(study_dir) -> one row per (task, arch, method, recipe, N) with mean / sd / 95% CI
"""
from .report import study_summary, write_report

__all__ = ["study_summary", "write_report"]

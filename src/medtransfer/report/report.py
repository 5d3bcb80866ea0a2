"""Entry points: read the store once, compute the tables, write the three report files atomically."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from . import page
from .plots import learning_curve_figure
from .redact import redact
from .store import StudyRecords, read_study
from .tables import SUMMARY_COLUMNS, best_recipes, failures, gains, grid_axes, per_class_at_largest_n, study_table
from .versus import radiomics_comparisons
from .versus_page import key_items, versus_section

CSV_COLUMNS = [c for c in SUMMARY_COLUMNS if c != "task_kind"]


def study_summary(study_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (task, arch, method, recipe, requested N) of the grid runs.

    ``n_train`` is the requested N ('all' for the whole split); ``N`` the median
    number of images actually trained on (the x of the learning curves); the
    test AUROC columns are over the seeds that finished (95% t-interval cut to
    [0, 1]; sd and CI NaN with one seed).
    """
    return study_table(read_study(Path(study_dir)).runs)[CSV_COLUMNS]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _status_table(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=["role", "status", "runs", "seconds"])
    return (runs.groupby(["role", "status"]).agg(runs=("run_id", "size"), seconds=("seconds", "sum"))
            .reset_index().sort_values(["role", "status"], ascending=[False, True]))


def render_report(records: StudyRecords, summary: pd.DataFrame, png: bytes) -> str:
    runs, sites = records.runs, records.sites
    gain = gains(summary, runs, sites)
    best = best_recipes(summary)
    versus = radiomics_comparisons(summary, runs, sites, records.study_dir)
    sections = [
        page.header_section(records.name, len(runs), runs["status"].value_counts().to_dict(),
                            float(runs["seconds"].sum()), grid_axes(runs, sites), records.sources, sites,
                            records.notes),
        page.key_results_section(best, gain, key_items(versus)),
        page.curves_section(png),
        page.best_section(best),
        page.gains_section(gain, has_same_site="same" in sites.values()),
        versus_section(versus),
        page.per_class_section(per_class_at_largest_n(summary, runs, records.per_class, sites)),
        page.failures_section(_status_table(runs), failures(runs)),
    ]
    return page.render(sections, records.name or "Transfer-learning study")


def write_report(study_dir: str | os.PathLike) -> Path:
    """Write report.html, learning_curves.png and summary.csv into ``study_dir``; return report.html."""
    study_dir = Path(study_dir)
    records = read_study(study_dir)
    summary = study_table(records.runs)
    buf = io.BytesIO()
    learning_curve_figure(summary, records.sites).savefig(buf, format="png", dpi=110, bbox_inches="tight")
    png = buf.getvalue()
    _write_atomic(study_dir / "learning_curves.png", png)
    table = summary[CSV_COLUMNS].copy()
    for col in ("task", "arch", "recipe", "init"):
        table[col] = [None if pd.isna(v) else redact(v) for v in table[col]]
    _write_atomic(study_dir / "summary.csv", table.to_csv(index=False, float_format="%.6g").encode())
    out = study_dir / "report.html"
    _write_atomic(out, render_report(records, summary, png).encode("utf-8"))
    return out

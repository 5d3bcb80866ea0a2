"""Entry points: read the store once, compute the tables, write the three report files atomically."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..errors import DataError, MedtransferError
from ..kinds import Site
from ..radiomics.pixels import PIXEL_KEY
from ..run_folder import write_bytes_atomic, write_json_atomic
from ..study.lock import study_lock
from ..study.schema import STORE_FILE
from . import page
from .answer import build_answer
from .answer_page import backbones_html, claims_html, key_results_html, verdict_html
from .draws import baseline_draws, run_draws, val_draws
from .intervals import Intervals
from .plots import learning_curve_figure, recipes_figure
from .redact import redact
from .selection import choose, mark_init_picks
from .store import StudyRecords, design_notes, radiomics_notes, read_study
from .tables import (SUMMARY_COLUMNS, best_recipes, failures, gains, grid_axes, per_class_at_largest_n,
                     pretraining_notes, study_table)
from .versus import radiomics_comparisons
from .versus_page import versus_section

CSV_COLUMNS = [c for c in SUMMARY_COLUMNS if c != "task_kind"] + ["ci_method", "seed_variance"]


def study_summary(study_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (task, arch, method, recipe, requested N) of the grid runs.

    ``n_train`` is the requested N ('all' for the whole split); ``N`` the median
    number of images actually trained on (the x of the learning curves), ``n_patients`` the median
    number of patients they came from (= N for data without patient ids); the
    test AUROC columns are over the seeds that finished; the CI is the two-level bootstrap
    (seeds x test patients, ``ci_method``), or a t-interval over seeds where runs have no draws.
    """
    records = read_study(Path(study_dir))
    return summarise(records)[0][CSV_COLUMNS]


def summarise(records: StudyRecords) -> tuple[pd.DataFrame, Intervals]:
    """The summary table with each row's combined interval, and the intervals object behind it."""
    intervals = Intervals(study_table(records.runs), records.runs, run_draws(records.study_dir, records.runs),
                          val_draws(records.study_dir, records.runs),
                          baseline_draws(records.study_dir, records.runs, PIXEL_KEY))
    return mark_init_picks(intervals.attach(), intervals), intervals


DONE_MARKER = "medtransfer-done-runs"   # a <meta> in report.html: how many done runs it was made from


def _done_runs_in(report: Path) -> int | None:
    """How many done runs an existing report.html was made from (None: no report, or an older one)."""
    try:
        found = re.search(rf'<meta name="{DONE_MARKER}" content="(\d+)">', report.read_text(errors="replace"))
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _status_table(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=["role", "status", "runs", "seconds"])
    return (runs.groupby(["role", "status"]).agg(runs=("run_id", "size"), seconds=("seconds", "sum"))
            .reset_index().sort_values(["role", "status"], ascending=[False, True]))


def render_report(records: StudyRecords, summary: pd.DataFrame, intervals: Intervals, pngs: dict[str, bytes]
                  ) -> tuple[str, dict]:
    """(report.html text, the answer object) from one reading of the store."""
    runs, sites = records.runs, records.sites
    gain = gains(summary, runs, sites, intervals)
    best = best_recipes(summary, lambda rows: choose(rows, intervals))
    versus = radiomics_comparisons(summary, runs, sites, records.study_dir, intervals, records.margin)
    answer = build_answer(records.name, summary, runs, sites, intervals,
                          gains(summary, runs, sites, intervals, every_init=True), versus, records.targets)
    sections = [
        page.title_section(records.name, verdict_html(answer) + claims_html(answer)),
        page.header_section(len(runs), runs["status"].value_counts().to_dict(),
                            float(runs["seconds"].sum()), grid_axes(runs, sites), records.sources, sites,
                            records.notes + design_notes(runs) + radiomics_notes(runs) + pretraining_notes(runs)),
        key_results_html(answer),
        backbones_html(answer),
        page.curves_section(pngs["learning_curves.png"], pngs["recipes.png"]),
        page.best_section(best),
        page.gains_section(gain, has_same_site=Site.SAME in sites.values()),
        versus_section(versus),
        page.per_class_section(per_class_at_largest_n(summary, runs, records.per_class, sites)),
        page.failures_section(_status_table(runs), failures(runs)),
    ]
    return page.render(sections, records.name or "Transfer-learning study"), answer


def write_report(study_dir: str | os.PathLike, all_versions: bool = False, force: bool = False) -> Path:
    """Write report.html, learning_curves.png and summary.csv into ``study_dir``; return report.html.

    Holds the study folder's lock while writing. A report made from fewer done runs than the one
    it would replace (an emptied or truncated store) is refused unless ``force``: a good report
    is never silently overwritten by an emptier one.
    """
    study_dir = Path(study_dir)
    if not (study_dir / STORE_FILE).is_file():
        raise DataError(f"{study_dir / STORE_FILE}: no results store here (run `medtransfer study run` first)")
    with study_lock(study_dir):
        return _write_report(study_dir, all_versions, force)


def _write_report(study_dir: Path, all_versions: bool, force: bool) -> Path:
    records = read_study(study_dir, all_versions=all_versions)
    n_done = records.done_in_store
    before = _done_runs_in(study_dir / "report.html")
    if before is not None and n_done < before and not force:
        raise MedtransferError(f"{study_dir / 'report.html'} was made from {before} done runs but the store now "
                               f"gives {n_done}; not replacing it with an emptier report (pass --force to do so)")
    summary, intervals = summarise(records)
    pngs = {}
    for name, figure in (("learning_curves.png", learning_curve_figure), ("recipes.png", recipes_figure)):
        buf = io.BytesIO()
        fig = figure(summary, records.sites)
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        pngs[name] = buf.getvalue()
        write_bytes_atomic(study_dir / name, pngs[name])
    table = summary[CSV_COLUMNS].copy()
    for col in ("task", "arch", "recipe", "init"):
        table[col] = [None if pd.isna(v) else redact(v) for v in table[col]]
    write_bytes_atomic(study_dir / "summary.csv", table.to_csv(index=False, float_format="%.6g").encode())
    out = study_dir / "report.html"
    html_text, answer = render_report(records, summary, intervals, pngs)
    html_text = html_text.replace("<head>", f'<head><meta name="{DONE_MARKER}" content="{n_done}">', 1)
    write_json_atomic(study_dir / "answer.json", redact_answer(answer))
    write_bytes_atomic(out, html_text.encode("utf-8"))
    return out


REDACTED_KEYS = ("reason", "recipe", "init", "versus")   # free text from configs and failures (not our own prose)


def redact_answer(answer):
    """The answer with the free-text fields passed through ``redact`` (as summary.csv's are)."""
    if isinstance(answer, dict):
        return {k: redact(v) if k in REDACTED_KEYS and isinstance(v, str) else redact_answer(v)
                for k, v in answer.items()}
    if isinstance(answer, list):
        return [redact_answer(v) for v in answer]
    return answer

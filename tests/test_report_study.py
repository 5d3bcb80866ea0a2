"""The study report on a synthetic results.sqlite built per the study contract's schema."""
from __future__ import annotations

import hashlib
import html
import json
import math
import re
import sqlite3
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtransfer.errors import ConfigError, DataError
from medtransfer.report import study_summary, write_report
from medtransfer.report.plots import learning_curve_figure
from medtransfer.report.store import read_study
from medtransfer.report.tables import study_table

SCHEMA = """
CREATE TABLE runs (
  run_id TEXT PRIMARY KEY, role TEXT NOT NULL, method TEXT NOT NULL, task TEXT NOT NULL,
  arch TEXT, init TEXT, strategy TEXT, lr_policy TEXT, dropout REAL, recipe TEXT NOT NULL,
  n_train INTEGER, n_train_images INTEGER, n_train_patients INTEGER, seed INTEGER,
  status TEXT NOT NULL, reason TEXT, config_json TEXT NOT NULL, metrics_json TEXT,
  test_auroc REAL, val_auroc REAL, seconds REAL, started_at TEXT, finished_at TEXT, run_dir TEXT);
CREATE TABLE per_class (
  run_id TEXT NOT NULL, split TEXT NOT NULL, label TEXT NOT NULL, auroc REAL, auprc REAL,
  PRIMARY KEY (run_id, split, label));
"""
STUDY_YAML = """
name: Synthetic pneumonia study
base: {}
sources:
  chest: {site: same, data: {source: medmnist, name: chestmnist}, task: {kind: multilabel}}
  knee: {site: other, data: {source: csv, path: knee-oa-64/labels.csv}, task: {kind: multiclass}}
grid: {}
"""
LEAKY_ID = "00000001_000.png"
SEED_OFFSET = {0: 0.0, 1: -0.01, 2: 0.01}
PMNIST = "pneumoniamnist:binary"
NIH = "nih14-mini:multilabel"
# mean test AUROC by recipe and requested N (None = all) on the binary task (resnet18), seeds 0-2
BASE = {
    ("source:chest", "full", "one_cycle"): {50: 0.75, 200: 0.80, None: 0.91},
    ("source:chest", "gradual", "one_cycle"): {50: 0.73, 200: 0.83, None: 0.92},
    ("scratch", "full", "one_cycle"): {50: 0.60, 200: 0.66, None: 0.90},
    ("imagenet", "full", "one_cycle"): {50: 0.70, 200: 0.78, None: 0.93},
    ("source:knee", "full", "one_cycle"): {50: 0.66, 200: 0.72, None: 0.88},
    ("imagenet", "frozen", "constant"): {50: 0.62, 200: 0.70, None: 0.85},
}
RADIOMICS = {50: 0.68, 200: 0.74, None: 0.80}
N_ALL = 4708


def _recipe(init, strategy, policy):
    return f"{init.removeprefix('source:')} / {strategy} / {policy}"


def _row(**kw):
    row = dict(role="grid", method="cnn", arch=None, init=None, strategy=None, lr_policy=None, dropout=None,
               n_train=None, n_train_images=None, n_train_patients=None, seed=0, status="done", reason=None,
               metrics_json=None, test_auroc=None, val_auroc=None, seconds=10.0, started_at="2025-01-01T00:00:00Z",
               finished_at="2025-01-01T00:00:10Z")
    row.update(kw)
    config = {"task": {"kind": row["task"].split(":")[1]}, "recipe": row["recipe"], "n": row["n_train"],
              "seed": row["seed"], "arch": row["arch"], "role": row["role"]}
    row["config_json"] = json.dumps(config, sort_keys=True)
    row["run_id"] = hashlib.sha256(row["config_json"].encode()).hexdigest()[:16]
    row["run_dir"] = f"runs/{row['run_id']}"
    if row["status"] == "done" and row["metrics_json"] is None:
        row["metrics_json"] = json.dumps({"task_kind": config["task"]["kind"],
                                          "test": {"auroc_macro": row["test_auroc"]},
                                          "debug_image_ids": [LEAKY_ID], "note": "patient 12345"})
    return row


def _grid_rows():
    rows = []
    for (init, strategy, policy), by_n in BASE.items():
        for n, base in by_n.items():
            for seed in (0, 1, 2):
                kw = dict(task=PMNIST, arch="resnet18", init=init, strategy=strategy, lr_policy=policy, dropout=0.2,
                          recipe=_recipe(init, strategy, policy), n_train=n, seed=seed)
                if init == "imagenet" and strategy == "frozen" and seed > 0:
                    reason = f"TrainingDiverged: loss became NaN at epoch 3 (batch with /data/images/{LEAKY_ID})"
                    rows.append(_row(**kw, status="failed", seconds=3.0, reason=reason))
                    continue
                if init == "imagenet" and n is None and seed > 0:
                    reason = "WeightsUnavailable: place resnet18-f37072fd.pth in ~/.cache/torch/hub/checkpoints"
                    rows.append(_row(**kw, status="skipped", seconds=None, reason=reason))
                    continue
                if init == "source:knee" and n == 50 and seed == 2:
                    rows.append(_row(**kw, status="failed", seconds=1.0, reason="Traceback (most recent call last):\n"
                                     "  File x.py\nDataError: cannot decode image " + LEAKY_ID))
                    continue
                auroc = base + SEED_OFFSET[seed]
                rows.append(_row(**kw, n_train_images=n or N_ALL, test_auroc=auroc, val_auroc=auroc - 0.02))
    for n, base in RADIOMICS.items():
        for seed in (0, 1, 2):
            rows.append(_row(task=PMNIST, method="radiomics", recipe="radiomics / logistic", n_train=n, seed=seed,
                             n_train_images=n or N_ALL, test_auroc=base + SEED_OFFSET[seed], seconds=2.0))
    return rows


def _nih_rows():
    """Multi-label task: N 50 trains on 50 or 52 images (patient-grouped), Hernia undefined in seed 1."""
    rows, per_class = [], []
    for init, base in (("scratch", 0.0), ("imagenet", 0.05)):
        for n, images, macro in ((50, (50, 52), 0.60), (200, (200, 198), 0.70)):
            for seed in (0, 1):
                row = _row(task=NIH, arch="densenet121", init=init, strategy="full", lr_policy="one_cycle",
                           dropout=0.2, recipe=_recipe(init, "full", "one_cycle"), n_train=n, seed=seed,
                           n_train_images=images[seed], test_auroc=macro + base + 0.01 * seed, seconds=20.0)
                rows.append(row)
                classes = {"Effusion": 0.8 + base + 0.02 * seed, "Pneumonia": 0.55 + base,
                           "Hernia": None if seed == 1 else 0.9}
                for label, auc in classes.items():
                    per_class.append((row["run_id"], "test", label, auc, None))
                    per_class.append((row["run_id"], "val", label, 0.01, None))
        rows.append(_row(task=NIH, arch="densenet121", init=init, strategy="full", lr_policy="one_cycle",
                         dropout=0.2, recipe=_recipe(init, "full", "one_cycle"), n_train=50, seed=2,
                         n_train_images=51, test_auroc=None, seconds=20.0))
    return rows, per_class


def _source_rows():
    return [_row(role="source", task="chestmnist:multilabel", arch="resnet18", init="scratch", recipe="source chest",
                 n_train_images=1000, test_auroc=0.7, seconds=100.0),
            _row(role="source", task="knee-oa-64:multiclass", arch="resnet18", init="scratch", recipe="source knee",
                 n_train_images=1000, test_auroc=0.8, seconds=50.0)]


def make_study(path, spec=STUDY_YAML, rows=None, per_class=None):
    path.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        (path / "study.yaml").write_text(spec)
    if rows is None:
        nih_rows, per_class = _nih_rows()
        rows = _grid_rows() + nih_rows + _source_rows()
    con = sqlite3.connect(path / "results.sqlite")
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    cols = list(rows[0]) if rows else []
    for row in rows:
        con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [row[c] for c in cols])
    con.executemany("INSERT INTO per_class VALUES (?, ?, ?, ?, ?)", per_class or [])
    con.commit()
    con.close()
    return path


class _Tables(HTMLParser):
    """Collects (preceding h2, preceding h3, rows of cell texts) for every <table>."""

    def __init__(self):
        super().__init__()
        self.tables, self.h2, self.h3, self._tag, self._cell, self._row = [], "", "", None, None, None

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "h3"):
            self._tag = tag
            setattr(self, tag, "")
        elif tag == "table":
            self.tables.append((self.h2, self.h3, []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._tag = None
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(" ".join(self._cell.split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1][2].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._tag:
            setattr(self, self._tag, getattr(self, self._tag) + data)
        if self._cell is not None:
            self._cell += data + " "


def tables_under(html_text, h2_start, h3_start=""):
    parser = _Tables()
    parser.feed(html_text)
    return [rows for h2, h3, rows in parser.tables if h2.startswith(h2_start) and h3.startswith(h3_start)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = make_study(tmp_path_factory.mktemp("study"))
    report = write_report(path)
    return path, report.read_text(encoding="utf-8")


def test_files_written_and_self_contained(study):
    path, html_text = study
    for name in ("report.html", "learning_curves.png", "summary.csv"):
        assert (path / name).is_file() and (path / name).stat().st_size > 0
    assert (path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html_text, re.IGNORECASE)
    assert "http://" not in html_text and "https://" not in html_text
    assert "<script" not in html_text and "<link" not in html_text
    assert 'src="data:image/png;base64,' in html_text
    assert "Synthetic pneumonia study" in html_text


def test_no_patient_or_image_ids_leak(study):
    path, html_text = study
    for text in (html_text, (path / "summary.csv").read_text()):
        assert LEAKY_ID not in text and "00000001" not in text and "12345" not in text


def test_best_recipe_per_n(study):
    _, html_text = study
    (rows,) = tables_under(html_text, "Best recipe", f"{PMNIST} — resnet18")
    assert rows[0][1:5] == ["best recipe (on validation)", "val AUROC", "test AUROC", "95% CI"]
    winners = {r[0]: (r[1], r[3], r[4]) for r in rows[1:]}
    assert winners["50"][:2] == ("chest / full / one_cycle", "0.750")
    assert winners["200"][:2] == ("chest / gradual / one_cycle", "0.830")
    # the largest N: ImageNet wins on its one finished seed, so no CI
    assert winners[f"all ({N_ALL:,})"] == ("imagenet / full / one_cycle", "0.930", "— (1 seed)")
    t = stats.t.ppf(0.975, 2) * np.std([0.75, 0.74, 0.76], ddof=1) / math.sqrt(3)
    assert winners["50"][2] == f"{0.75 - t:.3f} – {0.75 + t:.3f}"


def test_gain_table_matches_hand_computation(study):
    _, html_text = study
    (rows,) = tables_under(html_text, "Gain of same-site", f"{PMNIST} — resnet18")
    got = {(r[0], r[3].split(" ")[0]): (float(r[5]), r[7]) for r in rows[1:]}
    knee_50 = (0.66 + 0.65) / 2   # seed 2 failed
    expected = {
        ("50", "scratch"): (0.75 - 0.60, 100 * 0.15 / 0.60),
        ("50", "ImageNet"): (0.75 - 0.70, 100 * 0.05 / 0.70),   # imagenet's best recipe is full, not frozen
        ("50", "knee"): (0.75 - knee_50, 100 * (0.75 - knee_50) / knee_50),
        ("50", "radiomics"): (0.75 - 0.68, 100 * 0.07 / 0.68),
        ("200", "scratch"): (0.83 - 0.66, 100 * 0.17 / 0.66),    # chest's best at 200 is gradual
        ("200", "ImageNet"): (0.83 - 0.78, 100 * 0.05 / 0.78),
        ("200", "knee"): (0.83 - 0.72, 100 * 0.11 / 0.72),
        (f"all ({N_ALL:,})", "ImageNet"): (0.92 - 0.93, 100 * -0.01 / 0.93),
        (f"all ({N_ALL:,})", "knee"): (0.92 - 0.88, 100 * 0.04 / 0.88),
    }
    for key, (gain, percent) in expected.items():
        assert got[key][0] == pytest.approx(gain, abs=6e-4), key
        assert got[key][1] == f"{percent:+.1f} %", key
    assert all(r[1].startswith("chest (same-site)") for r in rows[1:])
    assert [r[3].split(" ")[0] for r in rows[1:5]] == ["scratch", "ImageNet", "knee", "radiomics"]
    assert rows[3][3].startswith("knee (other-site)") and rows[4][3].startswith("radiomics + LR")
    # the Welch interval of chest full vs scratch at N=50 equals scipy's
    ci = stats.ttest_ind([0.75, 0.74, 0.76], [0.60, 0.59, 0.61], equal_var=False).confidence_interval(0.95)
    row = next(r for r in rows[1:] if r[0] == "50" and r[3].startswith("scratch"))
    assert row[6] == f"{ci.low:.3f} – {ci.high:.3f}"


def test_summary_ci_matches_scipy_and_single_seed_has_none(study):
    path, _ = study
    summary = study_summary(path)
    row = summary[(summary["recipe"] == "chest / full / one_cycle") & (summary["n_train"] == "50")].iloc[0]
    values = [0.75, 0.74, 0.76]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert row["n_seeds"] == 3 and row["test_auroc_mean"] == pytest.approx(0.75)
    assert row["test_auroc_sd"] == pytest.approx(np.std(values, ddof=1))
    assert (row["test_auroc_ci_low"], row["test_auroc_ci_high"]) == pytest.approx((low, high))
    single = summary[summary["recipe"] == "imagenet / frozen / constant"]
    assert (single["n_seeds"] == 1).all() and single["test_auroc_ci_low"].isna().all()
    assert (single["n_failed"] == 2).all()
    # patient-grouped subsets: the x of N=50 is the median of 50 and 52 images; the undefined-AUROC run is not a seed
    nih = summary[(summary["task"] == NIH) & (summary["n_train"] == "50") & (summary["init"] == "scratch")].iloc[0]
    assert nih["N"] == 51 and nih["n_seeds"] == 2 and nih["n_done"] == 3
    radiomics = summary[summary["method"] == "radiomics"]
    assert len(radiomics) == 3 and radiomics["arch"].isna().all()
    csv = pd.read_csv(path / "summary.csv")
    assert len(csv) == len(summary) and list(csv.columns) == list(summary.columns)


def test_figure_has_one_line_per_init_with_bands_and_radiomics(study):
    path, _ = study
    records = read_study(path)
    fig = learning_curve_figure(study_table(records.runs), records.sites)
    ax = next(a for a in fig.axes if a.get_title() == f"{PMNIST} — resnet18")
    gids = {artist.get_gid() for artist in ax.get_children()}
    assert {"line:chest (same-site)", "line:ImageNet", "line:radiomics + LR"} <= gids
    assert "band:chest (same-site)" in gids
    assert ax.get_xscale() == "log"
    colours = {line.get_gid(): line.get_color() for line in ax.get_lines()}
    assert colours["line:chest (same-site)"] != colours["line:knee (other-site)"]
    legend_labels = {t.get_text() for legend in fig.legends for t in legend.get_texts()}
    assert "radiomics + LR" in legend_labels


def test_per_class_table_at_largest_n(study):
    _, html_text = study
    (rows,) = tables_under(html_text, "Per-finding", NIH)
    header, body = rows[0], {r[0]: r[1:] for r in rows[1:]}
    assert header[1].startswith("scratch") and header[2].startswith("ImageNet")
    assert body["Effusion"] == [f"{0.81:.3f}", f"{0.86:.3f}"]   # mean over seeds 0/1 at N=200, test split only
    assert body["Hernia"] == ["0.900 (1)", "0.900 (1)"]          # undefined in seed 1
    assert not tables_under(html_text, "Per-finding", PMNIST)


def test_failed_and_skipped_runs_listed(study):
    _, html_text = study
    status, reasons = tables_under(html_text, "Failed and skipped")
    counts = {(r[0], r[1]): int(r[2]) for r in status[1:]}
    assert counts[("grid", "failed")] == 7 and counts[("grid", "skipped")] == 2 and counts[("source", "done")] == 2
    text = {r[2]: (r[0], int(r[3])) for r in reasons[1:]}
    weights = next(k for k in text if k.startswith("WeightsUnavailable"))
    assert "resnet18-f37072fd.pth" in weights and text[weights] == ("skipped", 2)
    diverged = next(k for k in text if k.startswith("TrainingDiverged"))
    assert text[diverged] == ("failed", 6) and "[redacted]" in diverged
    assert any(k.startswith("DataError: cannot decode image [redacted]") for k in text)
    assert any(v[0] == "done, no test AUROC" and v[1] == 2 for v in text.values())


def test_unlabelled_sources_are_compared_on_their_own(tmp_path):
    spec = STUDY_YAML.replace("site: same, ", "").replace("site: other, ", "")
    html_text = write_report(make_study(tmp_path, spec=spec)).read_text()
    (rows,) = tables_under(html_text, "Gain of transfer from each", f"{PMNIST} — resnet18")
    refs = {r[1].split(" (")[0] for r in rows[1:]}
    assert refs == {"chest", "knee"}
    assert not any(r[3].startswith(("chest", "knee")) for r in rows[1:])
    assert "site: same" in html_text


def test_missing_spec_and_empty_store(tmp_path):
    path = make_study(tmp_path / "empty", spec=None, rows=[], per_class=[])
    html_text = write_report(path).read_text()
    assert "No finished runs yet" in html_text and "study.yaml not found" in html_text
    assert study_summary(path).empty


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="results.sqlite"):
        write_report(tmp_path)
    make_study(tmp_path / "bad", spec=STUDY_YAML.replace("site: other", "site: elsewhere"))
    with pytest.raises(ConfigError, match=r"sources\.knee\.site"):
        write_report(tmp_path / "bad")


def test_radiomics_only_task_gets_its_own_panel(tmp_path):
    rows = [_row(task="knee-oa-64:multiclass", method="radiomics", recipe="radiomics / logistic", n_train=n, seed=s,
                 n_train_images=n, test_auroc=0.6 + 0.01 * s) for n in (50, 200) for s in (0, 1)]
    path = make_study(tmp_path, rows=rows, per_class=[])
    html_text = write_report(path).read_text()
    fig = learning_curve_figure(study_table(read_study(path).runs), {})
    assert [ax.get_title() for ax in fig.axes] == ["knee-oa-64:multiclass"]
    (table,) = tables_under(html_text, "Best recipe", "knee-oa-64:multiclass")
    assert [r[1] for r in table[1:]] == ["radiomics + LR", "radiomics + LR"]


def test_report_reads_while_the_study_is_writing(tmp_path):
    """WAL: a writer mid-transaction neither blocks the report nor shows it uncommitted rows."""
    path = make_study(tmp_path)
    writer = sqlite3.connect(path / "results.sqlite", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE runs SET status = 'failed', reason = 'uncommitted' WHERE role = 'grid'")
        html_text = write_report(path).read_text()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert "uncommitted" not in html_text and "chest / gradual / one_cycle" in html_text


def test_xrv_recipes_are_marked_with_what_their_weights_saw(tmp_path):
    """torchxrayvision inits get a † on their recipes and a note naming their training sets and the leaky tasks."""
    nih_rows, per_class = _nih_rows()
    init = "xrv:densenet121-res224-all"
    xrv = []
    for n in (50, 200):
        for seed in (0, 1):
            row = _row(task=NIH, arch="densenet121", init=init, strategy="full", lr_policy="one_cycle", dropout=0.2,
                       recipe=f"{init} / full / one_cycle", n_train=n, seed=seed, n_train_images=n,
                       test_auroc=0.9 + 0.01 * seed, val_auroc=0.88 + 0.01 * seed, seconds=20.0)
            config = json.loads(row["config_json"])
            config["data"] = {"source": "nih14", "path": "nih14-mini"}
            row["config_json"] = json.dumps(config)
            xrv.append(row)
    out = make_study(tmp_path / "S", rows=nih_rows + xrv, per_class=per_class)
    text = write_report(out).read_text()
    best = tables_under(text, "Best recipe")[0]
    assert [row[1].strip() for row in best[1:]] == [f"{init} / full / one_cycle †"] * 2
    assert f"† {init} was pretrained on NIH ChestX-ray14, PadChest, CheXpert, MIMIC-CXR" in text
    assert f"In this study {NIH} (NIH ChestX-ray14) tests on images these weights were trained on" in text
    assert "scratch / full / one_cycle †" not in text and "imagenet / full / one_cycle †" not in text
    # the summary keeps the recipe name as stored: it is a key other commands look recipes up by
    assert f"{init} / full / one_cycle" in set(study_summary(out)["recipe"])


def test_a_report_without_xrv_inits_has_no_mark(tmp_path):
    text = write_report(make_study(tmp_path / "S")).read_text()
    assert "†" not in text


def test_best_is_chosen_on_validation_and_reported_on_test():
    """A recipe that wins on test but not on validation is not the best: test never chooses."""
    from medtransfer.report.tables import SUMMARY_COLUMNS, best_recipes

    def recipe(name, val, test):
        row = dict.fromkeys(SUMMARY_COLUMNS)
        row.update(task=PMNIST, task_kind="binary", arch="resnet18", method="cnn", recipe=name,
                   init=name.split(" / ")[0], n_train=50, N=50, n_seeds=3, test_auroc_mean=test,
                   test_auroc_ci_low=test - 0.05, test_auroc_ci_high=test + 0.05, val_auroc_mean=val)
        return row

    summary = pd.DataFrame([recipe("scratch / full / one_cycle", val=0.70, test=0.90),    # lucky on test
                            recipe("chest / full / one_cycle", val=0.85, test=0.80)], columns=SUMMARY_COLUMNS)
    (best,) = best_recipes(summary).itertuples()
    assert best.recipe == "chest / full / one_cycle" and best.auroc == 0.80 and best.val_auroc == 0.85
    assert best.runner_up == "scratch / full / one_cycle" and best.runner_up_auroc == 0.90


def test_binary_best_recipes_show_sensitivity_and_specificity_at_the_val_threshold(tmp_path):
    rows = []
    for seed, (sens, spec) in enumerate(((0.8, 0.6), (0.9, 0.7))):
        row = _row(task=PMNIST, arch="resnet18", init="scratch", strategy="full", lr_policy="one_cycle", dropout=0.2,
                   recipe="scratch / full / one_cycle", n_train=50, seed=seed, n_train_images=50, test_auroc=0.8,
                   val_auroc=0.8)
        metrics = json.loads(row["metrics_json"])
        metrics["test"]["operating_point"] = {"threshold": 0.4, "criterion": "youden on val", "accuracy": 0.7,
                                              "sensitivity": sens, "specificity": spec}
        row["metrics_json"] = json.dumps(metrics)
        rows.append(row)
    text = write_report(make_study(tmp_path / "S", rows=rows)).read_text()
    (table_rows,) = tables_under(text, "Best recipe")
    header, first = table_rows[0], table_rows[1]
    assert header[5:8] == ["sensitivity", "specificity", "accuracy"]
    assert first[5:8] == ["0.850", "0.650", "0.700"]


@pytest.mark.parametrize("section, needle", [
    ({"mask_column": None, "normalize": True}, "on the whole image (no mask"),
    ({"mask_column": "mask", "normalize": True}, "inside the masks of column 'mask', intensities z-scored"),
    ({"mask_column": None}, "raw intensities (not normalised)"),       # recorded before normalize existed
])
def test_report_says_where_the_radiomics_features_came_from(tmp_path, section, needle):
    rows = []
    for seed in (0, 1):
        row = _row(task=PMNIST, method="radiomics", recipe="radiomics / logistic", n_train=50, seed=seed,
                   n_train_images=50, test_auroc=0.7, val_auroc=0.7)
        config = json.loads(row["config_json"])
        config["radiomics"] = section
        row["config_json"] = json.dumps(config)
        rows.append(row)
    text = html.unescape(write_report(make_study(tmp_path / "S", rows=rows)).read_text())
    assert "radiomics baseline: pyradiomics features" in text and needle in text


def test_n_and_its_patients_reach_the_summary_the_best_table_and_answer_json(tmp_path):
    """Issue 23: where the N images came from fewer patients (NIH follow-ups) the report says how many."""
    rows, per_class = _nih_rows()
    for r in rows:
        if r["n_train_images"] is not None:
            r["n_train_patients"] = r["n_train_images"] - (1 if r["n_train"] == 50 else 20)
    path = make_study(tmp_path / "S", rows=rows, per_class=per_class)
    summary = study_table(read_study(path).runs)
    at50 = summary[(summary["n_train"] == "50") & (summary["recipe"] == "scratch / full / one_cycle")].iloc[0]
    assert (at50["N"], at50["n_patients"]) == (51.0, 50.0)          # medians over the seeds that finished
    html_text = html.unescape(write_report(path).read_text())
    (table_rows,) = tables_under(html_text, "Best recipe", f"{NIH} — densenet121")
    assert [r[0] for r in table_rows[1:]] == ["51 · 50 patients", "199 · 179 patients"]
    (panel,) = json.loads((path / "answer.json").read_text())["panels"]
    assert [(r["N"], r["n_patients"]) for r in panel["best_recipe_per_n"]] == [(51, 50), (199, 179)]
    assert "N = 51 (50 patients)" in html_text


def test_key_results_name_what_was_skipped_first_and_answer_json_matches(study):
    path, html_text = study
    key = html_text.split("<h2>Key results</h2>", 1)[1].split("</ul>", 1)[0]
    first = key.split("<li", 2)[1]
    # ImageNet has results at other N: its skipped runs leave it partly missing, not absent
    assert "Partly missing: ImageNet" in first and "skipped" in first and "resnet18-f37072fd.pth" in first
    assert "Not in this answer" not in key
    answer = json.loads((path / "answer.json").read_text())
    skipped = [s for s in answer["skipped"] if s["status"] == "skipped"]
    assert skipped[0]["init"] == "ImageNet" and skipped[0]["runs"] == 2 and skipped[0]["has_results"]
    assert LEAKY_ID not in (path / "answer.json").read_text() and LEAKY_ID not in html_text
    panel = next(p for p in answer["panels"] if p["task"] == PMNIST)
    assert panel["metric"] == "test AUROC" and panel["best_recipe_per_n"]
    for row in panel["best_recipe_per_n"]:
        assert row["val_auroc"] is not None                        # chosen on validation
    assert {"selection", "uncertainty", "learning_curve"} <= set(answer["methods"])


def test_design_notes_state_the_budget_and_the_validation_size():
    from medtransfer.report.store import design_notes
    config = {"task": {"kind": "binary"}, "data": {"source": "medmnist", "val_size": "proportional"},
              "train": {"epochs": 3, "batch_size": 32, "min_steps": 100}}
    old = {"task": {"kind": "binary"}, "data": {"source": "medmnist"}, "train": {"epochs": 3, "batch_size": 32}}
    frames = []
    for cfg in (config, old):
        row = _row(task=PMNIST, arch="resnet18", recipe="scratch / full / constant", n_train=50, test_auroc=0.8)
        row["config_json"] = json.dumps(cfg)
        frames.append(row)
    from medtransfer.report.store import _config_facts
    facts = [_config_facts(r["config_json"]) for r in frames]
    runs = pd.DataFrame({"role": ["grid", "grid"], "method": ["cnn", "cnn"], "budget": [f.budget for f in facts],
                         "val_size": [f.val_size for f in facts]})
    notes = design_notes(runs)
    assert any("at least 100 optimiser steps" in n for n in notes)
    assert any("no minimum step count" in n for n in notes)            # a run recorded before min_steps existed
    assert any("proportional" in n for n in notes) and any("val_size=fixed" in n for n in notes)


def test_answer_gains_cover_every_pretrained_init_and_an_absent_init_is_named_as_absent(tmp_path):
    rows = [r for r in _grid_rows() if r["init"] != "imagenet" or r["status"] == "done"]
    rows += [_row(task=PMNIST, arch="resnet18", init="imagenet", strategy="full", lr_policy="one_cycle", dropout=0.2,
                  recipe=_recipe("imagenet", "full", "one_cycle"), n_train=n, seed=seed, status="skipped",
                  seconds=None, reason="WeightsUnavailable: place resnet18-f37072fd.pth")
             for n in (50, 200) for seed in (0, 1, 2)]
    rows = [r for r in rows if not (r["init"] == "imagenet" and r["status"] == "done")]
    path = make_study(tmp_path / "S", rows=rows)
    text = write_report(path).read_text()
    key = text.split("<h2>Key results</h2>", 1)[1].split("</ul>", 1)[0]
    assert "Not in this answer: ImageNet" in key.split("<li", 2)[1]
    answer = json.loads((path / "answer.json").read_text())
    panel = next(p for p in answer["panels"] if p["task"] == PMNIST)
    pairs = {(g["init"], g["versus"]) for g in panel["gains"]}
    assert ("knee (other-site)", "scratch") in pairs                 # an other-site source over scratch too
    assert not any(i == "ImageNet" or v == "ImageNet" for i, v in pairs)


def test_within_noise_says_which_interval_contains_zero():
    from medtransfer.report.answer_page import _gains

    row = dict(init="chest", versus="scratch", n_train=50, N=50, gain=0.001, ci_low=-0.01, ci_high=0.02,
               within_noise=True)
    paired = _gains({"gains": [dict(row, ci_method="two-level bootstrap")]}, "p")[0]
    unpaired = _gains({"gains": [dict(row, ci_method="t over seeds")]}, "p")[0]
    assert "the paired CI contains 0" in paired and "unpaired t-interval over seeds contains 0" in unpaired


def test_target_n_far_beyond_the_data_is_not_shown_and_ranges_read_in_words():
    from medtransfer.report.answer_page import _crossover, _curves

    per_n = [{"N": 50}, {"N": 200}, {"N": 800}]
    targets = [{"auroc": 0.9, "estimate": 120, "ci_low": 30, "ci_high": None, "extrapolated": False},
               {"auroc": 0.95, "estimate": 775744, "ci_low": 3854, "ci_high": None, "extrapolated": True}]
    init = {"init": "radiomics", "per_n": per_n, "learning_curve": {"fitted": True, "predicted": [],
                                                                     "n_for_target": targets, "holdout": {}}}
    text = _curves({"inits": [init]}, "p", [0.9, 0.95])[0]
    assert "N for AUROC 0.9: ≈ 120 (within the studied N; 95% range below 50 to never" in text
    assert "775,744" not in text and "N for AUROC 0.95: beyond 10x the largest N studied (8,000); not estimated" in text
    cross = {"init": "chest", "matches_from_N": 57, "match_extrapolated": False, "match_range": [None, None],
             "beats_from_N": None, "beat_note": "no crossing", "radiomics_side": None}
    line = _crossover({"crossover_vs_radiomics": {"measured": [], "from_learning_curves": [cross]}}, "p")[0]
    assert "matches radiomics from N ≈ 57 (within the studied N; 95% range below the smallest N studied to beyond " \
           "10x the largest N studied)" in line
    targets[0]["ci_high"] = 9000   # an end past 10x the largest N is not shown either
    assert "95% range below 50 to beyond 10x the largest N studied (8,000))" in _curves({"inits": [init]}, "p", [])[0]

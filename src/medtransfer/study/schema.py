"""The layout of STUDY_DIR/results.sqlite, in one place: the study writes it, the report and status read it.

``runs``: one row per run id (upserted, never duplicated). ``per_class``: per-label AUROC / AUPRC of
done runs. ``plans``: each expanded spec a ``study run`` executed (its hash and run ids), and
``meta.current_plan`` the latest; rows of run ids outside the current plan belong to an earlier
version of the spec, which the report and ``study status`` leave out by default.
"""
from __future__ import annotations

STORE_FILE = "results.sqlite"
SPEC_FILE = "study.yaml"        # the spec as run, with its --set overrides as comment lines

RUN_COLUMNS = ("run_id", "role", "method", "task", "arch", "init", "strategy", "lr_policy", "dropout", "recipe",
               "n_train", "n_train_images", "n_train_patients", "seed", "status", "reason", "config_json",
               "metrics_json", "test_auroc", "val_auroc", "seconds", "started_at", "finished_at", "run_dir",
               "test_auroc_low", "test_auroc_high", "source_run_id")
# Columns added after stores were first written: Store adds them to an older file (ALTER TABLE), and a
# read-only reader of an older file sees NULL for them.
ADDED_RUN_COLUMNS = {"test_auroc_low": "REAL", "test_auroc_high": "REAL",   # the run's test bootstrap interval
                     "source_run_id": "TEXT"}   # a grid run: the run id of the source whose weights it started from
PER_CLASS_COLUMNS = ("run_id", "split", "label", "auroc", "auprc")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  role TEXT NOT NULL,
  method TEXT NOT NULL,
  task TEXT NOT NULL,
  arch TEXT, init TEXT,
  strategy TEXT, lr_policy TEXT, dropout REAL,
  recipe TEXT NOT NULL,
  n_train INTEGER,
  n_train_images INTEGER,
  n_train_patients INTEGER,
  seed INTEGER,
  status TEXT NOT NULL,
  reason TEXT,
  config_json TEXT NOT NULL,
  metrics_json TEXT,
  test_auroc REAL, val_auroc REAL,
  seconds REAL,
  started_at TEXT, finished_at TEXT,
  run_dir TEXT,
  test_auroc_low REAL, test_auroc_high REAL,
  source_run_id TEXT
);
CREATE TABLE IF NOT EXISTS per_class (
  run_id TEXT NOT NULL, split TEXT NOT NULL, label TEXT NOT NULL,
  auroc REAL, auprc REAL,
  PRIMARY KEY (run_id, split, label)
);
CREATE TABLE IF NOT EXISTS plans (
  plan_hash TEXT PRIMARY KEY,
  recorded_at TEXT NOT NULL,
  run_ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT
);
"""

UPSERT_RUN = (f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' for _ in RUN_COLUMNS)}) "
              "ON CONFLICT(run_id) DO UPDATE SET "
              + ", ".join(f"{c}=excluded.{c}" for c in RUN_COLUMNS if c != "run_id"))

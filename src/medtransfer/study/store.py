"""STUDY_DIR/results.sqlite: one row per run, per-class metrics in a second table.

WAL mode and one short transaction per write, so a ``kill -9`` at any moment leaves
every committed row intact. Writes are upserts on ``run_id``: no id ever appears twice.
Only the driver process writes; executors hand their results back to it.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..kinds import RunRole, RunStatus
from ..run_folder import RunMetrics
from .grid import PlannedRun

STORE_FILE = "results.sqlite"

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
  run_dir TEXT
);
CREATE TABLE IF NOT EXISTS per_class (
  run_id TEXT NOT NULL, split TEXT NOT NULL, label TEXT NOT NULL,
  auroc REAL, auprc REAL,
  PRIMARY KEY (run_id, split, label)
);
"""

_COLUMNS = ("run_id", "role", "method", "task", "arch", "init", "strategy", "lr_policy", "dropout", "recipe",
            "n_train", "n_train_images", "n_train_patients", "seed", "status", "reason", "config_json",
            "metrics_json", "test_auroc", "val_auroc", "seconds", "started_at", "finished_at", "run_dir")
_UPSERT = (f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
           f"ON CONFLICT(run_id) DO UPDATE SET "
           + ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS if c != "run_id"))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Store:
    """The study's results table; opens a fresh connection per call so nothing stays half-written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with self._transaction() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            with db:  # commits on success, rolls back on error
                yield db

    # --- reads -------------------------------------------------------------------------------
    def statuses(self) -> dict[str, str]:
        with self._transaction() as db:
            return dict(db.execute("SELECT run_id, status FROM runs"))

    def done_ids(self) -> set[str]:
        return {rid for rid, status in self.statuses().items() if status == RunStatus.DONE}

    def rows(self, role: RunRole | None = None) -> list[dict[str, Any]]:
        with self._transaction() as db:
            db.row_factory = sqlite3.Row
            query = "SELECT * FROM runs" + (" WHERE role = ?" if role else "") + " ORDER BY finished_at, run_id"
            return [dict(r) for r in db.execute(query, (role,) if role else ())]

    def per_class(self, run_id: str) -> list[dict[str, Any]]:
        with self._transaction() as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM per_class WHERE run_id = ? ORDER BY split, label",
                                                (run_id,))]

    def counts(self) -> dict[str, int]:
        with self._transaction() as db:
            return dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))

    # --- writes (driver only) ------------------------------------------------------------------
    def record_done(self, run: PlannedRun, metrics: RunMetrics, started_at: str, finished_at: str,
                    seconds: float) -> None:
        """Call only once the run folder's metrics.json exists: a done row means complete files."""
        payload = metrics.to_json()
        row = _row(run, RunStatus.DONE, None, started_at, finished_at, seconds)
        row.update(metrics_json=json.dumps(payload), n_train_images=metrics.n_train_images,
                   n_train_patients=metrics.n_train_patients,
                   test_auroc=metrics.auroc("test"), val_auroc=metrics.auroc("val"))
        with self._transaction() as db:
            db.execute(_UPSERT, [row[c] for c in _COLUMNS])
            db.execute("DELETE FROM per_class WHERE run_id = ?", (run.run_id,))
            db.executemany("INSERT INTO per_class (run_id, split, label, auroc, auprc) VALUES (?, ?, ?, ?, ?)",
                           list(_per_class_rows(run.run_id, payload)))

    def record_failed(self, run: PlannedRun, reason: str, started_at: str | None = None,
                      finished_at: str | None = None, seconds: float | None = None) -> None:
        self._record_unfinished(run, RunStatus.FAILED, reason, started_at, finished_at, seconds)

    def record_skipped(self, run: PlannedRun, reason: str, started_at: str | None = None,
                       finished_at: str | None = None, seconds: float | None = None) -> None:
        self._record_unfinished(run, RunStatus.SKIPPED, reason, started_at, finished_at, seconds)

    def _record_unfinished(self, run, status, reason, started_at, finished_at, seconds) -> None:
        now = utc_now()
        row = _row(run, status, reason, started_at or now, finished_at or now, seconds)
        with self._transaction() as db:
            db.execute(_UPSERT, [row[c] for c in _COLUMNS])
            db.execute("DELETE FROM per_class WHERE run_id = ?", (run.run_id,))


def _row(run: PlannedRun, status: str, reason: str | None, started_at: str, finished_at: str,
         seconds: float | None) -> dict[str, Any]:
    cfg = run.config
    n = cfg.train.n_train
    cnn = not run.is_baseline   # a baseline has no arch / init / strategy / LR policy / dropout: NULL
    return {
        "run_id": run.run_id, "role": run.role, "method": run.method, "task": run.task,
        "arch": cfg.model.arch if cnn else None, "init": str(cfg.model.init) if cnn else None,
        "strategy": cfg.train.strategy if cnn else None, "lr_policy": cfg.train.lr_policy if cnn else None,
        "dropout": cfg.model.dropout if cnn else None, "recipe": run.recipe,
        "n_train": None if n == "all" else int(n), "n_train_images": None, "n_train_patients": None,
        "seed": cfg.train.seed, "status": status, "reason": reason, "config_json": run.config_json,
        "metrics_json": None, "test_auroc": None, "val_auroc": None,
        "seconds": None if seconds is None else round(float(seconds), 3),
        "started_at": started_at, "finished_at": finished_at, "run_dir": run.run_dir,
    }


def _per_class_rows(run_id: str, metrics: dict):
    for split in ("val", "test"):
        block = metrics.get(split) or {}
        aurocs, auprcs = block.get("auroc") or {}, block.get("auprc") or {}
        for label in dict.fromkeys(list(aurocs) + list(auprcs)):
            yield run_id, split, label, aurocs.get(label), auprcs.get(label)

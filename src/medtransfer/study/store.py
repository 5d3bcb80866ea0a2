"""STUDY_DIR/results.sqlite: one row per run, per-class metrics in a second table.

WAL mode and one short transaction per write, so a ``kill -9`` at any moment leaves
every committed row intact. Writes are upserts on ``run_id``: no id ever appears twice.
Only the driver process writes; executors hand their results back to it.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..errors import MedtransferError, as_disk_full
from ..kinds import RunRole, RunStatus
from ..run_folder import MetricBlock, RunMetrics
from .grid import PlannedRun
from .schema import ADDED_RUN_COLUMNS, RUN_COLUMNS, SCHEMA, UPSERT_RUN


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Store:
    """The study's results table; opens a fresh connection per call so nothing stays half-written.

    ``read_only=True`` is for readers (``study status``, the report): the store must already be a study's
    store (``check_store``) and is opened ``mode=ro``, so reading never creates a schema in an emptied
    file and then shows every run as pending, and never migrates or locks the file a study is writing.
    """

    def __init__(self, path: Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            check_store(self.path)
            return
        with self._transaction() as db:
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for column, kind in ADDED_RUN_COLUMNS.items():
                if column not in have:   # a store written before the column existed
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(connect_read_only(self.path) if self.read_only
                         else sqlite3.connect(self.path, timeout=30)) as db:
                if not self.read_only:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=NORMAL")
                with db:  # commits on success, rolls back on error
                    yield db
        except sqlite3.OperationalError as err:   # busy, locked, read-only, disk I/O: not a corrupt file
            full = as_disk_full(err, self.path)   # a full disk stops the study, naming the space left
            raise (full or MedtransferError(f"{self.path}: {err}")) from None
        except sqlite3.DatabaseError as err:
            raise unreadable_store(self.path, err) from None

    # --- plan versions -------------------------------------------------------------------------
    def record_plan(self, run_ids: list[str]) -> str:
        """Make ``run_ids`` the current plan (what the report and status count); returns its hash."""
        ids = sorted(set(run_ids))
        plan_hash = plan_hash_of(ids)
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO plans (plan_hash, recorded_at, run_ids) VALUES (?, ?, ?)",
                       (plan_hash, utc_now(), json.dumps(ids)))
            db.execute("INSERT INTO meta (key, value) VALUES ('current_plan', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (plan_hash,))
        return plan_hash

    def current_plan(self) -> tuple[str, set[str]] | None:
        return read_current_plan(self.path)

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
        low, high = metrics.test.ci_bounds() if metrics.test else (None, None)
        row.update(test_auroc_low=low, test_auroc_high=high)
        with self._transaction() as db:
            db.execute(UPSERT_RUN, [row[c] for c in RUN_COLUMNS])
            db.execute("DELETE FROM per_class WHERE run_id = ?", (run.run_id,))
            db.executemany("INSERT INTO per_class (run_id, split, label, auroc, auprc) VALUES (?, ?, ?, ?, ?)",
                           list(_per_class_rows(run.run_id, RunMetrics.from_json(payload))))

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
            db.execute(UPSERT_RUN, [row[c] for c in RUN_COLUMNS])
            db.execute("DELETE FROM per_class WHERE run_id = ?", (run.run_id,))


def read_current_plan(path: Path) -> tuple[str, set[str]] | None:
    """(hash, run ids) of the plan the last ``study run`` executed; None for a store older than plans.

    Read-only (a report may run while the study writes), and a corrupt file is a one-line error.
    """
    try:
        with closing(connect_read_only(path)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"plans", "meta"} <= tables:
                return None
            found = db.execute("SELECT p.plan_hash, p.run_ids FROM meta m JOIN plans p ON p.plan_hash = m.value "
                               "WHERE m.key = 'current_plan'").fetchone()
    except sqlite3.OperationalError as err:
        raise MedtransferError(f"{path}: {err}") from None
    except sqlite3.DatabaseError as err:
        raise unreadable_store(path, err) from None
    return None if found is None else (found[0], set(json.loads(found[1])))


def plan_hash_of(run_ids) -> str:
    return hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()[:16]


# What to do about a store that lost its rows: the run folders still hold every finished run's metrics.
REBUILD_HINT = ("move it away and rerun `medtransfer study run` with the same spec to rebuild it from the run "
                "folders (finished runs are adopted, not retrained)")


def unreadable_store(path: Path, err: Exception) -> MedtransferError:
    return MedtransferError(f"{path} is not a readable SQLite database ({err}); {REBUILD_HINT}")


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A ``mode=ro`` connection: it can neither create the file nor write to it (a URI, so any path works)."""
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def check_store(path: Path) -> None:
    """Refuse, in one line, a file that cannot be the study's results: empty (a 0-byte file, as a full disk
    or a bad copy leaves), truncated or otherwise not SQLite, or without a ``runs`` table. Only reads it.

    Without this a reader shows an emptied store as a study with every run pending, and says nothing
    about the results the run folders still hold.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise MedtransferError(f"cannot read {path}: {err.strerror or err}") from None
    if size == 0:
        raise MedtransferError(f"{path} is empty (0 bytes): it holds no results; {REBUILD_HINT}")
    try:
        with closing(connect_read_only(path)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "runs" in tables:
                db.execute("SELECT COUNT(*) FROM runs").fetchone()   # walks the table: a cut file fails here
    except sqlite3.OperationalError as err:   # locked, unreadable permissions: not a corrupt file
        raise MedtransferError(f"{path}: {err}") from None
    except sqlite3.DatabaseError as err:
        raise unreadable_store(path, err) from None
    if "runs" not in tables:
        raise MedtransferError(f"{path} has no 'runs' table, so it is not a study's results store; {REBUILD_HINT}")


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
        "test_auroc_low": None, "test_auroc_high": None,
        "source_run_id": run.source if run.role is RunRole.GRID else None,
    }


def _per_class_rows(run_id: str, metrics: RunMetrics):
    """``metrics`` as stored (read back from its JSON: NaN is null, numbers are plain)."""
    for split in ("val", "test"):
        block = metrics.block(split) or MetricBlock()
        aurocs, auprcs = block.auroc, block.auprc
        for label in dict.fromkeys(list(aurocs) + list(auprcs)):
            yield run_id, split, label, aurocs.get(label), auprcs.get(label)

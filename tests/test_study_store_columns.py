"""A store written before a column existed gains it when a study opens it, and reads as NULL before that."""
import sqlite3

from medtransfer.report.store import read_runs
from medtransfer.study.schema import ADDED_RUN_COLUMNS, SCHEMA
from medtransfer.study.store import Store


def _old_store(path):
    old_schema = SCHEMA.replace(",\n  test_auroc_low REAL, test_auroc_high REAL", "")
    assert "test_auroc_low" not in old_schema
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO runs (run_id, role, method, task, recipe, status, config_json, test_auroc) "
                   "VALUES ('r1', 'grid', 'cnn', 'pneu', 'scratch / full', 'done', '{}', 0.8)")


def test_old_store_reads_with_null_intervals_then_gains_the_columns(tmp_path):
    db = tmp_path / "results.sqlite"
    _old_store(db)
    runs, _ = read_runs(db)                       # read-only: the file is not changed
    assert runs.loc[0, "test_auroc"] == 0.8 and runs["test_auroc_low"].isna().all()
    with sqlite3.connect(db) as con:
        assert "test_auroc_low" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    Store(db)                                     # a study opening it adds the columns, keeping the row
    with sqlite3.connect(db) as con:
        have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        assert set(ADDED_RUN_COLUMNS) <= have
        assert con.execute("SELECT test_auroc FROM runs WHERE run_id = 'r1'").fetchone() == (0.8,)

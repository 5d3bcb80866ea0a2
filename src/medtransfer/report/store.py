"""Read a study's results.sqlite (and the site labels in study.yaml) into plain DataFrames.

The report reads the store (it can run while the study is still writing: WAL
readers do not block the writer). The raw ``config_json`` / ``metrics_json`` blobs
are parsed for the task kind and then dropped: nothing else from them reaches a
report. The one exception to "store only" is the CNN-vs-radiomics section, which
reads two runs' predictions_test.csv through ``run_dir`` to pair their test images
(see ``paired.py``); image ids never leave that function.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..errors import ConfigError, DataError

RUN_COLUMNS = [
    "run_id", "role", "method", "task", "arch", "init", "strategy", "lr_policy", "dropout",
    "recipe", "n_train", "n_train_images", "n_train_patients", "seed", "status", "reason",
    "test_auroc", "val_auroc", "seconds",
]
PER_CLASS_COLUMNS = ["run_id", "split", "label", "auroc", "auprc"]
SITES = ("same", "other")
TASK_KINDS = ("multilabel", "binary", "multiclass")


@dataclass
class StudyRecords:
    runs: pd.DataFrame                 # one row per run, RUN_COLUMNS + run_dir + task_kind + n_key
    per_class: pd.DataFrame            # test-split per-label rows of all runs
    name: str | None = None            # study.yaml `name`, when given
    sites: dict[str, str] = field(default_factory=dict)      # source name -> 'same' | 'other'
    sources: dict[str, str] = field(default_factory=dict)    # source name -> short data description
    notes: list[str] = field(default_factory=list)           # what the reader should know about the inputs
    study_dir: Path | None = None      # where run_dir paths are relative to


def _connect(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise DataError(f"{db}: no results store here (run `medtransfer study run` first)")
    # mode=rw: never create an empty store by mistake; the study may be writing concurrently
    return sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=30)


def _check_columns(con: sqlite3.Connection, db: Path, table: str, needed: list[str]) -> None:
    have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
    if not have:
        raise DataError(f"{db}: table '{table}' is missing")
    missing = [c for c in needed if c not in have]
    if missing:
        raise DataError(f"{db}: table '{table}' lacks column '{missing[0]}'")


def _task_kind(task: str, config_json: str | None, metrics_json: str | None) -> str | None:
    for blob, keys in ((config_json, ("task", "kind")), (metrics_json, ("task_kind",))):
        try:
            value = json.loads(blob) if blob else None
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
        except (TypeError, ValueError):
            value = None
        if value in TASK_KINDS:
            return value
    parts = str(task).split(":")
    return parts[1] if len(parts) > 1 and parts[1] in TASK_KINDS else None


def n_key(n_train) -> str:
    """The requested N as a group key: '50', '200', ... or 'all'."""
    return "all" if pd.isna(n_train) else str(int(n_train))


def read_runs(db: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, test per_class) from the store, with the task kind resolved per run."""
    con = _connect(db)
    try:
        _check_columns(con, db, "runs", RUN_COLUMNS + ["config_json", "metrics_json"])
        _check_columns(con, db, "per_class", PER_CLASS_COLUMNS)
        has_dir = "run_dir" in {row[1] for row in con.execute("PRAGMA table_info(runs)")}
        cols = ", ".join(RUN_COLUMNS + ["run_dir" if has_dir else "NULL"])
        rows = con.execute(f"SELECT {cols}, config_json, metrics_json FROM runs ORDER BY run_id").fetchall()
        per_class = pd.read_sql_query(
            "SELECT run_id, label, auroc, auprc FROM per_class WHERE split = 'test'", con)
    except sqlite3.DatabaseError as err:
        raise DataError(f"{db}: cannot read the results store ({err})") from None
    finally:
        con.close()
    kinds = [_task_kind(r[3], r[-2], r[-1]) for r in rows]
    runs = pd.DataFrame([r[:-2] for r in rows], columns=RUN_COLUMNS + ["run_dir"])
    runs["task_kind"] = kinds
    for col in ("dropout", "n_train", "n_train_images", "n_train_patients", "seed",
                "test_auroc", "val_auroc", "seconds"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    runs["n_key"] = [n_key(v) for v in runs["n_train"]]
    per_class["auroc"] = pd.to_numeric(per_class["auroc"], errors="coerce")
    return runs, per_class


def _source_description(spec: dict) -> str:
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    task = spec.get("task") if isinstance(spec.get("task"), dict) else {}
    what = data.get("name") or data.get("path") or data.get("source") or "?"
    kind = task.get("kind")
    return f"{what} ({kind})" if kind else str(what)


def read_spec(spec_path: Path) -> tuple[str | None, dict[str, str], dict[str, str], list[str]]:
    """(name, sites, source descriptions, notes) from study.yaml; missing file = empty.

    Rule for same- vs other-site: each source may say ``site: same`` or ``site: other``.
    A source without it is reported on its own (gains over scratch / ImageNet only).
    """
    if not spec_path.is_file():
        return None, {}, {}, [f"{spec_path.name} not found: sources are listed without their site"]
    try:
        spec = yaml.safe_load(spec_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{spec_path}: not valid YAML ({err})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{spec_path}: the top level must be a mapping")
    name = spec.get("name")
    sources = spec.get("sources") or {}
    if isinstance(sources, list):   # tolerate a list of {name: ..., ...}
        sources = {s.get("name"): s for s in sources if isinstance(s, dict) and s.get("name")}
    if not isinstance(sources, dict):
        raise ConfigError(f"{spec_path}: 'sources' must be a mapping of source name -> config")
    sites, described, unsited = {}, {}, []
    for src_name, src in sources.items():
        src = src if isinstance(src, dict) else {}
        described[str(src_name)] = _source_description(src)
        site = src.get("site")
        if site is None:
            unsited.append(str(src_name))
        elif site not in SITES:
            raise ConfigError(f"{spec_path}: 'sources.{src_name}.site' must be 'same' or 'other', got {site!r}")
        else:
            sites[str(src_name)] = site
    notes = []
    if unsited:
        notes.append("no 'site: same|other' given for source(s) " + ", ".join(unsited)
                     + ": each is compared with scratch and ImageNet on its own")
    return (str(name) if name else None), sites, described, notes


def read_study(study_dir: Path) -> StudyRecords:
    study_dir = Path(study_dir)
    runs, per_class = read_runs(study_dir / "results.sqlite")
    name, sites, sources, notes = read_spec(study_dir / "study.yaml")
    return StudyRecords(runs=runs, per_class=per_class, name=name, sites=sites, sources=sources, notes=notes,
                        study_dir=study_dir)

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
from typing import NamedTuple

import pandas as pd

from ..config import PER_IMAGE
from ..errors import DataError
from ..evaluate.equivalence import DEFAULT_MARGIN
from ..evaluate.per_run import SMALL_TEST_CLASS, BaselineComparison, fewest_patients
from ..evaluate.threshold import OPERATING_KEYS
from ..kinds import RunStatus, TaskKind
from ..radiomics.pixels import PIXEL_BASELINE
from ..run_folder import RunMetrics
from ..study.schema import ADDED_RUN_COLUMNS, PER_CLASS_COLUMNS, SPEC_FILE, STORE_FILE
from ..study.schema import RUN_COLUMNS as SCHEMA_RUN_COLUMNS
from ..study.spec import load_spec, overrides_from_text
from ..study.store import REBUILD_HINT, check_store, connect_read_only, read_current_plan, unreadable_store
from ..xrv_weights import target_images
from .redact import redact


# what the report reads of a run row (the store's own columns: ..study.schema)
RUN_COLUMNS = [c for c in SCHEMA_RUN_COLUMNS if c not in ("config_json", "metrics_json", "started_at", "finished_at",
                                                         "run_dir")]


@dataclass
class StudyRecords:
    runs: pd.DataFrame                 # one row per run, RUN_COLUMNS + run_dir + task_kind + target_images + n_key
    per_class: pd.DataFrame            # test-split per-label rows of all runs
    name: str | None = None            # study.yaml `name`, when given
    sites: dict[str, str] = field(default_factory=dict)      # source name -> 'same' | 'other'
    sources: dict[str, str] = field(default_factory=dict)    # source name -> short data description
    notes: list[str] = field(default_factory=list)           # what the reader should know about the inputs
    study_dir: Path | None = None      # where run_dir paths are relative to
    older_rows: int = 0                # rows of earlier spec versions left out (0 with all_versions)
    done_in_store: int = 0             # done rows of every version: what a truncated store would lose
    targets: list[float] = field(default_factory=list)       # study.yaml report.targets: AUROCs to find N for
    margin: float = DEFAULT_MARGIN     # study.yaml report.equivalence_margin: 'comparable' means within it (TOST)


def _connect(db: Path) -> sqlite3.Connection:
    """A read-only connection to a store that ``check_store`` accepts (not empty, SQLite, with a runs
    table): the report never creates, migrates or writes the store a study may be writing."""
    if not db.is_file():
        raise DataError(f"{db}: no results store here (run `medtransfer study run` first)")
    check_store(db)
    return connect_read_only(db)


def _check_columns(con: sqlite3.Connection, db: Path, table: str, needed: list[str]) -> None:
    have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
    if not have:
        raise DataError(f"{db}: table '{table}' is missing; {REBUILD_HINT}")
    missing = [c for c in needed if c not in have]
    if missing:
        raise DataError(f"{db}: table '{table}' lacks column '{missing[0]}'; {REBUILD_HINT}")


class ConfigFacts(NamedTuple):
    """What the report reads from a run's resolved config (parsed once per row)."""
    task_kind: TaskKind | None        # read, never guessed from a label
    images: str | None                # the image collection: what a pretraining may have seen
    radiomics: dict | None            # where the baseline's features came from
    budget: str | None                # the training budget, as the report states it
    val_size: str | None              # data.val_size (None: recorded before it existed = fixed)
    outside_root: bool = False        # data.allow_outside_root: its images could lie outside the data root
    pack: int = 1                     # train.pack: the fused-pack size it trained in (1: unpacked, or older)
    per_image: bool = False           # data.patient_column: none: split per image on purpose


NO_FACTS = ConfigFacts(None, None, None, None, None)


def _config_facts(config_json: str | None) -> ConfigFacts:
    try:
        config = json.loads(config_json)
    except (TypeError, ValueError):
        return NO_FACTS
    if not isinstance(config, dict):
        return NO_FACTS
    task, data, radiomics, train = (config.get(k) for k in ("task", "data", "radiomics", "train"))
    kind = task.get("kind") if isinstance(task, dict) else None
    images = target_images(data["source"], data.get("name")) if isinstance(data, dict) and "source" in data else None
    return ConfigFacts(kind, images, radiomics if isinstance(radiomics, dict) else None,
                       budget_text(train) if isinstance(train, dict) else None,
                       data.get("val_size", "fixed") if isinstance(data, dict) else None,
                       bool(data.get("allow_outside_root")) if isinstance(data, dict) else False,
                       _pack_of(train), isinstance(data, dict) and data.get("patient_column") == PER_IMAGE)


def budget_text(train: dict) -> str:
    """``train``'s budget in words: what a reader needs to judge whether small N was trained."""
    if train.get("strategy") == "probe":
        return "none for probes (train.strategy=probe): a logistic regression on the frozen backbone's features"
    if train.get("steps"):
        return f"{train['steps']} optimiser steps (train.steps), validated in {train.get('epochs')} rounds"
    min_steps = train.get("min_steps") or 0
    text = f"{train.get('epochs')} epochs of batch {train.get('batch_size')}"
    return (text + f", at least {min_steps} optimiser steps (train.min_steps: small N passes over its images more "
            "often), validated in as many rounds as epochs") if min_steps else text + " (no minimum step count)"


def design_notes(runs: pd.DataFrame) -> list[str]:
    """The target runs' training budget and validation set, from their recorded configs (sources apart)."""
    target = runs[runs["role"] != "source"]
    cnn = target[target["method"] == "cnn"]
    notes = [f"training budget: {b}" for b in sorted({b for b in cnn.get("budget", ()) if isinstance(b, str)})]
    sizes = sorted({v for v in target.get("val_size", ()) if isinstance(v, str)})
    for size in sizes:
        notes.append("validation: " + ("a subset of the validation split sized like the training subset "
                                       "(data.val_size=proportional, N/7 for 70/10/20), as a user with N "
                                       "labelled images would have; early stopping, thresholds and the "
                                       "radiomics C use it" if size == "proportional" else
                                       "the whole validation split at every N (data.val_size=fixed): small-N "
                                       "runs select on more labels than N"))
    if "selection" in target and (target["selection"] == "cv").any():
        cv = target[target["selection"] == "cv"]
        ns = ", ".join(sorted(set(cv["n_key"].astype(str)), key=lambda k: (k == "all", float(k) if k != "all" else 0)))
        notes.append(f"selection at N = {ns}: the validation share was too small to choose on (fewer than 50 images "
                     "or 10 of a class; train.selection=auto), so each run cross-validated over its N-pool (the N "
                     "training images and that share) with patient-grouped, stratified folds, the same for every "
                     "recipe and for the radiomics C; recipes are ranked by mean fold AUROC, compared fold-paired "
                     "(Nadeau-Bengio corrected t), and each final model trained on the whole pool for the folds' "
                     "best mean round, so N images there are the pool")
    return notes + small_test_notes(target)


def n_key(n_train) -> str:
    """The requested N as a group key: '50', '200', ... or 'all'."""
    return "all" if pd.isna(n_train) else str(int(n_train))


def read_runs(db: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, test per_class) from the store, with the task kind resolved per run."""
    con = _connect(db)
    try:
        have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
        _check_columns(con, db, "runs", [c for c in RUN_COLUMNS if c not in ADDED_RUN_COLUMNS]
                       + ["config_json", "run_dir"])
        _check_columns(con, db, "per_class", list(PER_CLASS_COLUMNS))
        selected = [c if c in have or c not in ADDED_RUN_COLUMNS else f"NULL AS {c}" for c in RUN_COLUMNS]
        rows = con.execute(f"SELECT {', '.join(selected)}, run_dir, metrics_json, config_json FROM runs "
                           "ORDER BY run_id").fetchall()
        per_class = pd.read_sql_query(
            "SELECT run_id, label, auroc, auprc FROM per_class WHERE split = 'test'", con)
    except sqlite3.DatabaseError as err:
        raise unreadable_store(db, err) from None
    finally:
        con.close()
    runs = pd.DataFrame([r[:-2] for r in rows], columns=RUN_COLUMNS + ["run_dir"])
    facts = [_config_facts(r[-1]) for r in rows]
    runs["task_kind"] = [f.task_kind for f in facts]
    runs["target_images"] = [f.images for f in facts]
    runs["radiomics"] = [f.radiomics for f in facts]
    runs["budget"] = [f.budget for f in facts]
    runs["val_size"] = [f.val_size for f in facts]
    runs["outside_root"] = [f.outside_root for f in facts]
    runs["pack"] = [f.pack for f in facts]
    runs["per_image"] = [f.per_image for f in facts]
    metrics = [_metrics_of(r[-2]) for r in rows]
    points = [_test_operating_point(m) for m in metrics]
    runs["test_patients"] = [_test_patients(m) for m in metrics]
    runs["steps"] = pd.to_numeric(pd.Series([_optimiser_steps(m) for m in metrics], dtype=object), errors="coerce")
    chosen = [_selection_of(m) for m in metrics]
    runs["selection"] = [c.get("kind", "holdout") for c in chosen]
    runs["cv_fold_auroc"] = [c.get("fold_auroc") for c in chosen]
    runs["cv_auroc_mean"] = [c.get("cv_auroc_mean") for c in chosen]
    runs["small_test"] = [_small_test(m) for m in metrics]
    runs["pixels_test_auroc"] = pd.to_numeric(pd.Series([_pixel_auroc(m) for m in metrics], dtype=object),
                                              errors="coerce")
    runs["cv_pool_images"] = pd.to_numeric(pd.Series([c.get("pool_images") for c in chosen], dtype=object),
                                           errors="coerce")
    for key in OPERATING_KEYS:
        runs[f"test_{key}"] = pd.to_numeric(pd.Series([p.get(key) for p in points], dtype=object), errors="coerce")
    for col in ("dropout", "n_train", "n_train_images", "n_train_patients", "seed",
                "test_auroc", "val_auroc", "seconds", "test_auroc_low", "test_auroc_high"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    cv = runs["selection"] == "cv"   # a cross-validated run is ranked by its mean fold AUROC (runs.cv)
    runs.loc[cv, "val_auroc"] = pd.to_numeric(runs.loc[cv, "cv_auroc_mean"], errors="coerce")
    runs["n_key"] = [n_key(v) for v in runs["n_train"]]
    per_class["auroc"] = pd.to_numeric(per_class["auroc"], errors="coerce")
    return runs, per_class


def _pack_of(train) -> int:
    """The fused-pack size of a recorded ``train`` section (1 when absent: unpacked, or recorded before it existed)."""
    pack = train.get("pack") if isinstance(train, dict) else None
    return int(pack) if isinstance(pack, int) and pack > 1 else 1


def apart_by_lineage(runs: pd.DataFrame) -> pd.DataFrame:
    """Give runs of one recipe label that started from different source runs, or were trained packed and
    unpacked, labels of their own, so no table pools them as seeds of one recipe.

    Within one spec version this never happens (a source's config and the pack size are in the grid run
    ids, and one plan has one source per name and one pack size); it can with ``--all-versions``, which
    mixes runs of earlier specs into the same recipe labels.
    """
    if runs.empty or "source_run_id" not in runs:
        return runs
    runs = runs.copy()
    lineage = runs["source_run_id"].fillna("").astype(str) + "|" + runs["pack"].astype(str)
    cnn = (runs["method"] == "cnn") & (runs["role"] != "source")
    keys = ["task", "arch", "recipe"]
    mixed = runs[cnn].assign(lineage=lineage[cnn]).groupby(keys, dropna=False)["lineage"].transform("nunique") > 1
    labels = {}
    for i in mixed[mixed].index:   # labels from the unrelabelled frame, then assigned together
        row = runs.loc[i]
        group = runs[cnn & (runs["task"] == row["task"]) & (runs["arch"] == row["arch"])
                     & (runs["recipe"] == row["recipe"])]
        label = str(row["recipe"])
        if group["source_run_id"].fillna("").nunique() > 1:
            label += f" / source run {str(row['source_run_id'])[:8]}" if isinstance(row["source_run_id"], str) \
                else " / source run unrecorded"
        if group["pack"].nunique() > 1:
            label += f" / packed x{row['pack']}" if row["pack"] > 1 else " / unpacked"
        labels[i] = label
    for i, label in labels.items():
        runs.at[i, "recipe"] = label
    return runs


def pack_notes(runs: pd.DataFrame) -> list[str]:
    """Which runs were trained in fused packs (study run --pack): their results differ from unpacked runs by
    rounding, so they carry run ids of their own."""
    if "pack" not in runs:
        return []
    packed = runs[(runs["pack"] > 1) & (runs["status"] == RunStatus.DONE)]
    if packed.empty:
        return []
    sizes = ", ".join(str(int(k)) for k in sorted(packed["pack"].unique()))
    done = int(((runs["method"] == "cnn") & (runs["role"] != "source") & (runs["status"] == RunStatus.DONE)).sum())
    return [f"{len(packed)} of {done} CNN runs ran in a study packing runs by {sizes} (study run --pack): runs "
            "whose steps line up trained as one fused model (each run's train.log and metrics.json "
            "`fused_with` say whether it did), which changes results by rounding, so they have run ids of "
            "their own and are never pooled with unpacked runs"]


def _metrics_of(metrics_json: str | None) -> RunMetrics | None:
    """A row's metrics, parsed once for every fact the report reads from them (None if absent or unreadable)."""
    if not metrics_json:
        return None
    try:
        return RunMetrics.from_json(json.loads(metrics_json))
    except (ValueError, AttributeError, TypeError):
        return None


def _selection_of(metrics: RunMetrics | None) -> dict:
    """A run's ``selected_by`` record (runs.cv): {} for a run that predates it (it selected on validation)."""
    got = metrics.details.get("selected_by") if metrics is not None else None
    return got if isinstance(got, dict) else {}


def _test_patients(metrics: RunMetrics | None) -> dict | None:
    """A run's test patients per class (``MetricBlock.patients_per_class``; None for a run that predates it)."""
    test = metrics.test if metrics is not None else None
    counts = test.patients_per_class if test is not None else None
    return counts if isinstance(counts, dict) and counts else None


def small_test_notes(runs: pd.DataFrame) -> list[str]:
    """One line per task whose shared test split holds fewer than ``SMALL_TEST_CLASS`` patients of a class: every
    grid run is tested on that one split (``study.grid.shared_test_split``), so its AUROCs are rough estimates,
    and ``medtransfer train`` on the chosen recipe estimates it by outer cross-validation instead."""
    if "test_patients" not in runs:
        return []
    done = runs[(runs["role"] != "source") & (runs["status"] == RunStatus.DONE)]
    fewest: dict[str, tuple[int, str]] = {}
    for task, counts in zip(done["task"], done["test_patients"]):
        least = fewest_patients(counts) if isinstance(counts, dict) else None
        if least is not None:
            name, n = least
            fewest[str(task)] = min(fewest.get(str(task), (n, name)), (n, name))
    notes = []
    for task, (n, name) in sorted(fewest.items()):
        if n < SMALL_TEST_CLASS:
            of_task = f" of {redact(task)}" if len(fewest) > 1 else ""
            notes.append(f"test split{of_task}: only {n} patients of '{redact(name)}' (fewer than {SMALL_TEST_CLASS}), "
                         "and every run here is tested on that one split (a study keeps one shared split: outer "
                         "cross-validation of every grid run would cost K times the grid), so each test AUROC is a "
                         "rough estimate; `medtransfer train` on the chosen recipe estimates it by patient-grouped "
                         "outer cross-validation (train.test_estimate)")
    return notes


def _small_test(metrics: RunMetrics | None) -> str | None:
    """The run's warning that its test split holds under 30 patients of a class (runs.scoring), or None."""
    verdict = metrics.details.get("verdict") if metrics is not None else None
    said = verdict.get("small_test_split") if isinstance(verdict, dict) else None
    return said if isinstance(said, str) else None


def _pixel_auroc(metrics: RunMetrics | None) -> float | None:
    """The test AUROC of the pixel baseline fitted beside the run (runs.baselines); None for a run without one."""
    for payload in (metrics.details.get("baselines") or []) if metrics is not None else []:
        got = BaselineComparison.from_json(payload)
        if got is not None and got.baseline == PIXEL_BASELINE:
            return got.auroc
    return None


def _test_operating_point(metrics: RunMetrics | None) -> dict:
    """A binary run's test accuracy / sensitivity / specificity at its validation threshold ({} if none)."""
    test = metrics.test if metrics is not None else None
    point = test.operating_point if test is not None else None
    return point if isinstance(point, dict) else {}


def _optimiser_steps(metrics: RunMetrics | None) -> float | None:
    """A CNN run's optimiser steps (metrics ``budget.total_steps``): the report's cost order after the strategy
    (None where not recorded, e.g. radiomics or an older run)."""
    budget = metrics.details.get("budget") if metrics is not None else None
    steps = budget.get("total_steps") if isinstance(budget, dict) else None
    return steps if isinstance(steps, (int, float)) else None


def radiomics_notes(runs: pd.DataFrame) -> list[str]:
    """Where the baseline's features came from, read from its runs' recorded configs (a reader judges a
    radiomics model by its ROI). A config recorded before ``normalize`` existed was not normalised."""
    rad = runs[runs["method"] == "radiomics"]
    seen = sorted({(r.get("mask_column"), bool(r.get("normalize", False))) for r in rad["radiomics"] if isinstance(r, dict)},
                  key=str)
    notes = []
    for mask_column, normalized in seen:
        roi = (f"inside the masks of column {mask_column!r}" if mask_column
               else "on the whole image (no mask: shape features are constant and dropped)")
        scaling = "intensities z-scored per image first (pyradiomics normalize)" if normalized else \
            "raw intensities (not normalised)"
        notes.append(f"radiomics baseline: pyradiomics features {roi}, {scaling}")
    return notes


def _source_description(source: dict) -> str:
    data = source.get("data") if isinstance(source.get("data"), dict) else {}
    task = source.get("task") if isinstance(source.get("task"), dict) else {}
    what = data.get("name") or data.get("path") or data.get("source") or "?"
    if data.get("pool"):
        what += f", pool {data['pool']!r} of its patient partition"
    kind = task.get("kind")
    described = f"{what} ({kind})" if kind else str(what)
    if source.get("allow_overlap"):
        described += " — may share images / patients with the target (allow_overlap)"
    return described


def read_spec(spec_path: Path) -> tuple[str | None, dict[str, str], dict[str, str], list[str], list[float], float]:
    """(name, sites, source descriptions, notes, report targets, equivalence margin) from the study's copy of its spec, read as ``study run`` reads it.

    Rule for same- vs other-site: each source may say ``site: same`` or ``site: other``.
    A source without it is reported on its own (gains over scratch / ImageNet only).
    """
    if not spec_path.is_file():
        return None, {}, {}, [f"{spec_path.name} not found: sources are listed without their site"], [], DEFAULT_MARGIN
    spec = load_spec(spec_path, overrides_from_text(spec_path.read_text()))
    sites = {name: src["site"] for name, src in spec.sources.items() if src.get("site") is not None}
    described = {name: _source_description(src) for name, src in spec.sources.items()}
    unsited = [name for name in spec.sources if name not in sites]
    notes = []
    if unsited:
        notes.append("no 'site: same|other' given for source(s) " + ", ".join(map(redact, unsited))
                     + ": each is compared with scratch and ImageNet on its own")
    overlapping = [name for name, src in spec.sources.items() if src.get("allow_overlap")]
    if overlapping:
        notes.append("source(s) " + ", ".join(map(redact, overlapping)) + " were allowed to overlap the target (allow_overlap: "
                     "true), so they may have seen target images or patients: their gains are optimistic")
    return spec.name, sites, described, notes, list(spec.report.targets), spec.report.equivalence_margin


def read_study(study_dir: Path, all_versions: bool = False) -> StudyRecords:
    """The study's runs: by default only those of the plan the last ``study run`` executed.

    An edited spec (an N removed, a base key changed) leaves the old rows in the store; mixing them in
    would count seeds twice and average unlike configs, so they are left out and counted.
    """
    study_dir = Path(study_dir)
    db = study_dir / STORE_FILE
    current = read_current_plan(db) if db.is_file() else None
    runs, per_class = read_runs(db)
    done_in_store = int((runs["status"] == RunStatus.DONE).sum())
    older = 0
    if not all_versions and current is not None:
        kept = runs["run_id"].isin(current[1])
        older = int((~kept).sum())
        runs, per_class = runs[kept].reset_index(drop=True), per_class[per_class["run_id"].isin(current[1])]
    runs = apart_by_lineage(runs)
    name, sites, sources, notes, targets, margin = read_spec(study_dir / SPEC_FILE)
    if runs["outside_root"].any():
        notes = notes + [f"{int(runs['outside_root'].sum())} of {len(runs)} runs set data.allow_outside_root: true, "
                         "so their images could lie outside the data root (each run's train.log counts them)"]
    if runs["per_image"].any():
        notes = notes + [f"{int(runs['per_image'].sum())} of {len(runs)} runs set data.patient_column: none, splitting "
                         "per image on purpose: their splits, N and test intervals count each image as its own patient"]
    notes = notes + pack_notes(runs)
    if older:
        notes = notes + [f"{older} run(s) in the store belong to an earlier version of the spec and are left out "
                         "(report --all-versions includes them)"]
    elif all_versions and current is not None:
        notes = notes + ["all spec versions included (--all-versions)"]
    return StudyRecords(runs=runs, per_class=per_class, name=name, sites=sites, sources=sources, notes=notes, targets=targets, margin=margin,
                        study_dir=study_dir, older_rows=older, done_in_store=done_in_store)

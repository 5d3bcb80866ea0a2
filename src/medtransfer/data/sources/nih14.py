"""NIH ChestX-ray14 in its release layout (Wang et al., CVPR 2017).

Expected under ``data.path``: ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``)
and the PNGs in ``images/`` or in the release's ``images_001/images/ ... images_012/images/``;
for ``data.split: official`` also ``train_val_list.txt`` and ``test_list.txt``.
Every CSV row must have its PNG: a partial download would otherwise silently change the
label distribution.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ...config import DataConfig, TaskConfig, demo_note, resolve_path
from ...errors import ConfigError, DataError
from ...kinds import TaskKind
from ..images import one_line
from ..records import LabelledImages

NIH14_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
OFFICIAL_LISTS = ("train_val_list.txt", "test_list.txt")
COLUMNS = ("Image Index", "Finding Labels", "Patient ID")


def find_csv(folder: Path) -> Path:
    for name in CSV_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"NIH ChestX-ray14 label file not found: expected {' or '.join(CSV_NAMES)} in {folder}")


def index_pngs(folder: Path) -> dict[str, Path]:
    """Every PNG under ``images/`` and ``images_*/images/``, by file name (scanned once)."""
    dirs = [folder / "images"] + sorted(d / "images" for d in folder.glob("images_*") if d.is_dir())
    found: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            with os.scandir(d) as entries:
                for e in entries:
                    if e.name.lower().endswith(".png"):
                        found.setdefault(e.name, Path(e.path))
    return found


def read_findings(csv_path: Path) -> pd.DataFrame:
    """The CSV's image, patient and finding columns, with the column names checked."""
    try:
        df = pd.read_csv(csv_path, usecols=lambda c: c in COLUMNS, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read {csv_path}: {one_line(err)}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; the NIH release has {list(COLUMNS)}")
    return df


def finding_matrix(finding_labels: pd.Series, csv_path: Path) -> np.ndarray:
    """Pipe-separated 'Finding Labels' -> (N, 14) 0/1 in ``NIH14_FINDINGS`` order."""
    dummies = finding_labels.fillna(NO_FINDING).str.get_dummies(sep="|")
    unknown = sorted(set(dummies.columns) - set(NIH14_FINDINGS) - {NO_FINDING})
    if unknown:
        raise DataError(f"{csv_path}: unknown finding(s) {unknown} in 'Finding Labels'; expected {list(NIH14_FINDINGS)} or '{NO_FINDING}'")
    return dummies.reindex(columns=list(NIH14_FINDINGS), fill_value=0).to_numpy(np.float32)


def check_findings(names, key: str) -> None:
    unknown = [n for n in names if n not in NIH14_FINDINGS]
    if unknown:
        raise ConfigError(f"{key}: unknown NIH ChestX-ray14 finding(s) {unknown}; valid: {', '.join(NIH14_FINDINGS)}")


def select_task(findings: np.ndarray, task: TaskConfig) -> tuple[np.ndarray, list[str]]:
    """The 14-column finding matrix -> the labels and names the task asks for."""
    if task.kind == TaskKind.MULTILABEL:
        names = list(task.labels) if task.labels else list(NIH14_FINDINGS)
        check_findings(names, "task.labels")
        cols = [NIH14_FINDINGS.index(n) for n in names]
        return findings[:, cols], names
    if task.kind == TaskKind.BINARY:
        if not task.positive:
            raise ConfigError(f"task.positive is required for a binary task on nih14 (one finding vs the rest); valid: {', '.join(NIH14_FINDINGS)}")
        check_findings([task.positive], "task.positive")
        col = NIH14_FINDINGS.index(task.positive)
        return findings[:, [col]], [task.positive]
    raise ConfigError("task.kind=multiclass does not fit nih14 (images can have several findings); use multilabel, or binary with task.positive")


def official_split(folder: Path, image_ids: list[str]) -> np.ndarray:
    """'train' for ``train_val_list.txt``, 'test' for ``test_list.txt`` (val is carved later)."""
    missing = [n for n in OFFICIAL_LISTS if not (folder / n).is_file()]
    if missing:
        raise DataError(f"data.split=official needs {' and '.join(missing)} in {folder} (from the NIH release)")
    members = {}
    for name, split in zip(OFFICIAL_LISTS, ("train", "test")):
        for line in (folder / name).read_text().split():
            members[line.strip()] = split
    split = np.array([members.get(i, "") for i in image_ids], dtype=object)
    unlisted = [i for i, s in zip(image_ids, split) if not s]
    if unlisted:
        raise DataError(f"{len(unlisted)} image(s) are in neither {OFFICIAL_LISTS[0]} nor {OFFICIAL_LISTS[1]} in {folder}, e.g. {unlisted[0]}")
    return split.astype(str)


def load_nih14(data: DataConfig, task: TaskConfig, data_root: Path) -> LabelledImages:
    """Read the NIH release at ``data.path``: labels from the CSV, one PNG per row."""
    folder = resolve_path(data.path, data_root)
    if not folder.is_dir():
        raise DataError(f"nih14 folder not found: {folder} (data.path)")
    csv_path = find_csv(folder)
    df = read_findings(csv_path)
    image_ids = df["Image Index"].str.strip().tolist()
    pngs = index_pngs(folder)
    missing = [i for i in image_ids if i not in pngs]
    if missing:
        raise DataError(f"{len(missing)} of {len(image_ids)} images listed in {csv_path.name} are missing under {folder}/images "
                        f"or images_*/images, e.g. {missing[0]}")
    labels, names = select_task(finding_matrix(df["Finding Labels"], csv_path), task)
    given = official_split(folder, image_ids) if data.split in ("official", "given") else None
    return LabelledImages(
        image_ids=image_ids,
        paths=[pngs[i] for i in image_ids],
        pixels=None,
        patient_ids=df["Patient ID"].str.strip().to_numpy(dtype=str),
        has_patient_ids=True,
        labels=labels.astype(np.float32),
        label_names=names,
        given_split=given,
        dataset_key=f"nih14:{folder.resolve()}",
        notes=demo_note(folder, data_root),
    )

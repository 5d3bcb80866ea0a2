"""Any labelled image collection described by one CSV file.

One row per image: an image-path column (relative to the CSV's folder or to ``data.image_root``, or absolute;
either way inside the data root unless ``data.allow_outside_root``), label column(s), a patient-ID column (or
``data.patient_column: none``: see ``csv_patients``) and optionally a train/val/test split column.
Images may be PNG, JPEG, 16-bit PNG or DICOM (see ``medtransfer.data.images``).
"""
from __future__ import annotations

import os

from pathlib import Path

import numpy as np
import pandas as pd

from ...config import DEMO_DATA, PER_IMAGE, DataConfig, TaskConfig, demo_note, resolve_path
from ...errors import ConfigError, DataError
from ...kinds import TaskKind
from ..images import one_line
from ..records import SPLIT_NAMES, LabelledImages
from .csv_patients import MISSING_TOKENS, refuse_hidden_patient_ids

TRUE_FALSE = {"true": 1, "false": 0}
MAX_ROWS_NAMED = 10
MAX_FILES_TRIED = 20         # missing images tried in each candidate data.image_root
MAX_FOLDERS_SEARCHED = 500   # folders under the CSV's looked at for them


def find_csv_file(data: DataConfig, data_root: Path) -> Path:
    """``data.path`` is the CSV, or a folder holding ``data.csv_file`` or exactly one ``*.csv``."""
    path = resolve_path(data.path, data_root)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"CSV file or folder not found: {path} (data.path)")
    if data.csv_file:
        csv = path / data.csv_file
        if not csv.is_file():
            raise DataError(f"CSV file not found: {csv} (data.csv_file in data.path)")
        return csv
    found = sorted(path.glob("*.csv"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{path} must hold exactly one *.csv (found: {names}); set data.csv_file or point data.path at the file")
    return found[0]


def require_columns(df: pd.DataFrame, columns: list[str], csv: Path, keys: list[str]) -> None:
    for col, key in zip(columns, keys):
        if col not in df.columns:
            raise DataError(f"{csv}: no column {col!r} ({key}); available columns: {', '.join(map(str, df.columns))}")


def binary_labels(values: pd.Series, column: str, positive: str | None, csv: Path) -> tuple[np.ndarray, list[str]]:
    """0/1 (or true/false) -> as is; two other values -> the one named by ``task.positive`` is 1.

    There is no default for two named values: guessing (say, the alphabetically last) silently
    flips every metric when the guess is wrong, so the error lists the values to choose from.
    """
    text = values.astype(str).str.strip()
    distinct = sorted(set(text))
    if len(distinct) < 2:
        raise DataError(f"{csv}: column {column!r} holds only the value {distinct} so there is nothing to classify")
    as_01 = {v: TRUE_FALSE.get(v.lower(), _number(v)) for v in distinct}
    if set(as_01.values()) <= {0, 1} and positive is None:
        return text.map(as_01).to_numpy(np.float32)[:, None], [column]
    if len(distinct) != 2:
        raise DataError(f"{csv}: column {column!r} must hold two values for a binary task, found {len(distinct)}: {distinct[:10]}")
    if positive is not None and positive not in distinct:
        raise ConfigError(f"task.positive={positive!r} is not a value of column {column!r} in {csv}; values: {distinct}")
    if positive is None:
        counts = text.value_counts()
        listed = ", ".join(f"{v!r} ({counts[v]} rows)" for v in distinct)
        raise ConfigError(f"{csv}: column {column!r} holds {listed}; say which is the positive class with "
                          f"task.positive (e.g. --set task.positive={distinct[1]})")
    pos = positive
    return (text == pos).to_numpy(np.float32)[:, None], [f"{column}={pos}"]


def multiclass_labels(values: pd.Series, column: str) -> tuple[np.ndarray, list[str]]:
    """Class index into the sorted distinct values (numbers sorted numerically)."""
    text = values.astype(str).str.strip()
    distinct = sorted(set(text), key=lambda v: (_number(v) is None, _number(v) or 0, v))
    index = {v: i for i, v in enumerate(distinct)}
    return text.map(index).to_numpy(np.int64), distinct


def multilabel_labels(df: pd.DataFrame, columns: list[str], csv: Path) -> tuple[np.ndarray, list[str]]:
    out = np.zeros((len(df), len(columns)), dtype=np.float32)
    for k, col in enumerate(columns):
        text = df[col].astype(str).str.strip()
        as_01 = text.map(lambda v: TRUE_FALSE.get(v.lower(), _number(v)))
        bad = sorted(set(text[~as_01.isin([0, 1])]))
        if bad:
            raise DataError(f"{csv}: multilabel column {col!r} must hold 0/1, found {bad[:10]}")
        out[:, k] = as_01.to_numpy(np.float32)
    return out, list(columns)


def _number(v: str):
    try:
        f = float(v)
    except ValueError:
        return None
    return int(f) if f.is_integer() else f


def load_csv(data: DataConfig, task: TaskConfig, data_root: Path) -> LabelledImages:
    """Read the CSV, check every named column and image file, and build the labels."""
    csv = find_csv_file(data, data_root)
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read CSV {csv}: {one_line(err)}") from None
    label_cols = _label_columns(data, task)
    wanted = [(data.image_column, "data.image_column")] + [(c, "task.label_column") for c in label_cols]
    wanted += [(c, k) for c, k in ((data.patient_id_column, "data.patient_column"), (data.split_column, "data.split_column")) if c]
    require_columns(df, [c for c, _ in wanted], csv, [k for _, k in wanted])

    notes: list[str] = demo_note(csv, data_root)
    df = _without_missing_labels(df, label_cols, csv, data.drop_missing_labels, notes)
    for col, key in wanted:
        empty = df[col].astype(str).str.strip() == ""
        if empty.any():
            raise DataError(f"{csv}: column {col!r} ({key}) is empty in {int(empty.sum())} row(s), first at data row {int(np.argmax(empty)) + 1}")
    image_ids = df[data.image_column].astype(str).str.strip().tolist()
    labels, names = _labels(df, task, label_cols, csv)
    patients = _patient_ids(df, data, [c for c, _ in wanted], image_ids, csv, notes)

    folder = image_folder(data, csv)
    paths = [Path(p) if Path(p).is_absolute() else folder / p for p in image_ids]
    check_inside_root(image_ids, paths, csv, data, data_root, notes)
    check_images_exist(image_ids, paths, csv, data, folder)
    return LabelledImages(
        image_ids=image_ids,
        paths=paths,
        pixels=None,
        patient_ids=patients,
        has_patient_ids=data.patient_id_column is not None,
        labels=labels,
        label_names=names,
        given_split=_given_split(df, data, csv),
        # the image root joins the key only where it is not the CSV's folder, so existing caches keep their key
        dataset_key=f"csv:{csv.resolve()}" + ("" if folder.resolve() == csv.parent.resolve() else f" images:{folder.resolve()}"),
        notes=notes,
        columns={str(c): df[c].astype(str).str.strip().tolist() for c in df.columns},
        files_root=folder,
        csv_file=csv,
    )


def _patient_ids(df: pd.DataFrame, data: DataConfig, known: list[str], image_ids: list[str], csv: Path,
                 notes: list[str]) -> np.ndarray:
    """``data.patient_column``'s values; without one, each image's own id, after checking that no column looks
    like the patient ids the config forgot (``csv_patients``); ``none`` skips that check and says so."""
    if data.patient_id_column:
        return df[data.patient_id_column].astype(str).str.strip().to_numpy(dtype=str)
    if data.patient_column == PER_IMAGE:
        notes.append(f"data.patient_column: {PER_IMAGE}: each image is its own patient (explicit), so the splits "
                     "are per image")
    else:
        refuse_hidden_patient_ids(df, known, image_ids, csv)
    return np.asarray(image_ids, dtype=str)


def image_folder(data: DataConfig, csv: Path) -> Path:
    """Where relative image paths start: ``data.image_root`` (relative to the CSV's folder, or absolute), else
    the CSV's folder (a CSV beside ``images/`` listing bare names sets ``data.image_root: images``)."""
    if not data.image_root:
        return csv.parent
    folder = Path(data.image_root).expanduser()
    folder = folder if folder.is_absolute() else csv.parent / folder
    if not folder.is_dir():
        raise DataError(f"{csv}: data.image_root {data.image_root!r} is not a folder (looked for {folder})")
    return folder


def check_images_exist(given: list[str], paths: list[Path], csv: Path, data: DataConfig, folder: Path) -> None:
    """Every image file must exist; the error names the folder relative paths were looked up in and, where the
    missing files are all found in one folder under the CSV's, the ``data.image_root`` that would find them."""
    missing = [(g, p) for g, p in zip(given, paths) if not p.is_file()]
    if not missing:
        return
    start = "data.image_root" if data.image_root else "the CSV's folder"
    text = (f"{csv}: {len(missing)} of {len(paths)} image files in column {data.image_column!r} (data.image_column) "
            f"are missing, first {missing[0][0]!r} (looked for {missing[0][1]})")
    relative = [g for g, _ in missing if not Path(g).is_absolute()]
    if not relative:
        raise DataError(text)
    text += f"; relative paths start at {start} {folder}"
    found = _folder_holding(relative, csv.parent, exclude=folder)
    if found is not None:
        rel = found.relative_to(csv.parent).as_posix()
        text += f"; they are in {found}: set data.image_root: {rel}"
    raise DataError(text)


def _folder_holding(relative: list[str], base: Path, exclude: Path, depth: int = 2) -> Path | None:
    """The shallowest folder at or up to ``depth`` levels under ``base`` (hidden ones apart) that holds the
    first files of ``relative``; None when none does. A bounded look: at most ``MAX_FOLDERS_SEARCHED`` folders."""
    sample = relative[:MAX_FILES_TRIED]
    level, seen = [base], 0
    for _ in range(depth + 1):
        for folder in level:
            if folder.resolve() != exclude.resolve() and all((folder / g).is_file() for g in sample):
                return folder
        level = [sub for folder in level for sub in _subfolders(folder)]
        seen += len(level)
        if seen > MAX_FOLDERS_SEARCHED:
            return None
    return None


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _label_columns(data: DataConfig, task: TaskConfig) -> list[str]:
    """``task.label_column`` as a list, checked against the task kind and the split settings of a CSV source."""
    label_cols = [task.label_column] if isinstance(task.label_column, str) else list(task.label_column or [])
    if not label_cols:
        raise ConfigError("task.label_column is required for data.source=csv")
    if task.kind != TaskKind.MULTILABEL and len(label_cols) != 1:
        raise ConfigError(f"task.label_column: a {task.kind} task takes one column, got {label_cols}")
    if data.split == "given" and not data.split_column:
        raise ConfigError("data.split=given needs data.split_column (the column with train/val/test) for data.source=csv")
    if data.split == "official":
        raise ConfigError("data.split=official is for nih14; a csv source uses data.split=given with data.split_column")
    return label_cols


def _labels(df: pd.DataFrame, task: TaskConfig, label_cols: list[str], csv: Path) -> tuple[np.ndarray, list[str]]:
    """(labels, label names) of the task's kind from the label column(s)."""
    if task.kind == TaskKind.MULTILABEL:
        return multilabel_labels(df, label_cols, csv)
    if task.kind == TaskKind.BINARY:
        return binary_labels(df[label_cols[0]], label_cols[0], task.positive, csv)
    return multiclass_labels(df[label_cols[0]], label_cols[0])


def _given_split(df: pd.DataFrame, data: DataConfig, csv: Path) -> np.ndarray | None:
    """The train/val/test of ``data.split_column`` per row (lower-cased), or None without that column."""
    if not data.split_column:
        return None
    given = df[data.split_column].astype(str).str.strip().str.lower().to_numpy(dtype=str)
    bad = sorted(set(given.tolist()) - set(SPLIT_NAMES))
    if bad:
        raise DataError(f"{csv}: column {data.split_column!r} (data.split_column) must hold train/val/test, found {bad[:10]}")
    return given


def _missing(values: pd.Series) -> pd.Series:
    return values.astype(str).str.strip().str.lower().isin(MISSING_TOKENS)


def _without_missing_labels(df: pd.DataFrame, label_cols: list[str], csv: Path, drop: bool,
                            notes: list[str]) -> pd.DataFrame:
    """Stop on a missing label (naming the rows), or drop those rows when data.drop_missing_labels says so.

    The CSV is read as text (so IDs keep their leading zeros), which is why 'nan' or 'NA' would
    otherwise arrive as an ordinary value and could even become the positive class.
    """
    missing = pd.Series(False, index=df.index)
    for col in label_cols:
        col_missing = _missing(df[col])
        if col_missing.any() and not drop:
            rows = [int(i) + 2 for i in np.flatnonzero(col_missing.to_numpy())]   # +2: 1-based, after the header line
            shown = ", ".join(map(str, rows[:MAX_ROWS_NAMED])) + (f" and {len(rows) - MAX_ROWS_NAMED} more"
                                                                   if len(rows) > MAX_ROWS_NAMED else "")
            raise DataError(f"{csv}: column {col!r} (task.label_column) has no label in {len(rows)} row(s) "
                            f"(empty, nan, NA or None) at line(s) {shown}; fix them or set data.drop_missing_labels: true")
        missing |= col_missing
    if missing.any():
        notes.append(f"{csv.name}: dropped {int(missing.sum())} of {len(df)} rows with a missing label "
                     f"(data.drop_missing_labels)")
        df = df[~missing].reset_index(drop=True)
    return df


def images_root(csv: Path, data_root: Path) -> Path:
    """The folder a CSV's images must lie in: the data root, or the folder holding the dataset when the CSV is
    not under it.

    A CSV the demo bundle supplied (the data root has no copy) keeps to its own dataset's folder
    there, not to the whole bundle nor to a data root that does not hold it; a CSV given by an
    absolute path elsewhere keeps to its own folder.
    """
    csv_dir = csv.parent.resolve()
    demo = DEMO_DATA.resolve()
    if csv_dir.is_relative_to(demo):
        inside = csv_dir.relative_to(demo).parts
        return demo / inside[0] if inside else demo
    root = Path(data_root).resolve()
    return root if csv_dir.is_relative_to(root) else csv_dir


def check_inside_root(given: list[str], paths: list[Path], csv: Path, data: DataConfig, data_root: Path,
                      notes: list[str], column: str | None = None) -> None:
    """Every file path a CSV names (images; ``column`` = another column's description, e.g. the radiomics masks),
    relative or absolute, must resolve inside :func:`images_root`, unless ``data.allow_outside_root``, which
    the notes (and so train.log) then state.

    A shared CSV could otherwise read any file the user can read (``../``, a symlink, or an
    absolute path such as ``/etc/passwd``), and an absolute path to another copy of an image
    would be used silently.
    """
    root = images_root(csv, data_root)
    outside = [g for g, path in zip(given, paths) if not path.resolve().is_relative_to(root)]
    if not outside:
        return
    what = "images" if column is None else "masks"
    counted = f"{len(outside)} of {len(paths)} {what}"
    if not data.allow_outside_root:
        named = column or f"{data.image_column!r} (data.image_column)"
        first = paths[given.index(outside[0])]
        if Path(os.path.abspath(first)).is_relative_to(root):   # inside as written: a symbolic link leads out
            raise DataError(f"{csv}: column {named} names {counted} that lie under the data root {root} but through "
                            f"a symbolic link lead outside it (first {outside[0]!r} -> {first.resolve()}); copy the "
                            "files in, point the data root at the link's target, or set data.allow_outside_root: true")
        raise DataError(f"{csv}: column {named} names {counted} outside the data "
                        f"root {root}, first {outside[0]!r}; move them under it or set data.allow_outside_root: true")
    notes.append(f"{csv.name}: {counted} lie outside the data root {root}, allowed by data.allow_outside_root: true")

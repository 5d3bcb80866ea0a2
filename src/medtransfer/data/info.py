"""What a prepared dataset holds, per split: images, patients, and positives and negatives per label.

Used by ``medtransfer data info`` so a user sees, before training, whether a rare label
has any positives in the small training subset or the test split, and whether a common one has any
negatives (an AUROC needs both).
"""
from __future__ import annotations

import io

import numpy as np
from rich.console import Console
from rich.table import Table

from .records import SPLIT_NAMES, PreparedData


def split_columns(prepared: PreparedData) -> dict[str, np.ndarray]:
    """Column title -> image indices, the N-subset first (when it is not all of train)."""
    cols = {}
    if len(prepared.train_subset) != len(prepared.splits["train"]):
        cols["train subset"] = prepared.train_subset
    for name in SPLIT_NAMES:
        cols[name] = prepared.splits[name]
    return cols


def positive_counts(prepared: PreparedData, idx: np.ndarray) -> list[int]:
    """Positives per label (multilabel/binary) or images per class (multiclass)."""
    labels = prepared.labels[idx]
    if labels.ndim == 1:
        return np.bincount(labels.astype(np.int64), minlength=len(prepared.label_names)).tolist()
    return (labels > 0.5).sum(axis=0).astype(int).tolist()


def negative_counts(prepared: PreparedData, idx: np.ndarray) -> list[int] | None:
    """Negatives per label (multilabel/binary); None for multiclass, whose class counts already say it all."""
    labels = prepared.labels[idx]
    if labels.ndim == 1:
        return None
    return (labels <= 0.5).sum(axis=0).astype(int).tolist()


class DataTable(Table):
    """A rich Table that also prints as plain text with the builtin ``print`` / ``str``."""

    def __str__(self) -> str:
        console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
        console.print(self)
        return console.file.getvalue().rstrip("\n")


def describe(prepared: PreparedData, title: str | None = None) -> DataTable:
    """A rich table: rows images / patients / one per label, one column per split."""
    cols = split_columns(prepared)
    table = DataTable(title=title, show_edge=False)
    table.add_column("")
    for name in cols:
        table.add_column(name, justify="right")
    table.add_row("images", *[str(len(idx)) for idx in cols.values()])
    patients_label = "patients" if prepared.has_patient_ids else "patients (= images: no IDs)"
    table.add_row(patients_label, *[str(len(np.unique(prepared.patient_ids[idx]))) for idx in cols.values()])
    counts = [positive_counts(prepared, idx) for idx in cols.values()]
    negatives = [negative_counts(prepared, idx) for idx in cols.values()]
    kind_word = "class" if prepared.labels.ndim == 1 else "positive"
    for k, name in enumerate(prepared.label_names):
        table.add_row(f"{kind_word}: {name}", *[str(c[k]) for c in counts])
        if prepared.labels.ndim > 1:
            table.add_row(f"negative: not {name}", *[str(c[k]) for c in negatives])
    return table


def describe_dict(prepared: PreparedData) -> dict:
    """The same counts as plain values, for scripts (``data info --json``): one entry per split."""
    per_split = {}
    for name, idx in split_columns(prepared).items():
        per_split[name] = {
            "images": int(len(idx)),
            "patients": int(len(np.unique(prepared.patient_ids[idx]))),
            ("classes" if prepared.labels.ndim == 1 else "positives"):
                dict(zip(prepared.label_names, positive_counts(prepared, idx))),
        }
        negatives = negative_counts(prepared, idx)
        if negatives is not None:
            per_split[name]["negatives"] = dict(zip(prepared.label_names, negatives))
    return {"labels": list(prepared.label_names), "has_patient_ids": bool(prepared.has_patient_ids),
            "splits": per_split}


def describe_text(prepared: PreparedData, title: str | None = None) -> str:
    """``describe`` rendered as plain text (logs, tests, non-terminal output)."""
    return str(describe(prepared, title))

"""The two records the data layer hands on: a source's labelled images, and the prepared arrays.

They live in their own module so that the sources and ``prepare_data`` can both import
them without a circular import through ``medtransfer.data``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class LabelledImages:
    """What a source yields before decoding: where the pixels are and what they show."""

    image_ids: list[str]
    paths: list[Path] | None
    pixels: np.ndarray | None
    patient_ids: np.ndarray
    has_patient_ids: bool
    labels: np.ndarray
    label_names: list[str]
    given_split: np.ndarray | None
    dataset_key: str
    notes: list[str] = field(default_factory=list)   # what the loader did that a run log should say
    # csv source: every column of the kept rows as text (aligned with image_ids), the folder relative
    # file paths in them start from (data.image_root) and the CSV itself; other consumers (radiomics masks)
    # read these, never the file again
    columns: dict[str, list[str]] = field(default_factory=dict)
    files_root: Path | None = None
    csv_file: Path | None = None

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class PreparedData:
    """Decoded images at the run's size, labels, patient-disjoint splits and the N-subset."""

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    image_ids: list[str]
    patient_ids: np.ndarray
    has_patient_ids: bool
    splits: dict[str, np.ndarray]
    train_subset: np.ndarray
    notes: list[str] = field(default_factory=list)

    def clusters(self, rows: np.ndarray) -> np.ndarray:
        """What a bootstrap or a grouped fold treats as one unit for ``rows``: each image's patient, or the image
        itself where the data has no patient ids."""
        return self.patient_ids[rows] if self.has_patient_ids else np.asarray(self.image_ids)[rows]

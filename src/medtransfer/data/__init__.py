"""The data layer: a source's files -> cached uint8 images, labels, patient-disjoint splits, N-subset.

``prepare_data`` is the one entry point a run needs; the pieces (``load_source``,
``decode_image``, ``patient_split``, ``nested_subset``, ``strata_matrix``) are public so a
study or a test can use them alone.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..config import PER_IMAGE, DataConfig, TaskConfig
from ..errors import ConfigError, DataError
from ..kinds import TaskKind
from .cache import cached_images, resolve_cache_dir
from .images import decode_image
from .partition import partition_patients, take_pool
from .records import SPLIT_NAMES, LabelledImages, PreparedData
from .sources import NIH14_FINDINGS, SOURCES, get_source
from .splits import (
    carve_val,
    check_patient_disjoint,
    given_split_indices,
    nested_subset,
    patient_split,
    strata_matrix,
    subset_order,
)

__all__ = [
    "LabelledImages", "PreparedData", "prepare_data", "load_source", "decode_image",
    "patient_split", "nested_subset", "subset_order", "strata_matrix", "given_split_indices",
    "NIH14_FINDINGS", "SOURCES", "partition_patients",
]


def load_source(data: DataConfig, task: TaskConfig, data_root: Path) -> LabelledImages:
    """Run the source's loader and check what it returns is internally consistent."""
    src = get_source(data.source)(data, task, Path(data_root))
    n = len(src.image_ids)
    if n == 0:
        raise DataError(f"data source {src.dataset_key} has no images")
    if len(set(src.image_ids)) != n:
        dup = next(i for i, c in _counts(src.image_ids).items() if c > 1)
        raise DataError(f"data source {src.dataset_key}: image {dup!r} is listed more than once")
    expected_ndim = 1 if task.kind == TaskKind.MULTICLASS else 2
    if len(src.labels) != n or len(src.patient_ids) != n or np.ndim(src.labels) != expected_ndim:
        raise DataError(f"data source {src.dataset_key}: labels/patients do not match its {n} images")
    if data.partition is not None:
        src = take_pool(src, data.partition, data.pool, data.partition_seed)
    return src


def _counts(items) -> dict:
    out: dict = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def make_splits(src: LabelledImages, data: DataConfig, strata: np.ndarray, notes: list[str]) -> dict[str, np.ndarray]:
    """``data.split``: random (patient-grouped, stratified) or the source's own split."""
    if data.split == "random":
        splits = patient_split(src.patient_ids, strata, data.split_fractions, data.split_seed)
    elif src.given_split is None:
        raise ConfigError(f"data.split={data.split}: the {data.source} source gives no split here "
                          "(csv: set data.split_column; nih14: data.split=official with train_val_list.txt/test_list.txt)")
    else:
        splits = given_split_indices(src.given_split)
        f_train, f_val, _ = data.split_fractions
        if not len(splits["val"]) and f_val > 0:
            val_fraction = f_val / (f_train + f_val)
            splits["train"], splits["val"] = carve_val(splits["train"], src.patient_ids, strata, val_fraction, data.split_seed)
            notes.append(f"the {data.split} split has no val images: {val_fraction:.0%} of train carved out by patient "
                         f"(data.split_seed={data.split_seed})")
    if not len(splits["train"]):
        raise DataError(f"data.split={data.split}: the train split of {src.dataset_key} is empty ({len(src)} images); check data.split_fractions")
    if src.has_patient_ids:
        check_patient_disjoint(splits, src.patient_ids, where=f"data.split={data.split} ({src.dataset_key})")
    return splits


def proportional_val_count(n_train: int, fractions: tuple[float, float, float]) -> int:
    """Validation images a user with ``n_train`` training images would hold out: N x f_val / f_train."""
    return math.ceil(n_train * fractions[1] / fractions[0])


def proportional_val(val: np.ndarray, n_train: int, patient_ids, strata: np.ndarray,
                     fractions: tuple[float, float, float], seed: int, notes: list[str],
                     by: str = "patients") -> np.ndarray:
    """The validation images a user with ``n_train`` labelled training images would have: ``n_train x
    f_val / f_train`` of them (N/7 for 70/10/20), drawn like the training subset (``by`` as data.subset_by,
    every class with a positive first, nested in N for a seed); at least one image per class present."""
    wanted = proportional_val_count(n_train, fractions)
    classes = int(np.asarray(strata)[val].any(axis=0).sum())
    n_val = min(len(val), max(wanted, classes))
    if n_val >= len(val):
        notes.append(f"data.val_size=proportional: all {len(val)} validation images kept (N x {fractions[1]:g}/"
                     f"{fractions[0]:g} = {wanted})")
        return val
    chosen = nested_subset(val, patient_ids, strata, n_val, seed, by)
    notes.append(f"data.val_size=proportional: validating on {len(chosen)} of {len(val)} validation images "
                 f"(N x {fractions[1]:g}/{fractions[0]:g}; the rest unused)")
    return chosen


def prepare_data(data: DataConfig, task: TaskConfig, image_size: int, data_root: Path,
                 n_train: int | str, seed: int, progress: bool = True) -> PreparedData:
    """Load the source, decode (or reuse) the image cache, split by patient, draw the N-subset."""
    data_root = Path(data_root)
    src = load_source(data, task, data_root)
    notes: list[str] = list(src.notes)
    cache_dir = resolve_cache_dir(data.cache_dir, data_root)
    images = cached_images(src, image_size, cache_dir, workers=data.workers, progress=progress)
    notes.append(f"images: {images.shape[0]} x {image_size}x{image_size} uint8 from {getattr(images, 'filename', cache_dir)}")
    if not src.has_patient_ids and data.patient_column != PER_IMAGE:   # the explicit opt-out has its own note
        notes.append("no patient IDs: each image is its own patient")

    strata = strata_matrix(src.labels, task.kind)
    splits = make_splits(src, data, strata, notes)
    subset = nested_subset(splits["train"], src.patient_ids, strata, n_train, seed, data.subset_by)
    if data.val_size == "proportional":
        splits["val"] = proportional_val(splits["val"], len(subset), src.patient_ids, strata, data.split_fractions,
                                         seed, notes, data.subset_by)
    for name in SPLIT_NAMES:
        idx = splits[name]
        notes.append(f"{name}: {len(idx)} images, {len(np.unique(src.patient_ids[idx]))} patients")
    notes.append(f"training subset: {len(subset)} of {len(splits['train'])} train images from "
                 f"{len(np.unique(src.patient_ids[subset]))} patients (n_train={n_train}, seed={seed}, "
                 f"data.subset_by={data.subset_by})")
    names = src.label_names if task.kind != TaskKind.BINARY else [f"not {src.label_names[0]}", src.label_names[0]]
    absent = [names[c] for c in range(strata.shape[1]) if not strata[subset, c].any()]
    if absent:
        notes.append(f"no positive in the training subset for: {', '.join(absent)}")
    return PreparedData(
        images=images,
        labels=src.labels,
        label_names=src.label_names,
        image_ids=src.image_ids,
        patient_ids=src.patient_ids,
        has_patient_ids=src.has_patient_ids,
        splits=splits,
        train_subset=subset,
        notes=notes,
    )

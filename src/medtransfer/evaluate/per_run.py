"""One run's test AUROC with its patient-level bootstrap interval, and the resample draws behind it.

Every finished run (CNN and radiomics) stores this: the interval says how much the test set's luck
moves the number, and the draws (same seed, same test images and patients -> the *same* patient
resamples for every run of a study) let the report combine seeds with test sampling and pair
recipes without reading predictions again.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..kinds import TaskKind
from .bootstrap import bootstrap_auroc_samples
from .metrics import one_vs_rest_targets, score_metrics

RUN_BOOTSTRAP_N = 1000      # resamples per run: a 95% percentile interval's ends move by ~0.002 AUROC between draws
RUN_BOOTSTRAP_SEED = 0      # fixed for every run, so runs on the same test images share their resamples
LEVEL = 0.95
SMALL_TEST_CLASS = 30       # patients of a class in a test split below which one split is a rough estimate


@dataclass(frozen=True)
class RunInterval:
    """A run's test macro AUROC, its percentile interval, and the resampled values (float32, in draw order)."""
    auroc: float
    low: float
    high: float
    unit: str               # "patients" or "images": what was resampled
    draws: np.ndarray
    test_set: str           # fingerprint of the test images and their clusters: only equal ones share resamples

    def to_json(self) -> dict:
        return {"low": self.low, "high": self.high, "level": LEVEL, "n_boot": int(len(self.draws)),
                "test_set": self.test_set,
                "resampled": self.unit, "method": f"percentile interval over {len(self.draws)} bootstrap resamples "
                                                  f"of the test {self.unit}"}


def test_set_fingerprint(image_ids, clusters) -> str:
    """Two runs' draws share their patient resamples only when they scored the same images with the same
    clusters; this 16-hex-digit hash of the (image, cluster) pairs says whether they did."""
    pairs = sorted(f"{i}\t{c}" for i, c in zip(image_ids, clusters))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:16]


def run_interval(labels: np.ndarray, scores: np.ndarray, kind: TaskKind, clusters, by_patient: bool, image_ids,
                 n_boot: int = RUN_BOOTSTRAP_N, seed: int = RUN_BOOTSTRAP_SEED) -> RunInterval | None:
    """The test interval of one run; None when its macro AUROC is undefined (no label has both classes).

    ``clusters``: one id per test image (patient ids when ``by_patient``, else image ids).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    targets = one_vs_rest_targets(labels, kind, scores.shape[1])
    point = score_metrics(labels, scores, kind, [str(k) for k in range(scores.shape[1])]).auroc_macro
    if point is None:
        return None
    try:
        draws = bootstrap_auroc_samples(targets, scores, np.asarray(clusters), n_boot=n_boot, seed=seed)
    except DataError:
        return None
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return RunInterval(float(point), float(low), float(high), "patients" if by_patient else "images",
                       draws.astype(np.float32), test_set_fingerprint(image_ids, clusters))


def class_names(label_names: list[str], kind: TaskKind) -> list[str]:
    """The classes a split is stratified and counted on (``data.strata_matrix``'s columns): a binary task's
    negative and positive, else its labels."""
    return [f"not {label_names[0]}", label_names[0]] if kind == TaskKind.BINARY else list(label_names)


def patients_per_class(labels: np.ndarray, kind: TaskKind, clusters, names: list[str]) -> dict[str, int]:
    """Distinct patients (``clusters``: one id per image) of each class present in a split, by class name.

    A binary task's classes are its negatives and its positives (``names``: both, negative first); multiclass,
    each class; multilabel, each finding's positives. A test AUROC rests on the rarest of these: with a dozen
    patients of one class, one split is a rough estimate however its interval looks (``SMALL_TEST_CLASS``)."""
    y = np.asarray(labels)
    if kind == TaskKind.MULTICLASS:
        columns = np.eye(len(names), dtype=bool)[y.astype(int).ravel()]
    else:
        columns = y.reshape(len(y), -1) > 0.5
        if kind == TaskKind.BINARY:
            columns = np.column_stack([~columns[:, 0], columns[:, 0]])
    clusters = np.asarray(clusters)
    counts = {str(name): len(np.unique(clusters[columns[:, c]])) for c, name in enumerate(names)}
    return {name: n for name, n in counts.items() if n > 0}


def fewest_patients(counts: dict[str, int]) -> tuple[str, int] | None:
    """The class with the fewest patients in ``patients_per_class``'s counts (the first on a tie); None if empty."""
    return min(counts.items(), key=lambda item: item[1]) if counts else None

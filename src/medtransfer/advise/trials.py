"""What the search trains on and what one trial measured: the search's arrays (``SearchData``, never a test
row) and its trials (``Trial``). Apart from ``search`` so that ``choice`` (how the pick is named) can read them
without importing the search that calls it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..kinds import TaskKind
from .plan import Arm


@dataclass(frozen=True)
class SplitArrays:
    """One split's uint8 images (n, S, S), labels, and cluster ids (patients; images when there are none)."""
    images: np.ndarray
    labels: np.ndarray
    clusters: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class SearchData:
    """Everything the search may see: the user's N training images and the validation split, no test.

    ``nested`` maps a smaller training-set size n to the positions (into ``train``) of the nested
    n-subset a run with ``train.n_train=n`` would draw, for the learning-curve sizes.

    Cross-validated (``folds`` set, ``cross_validated_data``): ``train`` and ``val`` are both the N-pool (the
    N training images, then the validation share), and a trial trains each fold's other folds and scores the
    fold, so its validation scores are out-of-fold scores of every pool image, in ``val``'s order.
    """
    train: SplitArrays
    val: SplitArrays
    task_kind: TaskKind
    label_names: list[str]
    nested: dict[int, np.ndarray] = field(default_factory=dict)
    folds: tuple[tuple[np.ndarray, np.ndarray], ...] = ()    # positions into the pool (``train``)
    selection_reason: str = ""
    # A frozen backbone's features of ``train`` / ``val`` by (initialisation, arch, split), filled by the first probe
    # trial of an initialisation and read by its later ones (learning-curve sizes): one backbone pass per search.
    features: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_outputs(self) -> int:
        return len(self.label_names)

    @property
    def score_name(self) -> str:
        """What a trial's score is, in the log's words."""
        return "mean fold AUROC" if self.folds else "val AUROC"

    @property
    def selection(self) -> str:
        """``cv`` or ``holdout``: what the search's trials were scored by (advice.json's words)."""
        return "cv" if self.folds else "holdout"



@dataclass(frozen=True, eq=False)
class Trial:
    """One arm trained at one rung (or one learning-curve size): its validation AUROC and scores."""
    arm: Arm
    rung: int                 # 1-based; 0 for a learning-curve size run
    steps: int
    n_train: int
    val_auroc: float          # NaN when undefined or the run failed
    seconds: float
    val_scores: np.ndarray | None = None
    error: str | None = None
    kept: bool = False        # promoted to the next rung, or the pick at the last
    fold_auroc: tuple[float, ...] = ()   # cross-validated: each fold's AUROC at the best mean round

    @property
    def val_auroc_or_none(self) -> float | None:
        """The validation AUROC, None when it is undefined (as advice.json records it)."""
        return None if not math.isfinite(self.val_auroc) else self.val_auroc

    @property
    def seconds_rounded(self) -> float:
        """The trial's seconds as advice.json records it (and advice.html shows it): to 0.01 s."""
        return round(self.seconds, 2)

    def to_json(self) -> dict:
        return {"arm": self.arm.label, **self.arm.to_json(), "rung": self.rung, "steps": self.steps,
                "n_train": self.n_train, "val_auroc": self.val_auroc_or_none,
                "fold_auroc": [None if not math.isfinite(v) else round(v, 6) for v in self.fold_auroc] or None,
                "seconds": self.seconds_rounded, "kept": self.kept, "error": self.error}

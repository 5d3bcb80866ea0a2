"""Operating points of a binary classifier: a threshold chosen on validation, judged on test.

AUROC says how well a model ranks; a clinician acts on a yes/no. The threshold must come
from the validation split (choosing it on test would flatter the test accuracy), and is
then applied unchanged to the test scores. Youden's J (sensitivity + specificity - 1) is
the default criterion; a target sensitivity (e.g. 0.95 for a screening use) is the other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_curve

from ..errors import DataError
from ..kinds import TaskKind, ThresholdCriterion


OPERATING_KEYS = ("accuracy", "sensitivity", "specificity")   # what a yes / no at a threshold is judged by


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float          # predict positive when score >= threshold
    criterion: str            # the stored text: 'youden' | 'sensitivity>=0.95' | 'given' (``str(Criterion)``)
    accuracy: float
    sensitivity: float
    specificity: float
    n_images: int

    def to_dict(self) -> dict:
        return asdict(self)


def _binary_pair(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise DataError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise DataError("an operating point needs 0/1 labels")
    if y.min() == y.max():
        raise DataError(f"an operating point needs both classes; all {y.size} labels are {int(y[0]) if y.size else '-'}")
    return y.astype(int), s


def youden_threshold(y_val, scores_val) -> float:
    """The validation threshold that maximises sensitivity + specificity - 1 (the first such, i.e. the highest)."""
    y, s = _binary_pair(y_val, scores_val)
    fpr, tpr, thresholds = roc_curve(y, s)
    finite = np.isfinite(thresholds)   # sklearn's first threshold is +inf (nobody positive)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


def sensitivity_threshold(y_val, scores_val, target: float) -> float:
    """The highest validation threshold whose sensitivity reaches ``target`` (most specific such point)."""
    if not 0.0 < target <= 1.0:
        raise DataError(f"a target sensitivity must be in (0, 1], got {target}")
    y, s = _binary_pair(y_val, scores_val)
    _, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    reach = np.flatnonzero((tpr >= target - 1e-12) & np.isfinite(thresholds))
    return float(thresholds[reach[0]])


def operating_point(y_true, scores, threshold: float, criterion: str) -> OperatingPoint:
    """Accuracy, sensitivity and specificity of ``score >= threshold`` on these labels."""
    y, s = _binary_pair(y_true, scores)
    predicted = s >= threshold
    positives, negatives = y == 1, y == 0
    return OperatingPoint(
        threshold=float(threshold), criterion=criterion,
        accuracy=float(np.mean(predicted == positives)),
        sensitivity=float(np.mean(predicted[positives])),
        specificity=float(np.mean(~predicted[negatives])),
        n_images=int(y.size))


# ---------------------------------------------------------------- a run's thresholds, one per label

_CRITERIA = tuple(ThresholdCriterion)
DEFAULT_THRESHOLD = 0.5   # only for a label whose validation split holds one class (no operating point exists)


@dataclass(frozen=True)
class Criterion:
    """How a threshold is chosen: Youden's J on validation (the default), a target validation
    sensitivity, or a value the user gives. ``str`` is the name written to threshold.json and the CSV."""
    kind: ThresholdCriterion    # a plain string is taken and turned into the member
    value: float | None = None  # the target sensitivity, or the given threshold

    def __post_init__(self):
        if self.kind not in _CRITERIA:
            raise DataError(f"unknown threshold criterion {self.kind!r} (known: youden, sensitivity, given)")
        object.__setattr__(self, "kind", ThresholdCriterion(self.kind))
        if self.kind is ThresholdCriterion.SENSITIVITY and not (self.value is not None and 0.0 < self.value <= 1.0):
            raise DataError(f"a target sensitivity must be in (0, 1], got {self.value}")
        if self.kind is ThresholdCriterion.GIVEN and not (self.value is not None and 0.0 <= self.value <= 1.0):
            raise DataError(f"a given threshold applies to probabilities, so it must be in [0, 1], got {self.value}")

    def __str__(self) -> str:
        return f"sensitivity>={self.value:g}" if self.kind is ThresholdCriterion.SENSITIVITY else self.kind.value


YOUDEN = Criterion(ThresholdCriterion.YOUDEN)


@dataclass(frozen=True)
class LabelThreshold:
    """One label's threshold, how it was chosen, and what it gives on validation (and, for the record, test)."""
    threshold: float
    criterion: str
    val: OperatingPoint | None = None    # None when validation holds one class only
    test: OperatingPoint | None = None   # judged with the validation threshold; never used to choose
    note: str | None = None              # why the criterion could not be applied, when it could not

    def to_dict(self) -> dict:
        out = {"threshold": self.threshold, "criterion": self.criterion,
               "val": self.val.to_dict() if self.val else None, "test": self.test.to_dict() if self.test else None}
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, payload: dict) -> "LabelThreshold":
        def point(block):
            return OperatingPoint(**block) if block else None
        return cls(threshold=float(payload["threshold"]), criterion=str(payload["criterion"]),
                   val=point(payload.get("val")), test=point(payload.get("test")), note=payload.get("note"))


@dataclass(frozen=True)
class RunThresholds:
    """The operating thresholds of one run (``threshold.json``): one per label for binary and
    multilabel tasks; none for multiclass, whose label is the arg-max class."""
    task_kind: TaskKind
    criterion: str
    labels: dict[str, LabelThreshold]
    chosen_on: str = "val"

    def to_json(self) -> dict:
        return {"task_kind": self.task_kind, "criterion": self.criterion, "chosen_on": self.chosen_on,
                "labels": {name: t.to_dict() for name, t in self.labels.items()}}

    @classmethod
    def from_json(cls, payload: dict) -> "RunThresholds":
        return cls(task_kind=str(payload["task_kind"]), criterion=str(payload["criterion"]),
                   chosen_on=str(payload.get("chosen_on", "val")),
                   labels={name: LabelThreshold.from_dict(t) for name, t in (payload.get("labels") or {}).items()})

    def notes(self) -> list[str]:
        return [f"{name}: {t.note}" for name, t in self.labels.items() if t.note]


def _one_class_note(y: np.ndarray) -> str | None:
    if y.size == 0:
        return "no validation images"
    if y.min() == y.max():
        return f"validation has only {'positive' if y[0] == 1 else 'negative'} cases"
    return None


def choose_label_threshold(y_val, s_val, criterion: Criterion, y_test=None, s_test=None) -> LabelThreshold:
    """The threshold of one label by ``criterion`` on validation; 0.5 with a note when validation has one class."""
    y, s = np.asarray(y_val).reshape(-1), np.asarray(s_val, dtype=np.float64).reshape(-1)
    note = _one_class_note(y)
    if criterion.kind is ThresholdCriterion.GIVEN:
        threshold, name = float(criterion.value), str(criterion)
    elif note:
        threshold, name, note = DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD:g}", f"{note}: {criterion} undefined, 0.5 used"
    elif criterion.kind is ThresholdCriterion.YOUDEN:
        threshold, name = youden_threshold(y, s), str(criterion)
    else:
        threshold, name = sensitivity_threshold(y, s, float(criterion.value)), str(criterion)
    val = None if _one_class_note(y) else operating_point(y, s, threshold, name)
    test = None
    if y_test is not None and _one_class_note(np.asarray(y_test).reshape(-1)) is None:
        test = operating_point(y_test, s_test, threshold, name)
    return LabelThreshold(threshold, name, val, test, note if criterion.kind is not ThresholdCriterion.GIVEN else None)


def choose_thresholds(task_kind: TaskKind, label_names: list[str], y_val, s_val, criterion: Criterion = YOUDEN,
                      y_test=None, s_test=None) -> RunThresholds:
    """One threshold per score column (binary: the one label; multilabel: each label), chosen on validation.

    ``y_*`` are the 0/1 label matrices (N, K) aligned with the score columns; test, when given, is only
    scored with the validation threshold (so threshold.json says what the threshold gives on unseen data).
    """
    if task_kind == TaskKind.MULTICLASS:
        return RunThresholds(task_kind, "argmax", {})
    y_val = np.asarray(y_val).reshape(len(y_val), -1)
    s_val = np.asarray(s_val, dtype=np.float64).reshape(len(s_val), -1)
    if y_test is not None:
        y_test = np.asarray(y_test).reshape(len(y_test), -1)
        s_test = np.asarray(s_test, dtype=np.float64).reshape(len(s_test), -1)
    labels = {}
    for k, name in enumerate(label_names):
        labels[name] = choose_label_threshold(y_val[:, k], s_val[:, k], criterion,
                                              None if y_test is None else y_test[:, k],
                                              None if s_test is None else s_test[:, k])
    return RunThresholds(task_kind, str(criterion), labels)


def given_thresholds(task_kind: TaskKind, label_names: list[str], value: float) -> RunThresholds:
    """The same user-given threshold for every label (no data: nothing is chosen)."""
    criterion = Criterion(ThresholdCriterion.GIVEN, value)
    return RunThresholds(task_kind, str(criterion),
                         {name: LabelThreshold(float(value), str(criterion)) for name in label_names})

"""The scoring tail every method's run ends with, so CNN and radiomics run folders are written alike.

``score_run`` takes a fitted model's validation and test scores and writes the predictions files,
scores each split (``evaluate.score_metrics``), adds the test AUROC interval (and its draws in the
run folder), chooses the operating thresholds on validation (threshold.json) and adds their
operating points. It also gathers what a reader must suspect (a small test split, validation and test
disagreeing), which the run's verdict (``run_verdict``) repeats. CNN runs (``runs.cnn``) and radiomics runs (``radiomics.baseline_run``) both end
here; metrics.json itself is written last by the folder protocol (``folder_protocol.write_finished``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import PreparedData
from ..evaluate import score_metrics
from ..evaluate.per_run import (SMALL_TEST_CLASS, BaselineComparison, RunInterval, RunVerdict, SplitEstimate,
                                class_names, fewest_patients, patients_per_class, run_interval, split_disagreement)
from ..evaluate.threshold import OPERATING_KEYS, RunThresholds, choose_thresholds
from ..kinds import TaskKind, auroc_name
from ..run_folder import MetricBlock, RunFolder, write_text_atomic
from .folder_protocol import Log


@dataclass(frozen=True)
class SplitScores:
    """One evaluated split: its rows (indices into the run's data) and the model's scores for them."""
    rows: np.ndarray
    scores: np.ndarray
    predictions: Path | None = None   # where its predictions CSV goes (None: not written)
    folds: list | None = None         # out-of-fold scores of a cross-validated run: each fold's AUROC


@dataclass(frozen=True)
class Scored:
    """What ``score_run`` measured: metrics.json's ``val`` / ``test`` blocks and the thresholds it wrote, the test
    interval (its draws pair a baseline with the model) and what a reader must suspect."""
    val: MetricBlock
    test: MetricBlock
    thresholds: RunThresholds
    test_interval: RunInterval | None = None
    suspect: tuple[str, ...] = ()
    small_test: str | None = None     # the one of ``suspect`` that is about the test split's size


def score_run(folder: RunFolder, data: PreparedData, kind: TaskKind, val: SplitScores, test: SplitScores,
              log: Log) -> Scored:
    """Predictions, per-split metrics, the test interval, threshold.json and the operating points."""
    scored, raw = {}, {}
    for split, part in (("val", val), ("test", test)):
        labels = data.labels[part.rows]
        scored[split] = score_metrics(labels, part.scores, kind, data.label_names)
        raw[split] = (labels, part.scores)
        if part.predictions is not None:
            write_predictions(part.predictions, [data.image_ids[i] for i in part.rows], labels, part.scores,
                              data.label_names, kind, data.patient_ids[part.rows] if data.has_patient_ids else None)
    interval = _add_test_interval(scored, folder, kind, raw["test"], data, test.rows, log)
    clusters = data.clusters(test.rows)
    scored["test"].patients_per_class = patients_per_class(raw["test"][0], kind, clusters,
                                                           class_names(data.label_names, kind))
    (y_val, s_val), (y_test, s_test) = raw["val"], raw["test"]
    # Youden thresholds chosen on validation, scored on test too (for the record). Binary / multilabel
    # labels are already the 0/1 matrices; a multiclass run gets no threshold.
    thresholds = choose_thresholds(kind, data.label_names, y_val, s_val, y_test=y_test, s_test=s_test)
    folder.write_thresholds(thresholds)
    _add_operating_points(scored, thresholds)
    suspect = small_test_line(scored["test"].patients_per_class)   # counted above
    disagree = split_disagreement(_val_estimate(data, kind, val),
                                  None if interval is None else SplitEstimate.of(interval, "test AUROC"))
    if disagree:
        log(f"WARNING: {disagree}")
    return Scored(scored["val"], scored["test"], thresholds, interval, tuple(suspect + ([disagree] if disagree else [])),
                  suspect[0] if suspect else None)


def split_interval(data: PreparedData, kind: TaskKind, part: SplitScores) -> RunInterval | None:
    """A split's AUROC with its patient-bootstrap interval (the validation split's, to compare with test)."""
    return run_interval(data.labels[part.rows], part.scores, kind, data.clusters(part.rows),
                        by_patient=bool(data.has_patient_ids), image_ids=np.asarray(data.image_ids)[part.rows])


def _val_estimate(data: PreparedData, kind: TaskKind, val: SplitScores) -> SplitEstimate | None:
    """The validation AUROC the run chose on, with its uncertainty: the mean fold AUROC of a cross-validated run,
    else the validation split's patient bootstrap."""
    if val.folds:
        return SplitEstimate.of_folds(val.folds)
    interval = split_interval(data, kind, val)
    return None if interval is None else SplitEstimate.of(interval, "validation AUROC")


def run_verdict(scored: Scored, baselines: list[BaselineComparison], missing: list[str]) -> RunVerdict:
    """The run's verdict: better than chance, than each baseline compared, and what to suspect."""
    interval = scored.test_interval
    return RunVerdict(None if interval is None else interval.auroc, None if interval is None else interval.low,
                      None if interval is None else interval.high, tuple(baselines), scored.suspect, tuple(missing),
                      scored.small_test)


def _label_columns(prefix: str, names: list[str]) -> list[str]:
    return [f"{prefix}{n}" for n in names]


def write_predictions(path: Path, image_ids: list[str], labels: np.ndarray, scores: np.ndarray,
                      label_names: list[str], kind: TaskKind, patient_ids=None,
                      first: dict[str, np.ndarray] | None = None) -> None:
    """One row per image: ``image_id``, ``first``'s columns (the outer fold, ``runs.outer_cv``), ``patient_id``,
    the truth and the scores."""
    frame = pd.DataFrame({"image_id": image_ids, **(first or {})})
    if patient_ids is not None:   # what a patient-level bootstrap or clustered test groups by
        frame["patient_id"] = [str(p) for p in patient_ids]
    if kind == TaskKind.MULTICLASS:
        frame["true"] = [label_names[int(i)] for i in labels]
    else:
        frame[_label_columns("true_", label_names)] = labels.reshape(len(labels), -1).astype(int)
    frame[_label_columns("score_", label_names)] = scores
    # every digit the dtype holds: rounded scores tie (a confident model's 1e-7s all become
    # 0.000000) and the AUROC / DeLong read back from this file would differ from metrics.json
    digits = 9 if np.asarray(scores).dtype == np.float32 else 17
    write_text_atomic(path, frame.to_csv(index=False, float_format=f"%.{digits}g"))


def _add_test_interval(scored: dict[str, MetricBlock], folder: RunFolder, kind: TaskKind, test: tuple[np.ndarray, np.ndarray],
                       data: PreparedData, test_idx: np.ndarray, log: Log) -> RunInterval | None:
    """The run's test AUROC interval (patient bootstrap; images where the data has no patient ids) in
    metrics.json's ``test.auroc_ci``, and its draws in the run folder for the report to combine and pair."""
    labels, scores = test
    image_ids = np.asarray(data.image_ids)[test_idx]
    clusters = data.clusters(test_idx)
    interval = run_interval(labels, scores, kind, clusters, by_patient=bool(data.has_patient_ids), image_ids=image_ids)
    if interval is None:
        log("test AUROC undefined: no bootstrap interval")
        return None
    scored["test"].auroc_ci = interval.to_json()
    folder.write_bootstrap(interval.draws, interval.test_set)
    log(f"test {auroc_name(kind)} 95% interval {interval.low:.4f} to {interval.high:.4f} "
        f"({len(interval.draws)} resamples of the test {interval.unit})")
    for warning in reader_warnings(interval.low, labels, kind, clusters, class_names(data.label_names, kind)):
        log(f"WARNING: {warning}")
    return interval


def reader_warnings(low: float, labels: np.ndarray, kind: TaskKind, clusters: np.ndarray,
                    names: list[str] | None = None) -> list[str]:
    """What a reader of this run must know first: a test interval that reaches 0.5 (not shown better than
    chance), and a test split with fewer than SMALL_TEST_CLASS patients of a class (one such split is a rough
    estimate, however its interval looks: ``train.test_estimate`` then estimates it by outer cross-validation)."""
    out = []
    if low <= 0.5:
        out.append(f"the test 95% interval reaches down to {low:.3f}: this model is not shown better than chance "
                   "(too few test images, or nothing was learned)")
    return out + small_test_warnings(labels, kind, clusters, names)


def small_test_warnings(labels: np.ndarray, kind: TaskKind, clusters: np.ndarray,
                        names: list[str] | None = None) -> list[str]:
    """The warning for a test split with fewer than SMALL_TEST_CLASS patients of a class ([] otherwise), naming
    the class (``names``: ``evaluate.per_run.class_names`` of the run's labels; None: numbered)."""
    y = np.asarray(labels)
    if names is None:
        width = (int(y.max()) + 1 if len(y) else 0) if kind == TaskKind.MULTICLASS else \
            2 if kind == TaskKind.BINARY else y.reshape(len(y), -1).shape[1]
        names = [str(c) for c in range(width)]
    return small_test_line(patients_per_class(y, kind, clusters, names))


def small_test_line(counts: dict[str, int]) -> list[str]:
    """``small_test_warnings`` from counts already made (``patients_per_class``)."""
    fewest = fewest_patients(counts)
    if fewest is None or fewest[1] >= SMALL_TEST_CLASS:
        return []
    return [f"the test split holds only {fewest[1]} patients of '{fewest[0]}' (fewer than {SMALL_TEST_CLASS}): "
            "a single split this small gives a rough estimate"]


def _add_operating_points(scored: dict[str, MetricBlock], thresholds: RunThresholds) -> None:
    """Binary tasks: accuracy, sensitivity and specificity at the threshold chosen on validation, in each
    split's metrics block (``operating_point``): a clinician acts on a yes / no, not on an AUROC.
    The test numbers use the validation threshold unchanged, so they are what a user would see."""
    if thresholds.task_kind != TaskKind.BINARY or len(thresholds.labels) != 1:
        return
    (chosen,) = thresholds.labels.values()
    for split, point in (("val", chosen.val), ("test", chosen.test)):
        if point is not None and split in scored:
            scored[split].operating_point = {
                "threshold": chosen.threshold, "criterion": f"{chosen.criterion} on val",
                **{key: getattr(point, key) for key in OPERATING_KEYS}}

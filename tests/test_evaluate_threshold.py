"""Operating points: the threshold comes from validation and is applied unchanged to test."""
import numpy as np
import pytest

from medtransfer.errors import DataError
from medtransfer.evaluate.threshold import operating_point, sensitivity_threshold, youden_threshold


def test_youden_threshold_separates_a_separable_set_and_scores_it_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    thr = youden_threshold(y, s)
    assert 0.3 < thr <= 0.6
    point = operating_point([0, 0, 1, 1], [0.2, 0.65, 0.5, 0.95], thr, "youden")
    # 0.65 >= thr is a false positive; 0.5 < thr is a false negative (when thr = 0.6)
    assert point.threshold == thr == 0.6
    assert (point.accuracy, point.sensitivity, point.specificity) == (0.5, 0.5, 0.5)


def test_youden_matches_a_brute_force_search():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = rng.normal(y * 0.8, 1.0)
    best = max(np.unique(s), key=lambda t: (np.mean(s[y == 1] >= t) + np.mean(s[y == 0] < t), t))
    thr = youden_threshold(y, s)
    j = lambda t: np.mean(s[y == 1] >= t) + np.mean(s[y == 0] < t)   # noqa: E731
    assert j(thr) == pytest.approx(j(best))


def test_sensitivity_target_is_met_on_validation_with_the_most_specific_threshold():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    s = rng.normal(y * 1.2, 1.0)
    thr = sensitivity_threshold(y, s, 0.95)
    assert np.mean(s[y == 1] >= thr) >= 0.95
    higher = np.unique(s[s > thr])
    assert higher.size == 0 or np.mean(s[y == 1] >= higher[0]) < 0.95


def test_one_class_labels_are_refused():
    with pytest.raises(DataError, match="both classes"):
        youden_threshold([1, 1, 1], [0.1, 0.2, 0.3])


def test_multilabel_gets_one_threshold_per_label_and_a_one_class_label_falls_back_with_a_note():
    from medtransfer.evaluate.threshold import RunThresholds, YOUDEN, choose_thresholds

    rng = np.random.default_rng(5)
    y = np.stack([rng.integers(0, 2, 200), np.zeros(200, dtype=int)], axis=1)   # label b: no positive in val
    s = np.stack([rng.normal(y[:, 0] * 1.5, 1.0), rng.random(200)], axis=1)
    y_test, s_test = y[:100], s[:100]
    chosen = choose_thresholds("multilabel", ["a", "b"], y, s, YOUDEN, y_test=y_test, s_test=s_test)
    a, b = chosen.labels["a"], chosen.labels["b"]
    assert a.threshold == youden_threshold(y[:, 0], s[:, 0]) and a.criterion == "youden" and a.note is None
    assert a.val.n_images == 200 and a.test.n_images == 100
    assert a.test.sensitivity == pytest.approx(np.mean(s_test[y_test[:, 0] == 1, 0] >= a.threshold))
    assert b.threshold == 0.5 and b.val is None and "only negative" in b.note
    assert chosen.notes() == [f"b: {b.note}"]
    assert RunThresholds.from_json(chosen.to_json()) == chosen     # threshold.json round-trips exactly


def test_multiclass_has_no_thresholds_and_a_bad_criterion_is_refused():
    from medtransfer.evaluate.threshold import Criterion, choose_thresholds

    assert choose_thresholds("multiclass", ["x", "y", "z"], None, None).labels == {}
    with pytest.raises(DataError, match=r"\(0, 1\]"):
        Criterion("sensitivity", 0.0)
    with pytest.raises(DataError, match="unknown threshold criterion"):
        Criterion("f1")
    assert str(Criterion("sensitivity", 0.95)) == "sensitivity>=0.95"

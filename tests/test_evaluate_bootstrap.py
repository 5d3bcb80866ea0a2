"""Patient-level bootstrap of the AUROC: exact resamples, clustering, redraws, widths."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtransfer.errors import DataError
from medtransfer.evaluate.bootstrap import (bootstrap_auroc_ci, bootstrap_auroc_samples,
                                            bootstrap_macro_auroc_ci)


def _synthetic(n, rng, shift=1.0, per_patient=1):
    y = rng.integers(0, 2, n)
    scores = np.round(y * shift + rng.normal(0, 1, n), 1)      # rounded: plenty of ties
    return y, scores, np.arange(n) // per_patient


def test_samples_equal_a_plain_loop_over_the_same_patient_draws():
    """Reference: draw patients row by row from default_rng(seed), expand to images, sklearn's AUROC."""
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(12), 3)                    # 12 patients x 3 images
    y = np.tile([0, 1, rng.integers(0, 2)], 12)               # every patient has both classes: no redraws
    scores = np.round(rng.normal(size=36) + y, 1)
    ids = np.array([f"P{p:02d}" for p in patients])             # sorted text order = patient number
    got = bootstrap_auroc_samples(y, scores, ids, n_boot=40, seed=7)
    draws = np.random.default_rng(7).integers(0, 12, size=(40, 12))
    expected = []
    for row in draws:
        idx = np.concatenate([np.flatnonzero(patients == p) for p in row])
        expected.append(roc_auc_score(y[idx], scores[idx]))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_point_estimate_and_percentile_interval():
    rng = np.random.default_rng(0)
    y, s, pid = _synthetic(300, rng)
    auc, low, high = bootstrap_auroc_ci(y, s, pid, n_boot=500, seed=1)
    samples = bootstrap_auroc_samples(y, s, pid, n_boot=500, seed=1)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert (low, high) == pytest.approx(tuple(np.quantile(samples, [0.025, 0.975])))
    assert low < auc < high
    assert bootstrap_auroc_ci(y, s, pid, n_boot=500, seed=1) == (auc, low, high)        # seeded
    assert bootstrap_auroc_ci(y, s, pid, n_boot=500, seed=2) != (auc, low, high)
    assert bootstrap_auroc_ci(y, s, pid, n_boot=500, seed=1, alpha=0.2).high < high


def test_perfect_separation_has_a_zero_width_interval():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert bootstrap_auroc_ci(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], np.arange(6), n_boot=200) == (1.0, 1.0, 1.0)


def test_resampling_patients_not_images():
    """k identical images per patient: the patient bootstrap equals the one on one image per patient;
    treating images as independent gives an interval about sqrt(k) times too narrow."""
    rng = np.random.default_rng(1)
    y, s, pid = _synthetic(200, rng)
    k = 4
    yk, sk, pk = np.repeat(y, k), np.repeat(s, k), np.repeat(pid, k)
    by_patient = bootstrap_auroc_samples(yk, sk, pk, n_boot=300, seed=5)
    np.testing.assert_allclose(by_patient, bootstrap_auroc_samples(y, s, pid, n_boot=300, seed=5), atol=1e-12)
    _, lo_p, hi_p = bootstrap_auroc_ci(yk, sk, pk, n_boot=300, seed=5)
    _, lo_i, hi_i = bootstrap_auroc_ci(yk, sk, np.arange(len(yk)), n_boot=300, seed=5)
    assert 1.5 < (hi_p - lo_p) / (hi_i - lo_i) < 2.6


def test_resamples_without_both_classes_are_redrawn():
    """Two positive patients of 40: ~27 % of draws hold neither; they are replaced by further draws, in order."""
    y = np.zeros(40, dtype=int)
    y[[3, 17]] = 1
    s = np.linspace(0, 1, 40)
    samples = bootstrap_auroc_samples(y, s, np.arange(40), n_boot=300, seed=0)
    assert len(samples) == 300 and np.isfinite(samples).all()
    rng, expected = np.random.default_rng(0), []
    while len(expected) < 300:
        for row in rng.integers(0, 40, size=(300, 40)):
            if y[row].any():
                expected.append(roc_auc_score(y[row], s[row]))
    np.testing.assert_allclose(samples, expected[:300], atol=1e-12)


def test_interval_shrinks_as_the_test_set_grows():
    rng = np.random.default_rng(2)
    widths = []
    for n in (100, 400, 1600):
        y, s, pid = _synthetic(n, rng)
        _, low, high = bootstrap_auroc_ci(y, s, pid, n_boot=400, seed=0)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.35 * widths[0]                          # ~ 1/sqrt(16) = 0.25


def test_macro_variant():
    rng = np.random.default_rng(4)
    y, s, pid = _synthetic(200, rng)
    one = bootstrap_macro_auroc_ci(y[:, None], s[:, None], pid, n_boot=300, seed=3)
    assert one == pytest.approx(bootstrap_auroc_ci(y, s, pid, n_boot=300, seed=3))
    y2 = rng.integers(0, 2, 200)
    s2 = y2 * 2.0 + rng.normal(size=200)
    rare = np.zeros(200, dtype=int)                                  # no positive: left out, as in score_metrics
    targets, scores = np.stack([y, y2, rare], 1), np.stack([s, s2, rng.normal(size=200)], 1)
    auc, low, high = bootstrap_macro_auroc_ci(targets, scores, pid, n_boot=300, seed=3)
    assert auc == pytest.approx((roc_auc_score(y, s) + roc_auc_score(y2, s2)) / 2)
    assert low < auc < high


@pytest.mark.parametrize("call, message", [
    (lambda: bootstrap_auroc_ci([0, 1, 2], [0.1, 0.2, 0.3], [1, 2, 3]), "must be 0/1"),
    (lambda: bootstrap_auroc_ci([0, 1, 1], [0.1, 0.2], [1, 2, 3]), "2 scores for 3 labels"),
    (lambda: bootstrap_auroc_ci([0, 1, 1], [0.1, np.nan, 0.3], [1, 2, 3]), "NaN"),
    (lambda: bootstrap_auroc_ci([0, 1, 1], [0.1, 0.2, 0.3], [1, 2]), "one per image"),
    (lambda: bootstrap_auroc_ci([1, 1, 1], [0.1, 0.2, 0.3], [1, 2, 3]), "at least one positive and one negative"),
    (lambda: bootstrap_auroc_ci([0, 1], [0.1, 0.2], [1, 2], n_boot=0), "n_boot"),
    (lambda: bootstrap_auroc_ci([0, 1], [0.1, 0.2], [1, 2], alpha=1.5), "alpha"),
    (lambda: bootstrap_macro_auroc_ci(np.zeros((3, 2)), np.zeros((3, 2)), [1, 2, 3]), "no label"),
])
def test_bad_inputs_raise_one_line_data_errors(call, message):
    with pytest.raises(DataError, match=message) as err:
        call()
    assert "\n" not in str(err.value)

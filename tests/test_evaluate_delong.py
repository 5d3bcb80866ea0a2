"""DeLong's paired test: a hand-computed example, brute-force placements, the bootstrap, calibration."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from medtransfer.errors import DataError
from medtransfer.evaluate.bootstrap import bootstrap_auroc_samples
from medtransfer.evaluate.delong import (delong_auroc_ci, delong_covariance, delong_paired, delong_paired_clustered,
                                         delong_paired_macro,
                                         structural_components)

# 3 positives (P1-P3), 3 negatives (N1-N3); method A has a tie P2 = N1 = 0.7.
Y = [1, 1, 1, 0, 0, 0]
A = [0.9, 0.7, 0.4, 0.7, 0.3, 0.2]
B = [0.8, 0.3, 0.6, 0.5, 0.4, 0.1]


def test_hand_computed_example():
    """Worked by hand (m = n = 3, covariances with denominator m - 1 = 2):

    A: V10 = P1 beats 3/3 -> 1, P2 ties N1 and beats 2 -> 2.5/3 = 5/6, P3 beats 2 -> 2/3;  AUC_A = 5/6
       V01 = N1 beaten by P1, tied by P2 -> 1.5/3 = 1/2, N2 -> 1, N3 -> 1;               mean 5/6
    B: V10 = 1, 1/3, 1 -> AUC_B = 7/9;   V01 = 2/3, 2/3, 1 (mean 7/9)
    S10: var(V10_A) = ((1/6)^2 + 0 + (1/6)^2)/2 = 1/36; var(V10_B) = ((2/9)^2 + (4/9)^2 + (2/9)^2)/2 = 4/27;
         cov = ((1/6)(2/9) + 0 + (-1/6)(2/9))/2 = 0
    S01: var(V01_A) = ((1/3)^2 + (1/6)^2 + (1/6)^2)/2 = 1/12; var(V01_B) = ((1/9)^2 + (1/9)^2 + (2/9)^2)/2 = 1/27;
         cov = ((-1/3)(-1/9) + (1/6)(-1/9) + (1/6)(2/9))/2 = 1/36
    Var(A) = (1/36)/3 + (1/12)/3 = 1/27;  Var(B) = (4/27)/3 + (1/27)/3 = 5/81;  Cov(A, B) = 0/3 + (1/36)/3 = 1/108
    Var(A - B) = 1/27 + 5/81 - 2/108 = 13/162;  diff = 5/6 - 7/9 = 1/18
    z = (1/18) / sqrt(13/162) = 1/sqrt(26) = 0.196116;  p = 2 (1 - Phi(z)) = 0.844519
    """
    aucs, v10, v01 = structural_components(Y, np.stack([A, B]))
    np.testing.assert_allclose(aucs, [5 / 6, 7 / 9])
    np.testing.assert_allclose(v10, [[1, 5 / 6, 2 / 3], [1, 1 / 3, 1]])
    np.testing.assert_allclose(v01, [[1 / 2, 1, 1], [2 / 3, 2 / 3, 1]])
    _, cov = delong_covariance(Y, np.stack([A, B]))
    np.testing.assert_allclose(cov, [[1 / 27, 1 / 108], [1 / 108, 5 / 81]])
    got = delong_paired(Y, A, B)
    assert got["auc_a"] == pytest.approx(5 / 6) and got["auc_b"] == pytest.approx(7 / 9)
    assert got["diff"] == pytest.approx(1 / 18)
    assert got["se"] == pytest.approx(math.sqrt(13 / 162))
    assert got["z"] == pytest.approx(1 / math.sqrt(26))
    assert got["p_value"] == pytest.approx(0.844519, abs=1e-6)
    half = 1.959964 * math.sqrt(13 / 162)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((1 / 18 - half, 1 / 18 + half), abs=1e-6)
    # single AUROC: 5/6 +- 1.96 sqrt(1/27) = (0.4561, 1.2105) -> cut to 1
    assert delong_auroc_ci(Y, A) == pytest.approx((5 / 6, 5 / 6 - 1.959964 * math.sqrt(1 / 27), 1.0), abs=1e-6)
    # swapping the methods flips the sign only
    swapped = delong_paired(Y, B, A)
    assert swapped["diff"] == pytest.approx(-1 / 18) and swapped["p_value"] == pytest.approx(got["p_value"])


def test_midrank_placements_equal_brute_force_pair_counts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.normal(size=(3, 80)) + y, 1)                    # many ties
    aucs, v10, v01 = structural_components(y, s)
    pos, neg = s[:, y == 1], s[:, y == 0]
    wins = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])   # (k, m, n)
    np.testing.assert_allclose(v10, wins.mean(axis=2))
    np.testing.assert_allclose(v01, wins.mean(axis=1))
    np.testing.assert_allclose(aucs, [roc_auc_score(y, row) for row in s])


def _two_methods(n, rng):
    """Two correlated scores of the same images (shared case difficulty), one better than the other."""
    y = rng.integers(0, 2, n)
    difficulty = rng.normal(size=n)
    a = 1.2 * y + difficulty + 0.8 * rng.normal(size=n)
    b = 0.9 * y + difficulty + 0.8 * rng.normal(size=n)
    return y, a, b


def test_delong_se_matches_the_bootstrap_se():
    rng = np.random.default_rng(1)
    y, a, b = _two_methods(600, rng)
    ids = np.arange(600)
    boot_a = bootstrap_auroc_samples(y, a, ids, n_boot=1000, seed=0)
    boot_b = bootstrap_auroc_samples(y, b, ids, n_boot=1000, seed=0)   # same seed: the same resamples (paired)
    got = delong_paired(y, a, b)
    _, cov = delong_covariance(y, np.stack([a, b]))
    assert math.sqrt(cov[0, 0]) == pytest.approx(boot_a.std(ddof=1), rel=0.15)
    assert got["se"] == pytest.approx((boot_a - boot_b).std(ddof=1), rel=0.15)
    # pairing matters: the paired SE is well below the SE that ignores the correlation
    assert got["se"] < 0.8 * math.sqrt(cov[0, 0] + cov[1, 1])


def test_macro_test_reduces_to_delong_for_one_label_and_tracks_the_bootstrap():
    rng = np.random.default_rng(2)
    y, a, b = _two_methods(300, rng)
    one = delong_paired_macro(y[:, None], a[:, None], b[:, None])
    plain = delong_paired(y, a, b)
    for key in ("auc_a", "auc_b", "diff", "se", "z", "p_value", "ci_low", "ci_high"):
        assert one[key] == pytest.approx(plain[key])
    y2, a2, b2 = _two_methods(300, rng)
    ys, as_, bs = np.stack([y, y2], 1), np.stack([a, a2], 1), np.stack([b, b2], 1)
    macro = delong_paired_macro(ys, as_, bs)
    assert macro["n_labels"] == 2
    assert macro["diff"] == pytest.approx((plain["diff"] + delong_paired(y2, a2, b2)["diff"]) / 2)
    ids = np.arange(300)
    boot = (bootstrap_auroc_samples(ys, as_, ids, n_boot=1000, seed=0)
            - bootstrap_auroc_samples(ys, bs, ids, n_boot=1000, seed=0))
    assert macro["se"] == pytest.approx(boot.std(ddof=1), rel=0.15)


def test_interval_shrinks_as_the_test_set_grows():
    rng = np.random.default_rng(3)
    widths, single = [], []
    for n in (100, 400, 1600):
        y, a, b = _two_methods(n, rng)
        got = delong_paired(y, a, b)
        widths.append(got["ci_high"] - got["ci_low"])
        _, low, high = delong_auroc_ci(y, a)
        single.append(high - low)
    assert widths[0] > widths[1] > widths[2] and widths[2] < 0.35 * widths[0]
    assert single[0] > single[1] > single[2] and single[2] < 0.35 * single[0]


def test_false_positive_rate_under_the_null_is_about_alpha():
    """Two equally good methods (exchangeable noise): p < 0.05 in about 5 % of 300 test sets."""
    rng = np.random.default_rng(4)
    rejections = 0
    for _ in range(300):
        y = rng.integers(0, 2, 120)
        shared = y + rng.normal(size=120)
        rejections += delong_paired(y, shared + rng.normal(size=120), shared + rng.normal(size=120))["p_value"] < 0.05
    assert 0.015 <= rejections / 300 <= 0.10
    assert stats.binomtest(int(rejections), 300, 0.05).pvalue > 0.001


def test_identical_scores_are_not_different():
    got = delong_paired(Y, A, A)
    assert got["diff"] == 0 and got["se"] == 0 and got["p_value"] == 1.0 and got["z"] == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: delong_paired([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], [0.8, 0.1, 0.2, 0.3]), "at least 2 positive"),
    (lambda: delong_paired(Y, A, B[:5]), "5 scores for 6 labels"),
    (lambda: delong_paired(Y, A, [np.nan] * 6), "NaN"),
    (lambda: delong_paired([0, 0, 0], [1, 2, 3], [1, 2, 3]), "at least one positive and one negative"),
    (lambda: delong_auroc_ci(Y, A, alpha=0), "alpha"),
    (lambda: delong_paired_macro(np.zeros((6, 2)), np.zeros((6, 2)), np.zeros((6, 2))), "no label"),
    (lambda: delong_paired_clustered(Y, A, B, [1, 1, 1, 2, 2, 3]), "2 patients with a positive"),
    (lambda: delong_paired_clustered(Y, A, B, [1, 2, 3]), "one per image"),
])
def test_bad_inputs_raise_one_line_data_errors(call, message):
    with pytest.raises(DataError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_clustered_test_is_delong_paired_when_every_image_is_its_own_patient():
    rng = np.random.default_rng(5)
    y, a, b = _two_methods(300, rng)
    plain = delong_paired(y, a, b)
    clustered = delong_paired_clustered(y, a, b, [f"img{i}" for i in range(300)])
    assert clustered["n_patients"] == 300
    for key in ("auc_a", "auc_b", "diff", "se", "z", "p_value", "ci_low", "ci_high"):
        assert clustered[key] == pytest.approx(plain[key], rel=1e-12, abs=1e-15)
    hand = delong_paired_clustered(Y, A, B, np.arange(6))
    assert hand["se"] == pytest.approx(math.sqrt(13 / 162)) and hand["p_value"] == pytest.approx(0.844519, abs=1e-6)


def test_clustered_test_counts_a_copied_patient_once():
    """k identical images per patient carry no more evidence than one: the clustered SE is that of one
    image per patient, while the unclustered test shrinks it by sqrt(k)."""
    rng = np.random.default_rng(6)
    y, a, b = _two_methods(200, rng)
    k = 4
    yk, ak, bk, pk = np.repeat(y, k), np.repeat(a, k), np.repeat(b, k), np.repeat(np.arange(200), k)
    one = delong_paired(y, a, b)
    clustered = delong_paired_clustered(yk, ak, bk, pk)
    assert clustered["diff"] == pytest.approx(one["diff"])
    assert clustered["se"] == pytest.approx(one["se"], rel=1e-9)
    assert delong_paired(yk, ak, bk)["se"] == pytest.approx(one["se"] / math.sqrt(k), rel=0.02)


def test_clustered_se_matches_the_patient_bootstrap_with_mixed_labels_per_patient():
    """Patients with 2-6 images of either class; method a errs per patient (one offset for all of a patient's
    images), b per image. The clustered SE (S11 term included) tracks the SE of the paired patient
    bootstrap; the unclustered one is too small."""
    rng = np.random.default_rng(7)
    patients = np.repeat(np.arange(200), rng.integers(2, 7, 200))
    n = len(patients)
    y = (rng.normal(size=n) + rng.normal(size=200)[patients] > 0.3).astype(int)   # labels cluster too
    a = 1.5 * y + 1.2 * rng.normal(size=200)[patients] + 0.5 * rng.normal(size=n)
    b = 1.5 * y + 1.3 * rng.normal(size=n)
    got = delong_paired_clustered(y, a, b, patients)
    boot = (bootstrap_auroc_samples(y, a, patients, n_boot=1500, seed=1)
            - bootstrap_auroc_samples(y, b, patients, n_boot=1500, seed=1))
    assert got["se"] == pytest.approx(boot.std(ddof=1), rel=0.12)
    assert delong_paired(y, a, b)["se"] < 0.8 * got["se"]

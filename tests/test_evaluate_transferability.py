"""LogME and the grouped probe: informative features score higher, and LogME matches a plain reference."""
import numpy as np
import pytest

from medtransfer.errors import DataError
from medtransfer.evaluate.transferability import logme_score, logme_single, probe_auroc, unusable_reason


def reference_logme(f, y, tol=1e-12, max_iter=10_000):
    """MacKay's fixed point written plainly with d x d matrices (You et al. 2021, Algorithm 1)."""
    n, d = f.shape
    ftf = f.T @ f
    eig = np.linalg.eigvalsh(ftf)
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, f.T @ y)
        gamma = np.sum(beta * eig / (alpha + beta * eig))
        new_alpha = gamma / (m @ m + 1e-5)
        new_beta = (n - gamma) / (np.sum((y - f @ m) ** 2) + 1e-5)
        done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) <= tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    a = alpha * np.eye(d) + beta * ftf
    m = beta * np.linalg.solve(a, f.T @ y)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * np.sum((y - f @ m) ** 2)
                - alpha / 2 * (m @ m) - np.linalg.slogdet(a)[1] / 2 - n / 2 * np.log(2 * np.pi))
    return evidence / n


@pytest.mark.parametrize("n, d", [(200, 16), (30, 64)])
def test_logme_matches_the_plain_reference(n, d):
    rng = np.random.default_rng(n)
    f = rng.normal(size=(n, d))
    y = (f[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(float)
    assert logme_single(f, y, tol=1e-12, max_iter=10_000).evidence == pytest.approx(reference_logme(f, y), abs=1e-6)


def test_linear_label_scores_higher_than_noise_features():
    rng = np.random.default_rng(0)
    n = 400
    informative = rng.normal(size=(n, 32))
    labels = (informative @ rng.normal(size=32) > 0).astype(np.float32)[:, None]
    noise = rng.normal(size=(n, 32))
    assert logme_score(informative, labels, "binary", 1) > logme_score(noise, labels, "binary", 1) + 0.05
    groups = np.arange(n) // 2
    assert probe_auroc(informative, labels, "binary", 1, groups) > 0.9
    assert abs(probe_auroc(noise, labels, "binary", 1, groups) - 0.5) < 0.12


def test_multiclass_is_one_vs_rest_and_unusable_features_are_explained():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    f = np.eye(3)[y] + 0.3 * rng.normal(size=(150, 3))
    assert np.isfinite(logme_score(f, y, "multiclass", 3))
    assert "constant" in unusable_reason(np.ones((10, 4)))
    bad = f.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="1 of 150 images have NaN"):
        logme_score(bad, y, "multiclass", 3)


def test_knn_auroc_separates_informative_features_and_ignores_the_same_patients_images():
    from medtransfer.evaluate.transferability import knn_auroc

    rng = np.random.default_rng(0)
    labels = (np.arange(300) % 2).astype(float)
    informative = rng.normal(size=(300, 8))
    informative[:, 0] += 3 * labels
    noise = rng.normal(size=(300, 8))
    assert knn_auroc(informative, labels, "binary", 1, np.arange(300)) > 0.9
    assert abs(knn_auroc(noise, labels, "binary", 1, np.arange(300)) - 0.5) < 0.1
    # a patient's images are near-copies: with image-level neighbours they vouch for each other (a leak);
    # grouped by patient, only other patients' images score an image, so noise stays at chance
    patients = np.repeat(np.arange(25), 12)        # more copies than neighbours (k = 10)
    y = (patients % 2).astype(float)
    copies = np.repeat(rng.normal(size=(25, 8)), 12, axis=0) + rng.normal(scale=0.01, size=(300, 8))
    assert knn_auroc(copies, y, "binary", 1, np.arange(300)) > 0.95          # what per-image neighbours claim
    assert knn_auroc(copies, y, "binary", 1, patients) < 0.7   # the honest answer: nothing beyond chance
    # multiclass: one-vs-rest columns, averaged
    classes = np.arange(300) % 3
    three = rng.normal(size=(300, 8))
    three[np.arange(300), classes] += 4
    assert knn_auroc(three, classes, "multiclass", 3, np.arange(300)) > 0.9


def test_knn_auroc_refuses_a_single_patient():
    from medtransfer.errors import DataError
    from medtransfer.evaluate.transferability import knn_auroc

    with pytest.raises(DataError, match="no neighbour from another patient"):
        knn_auroc(np.random.default_rng(0).normal(size=(10, 3)), np.arange(10) % 2, "binary", 1, np.zeros(10))

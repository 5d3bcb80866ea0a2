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


# ---------------------------------------------------------------------------------------------- SFDA
def _two_classes(n=400, d=16, shift=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    f = rng.normal(size=(n, d))
    f[:, 0] += shift * y
    return rng, f, y[:, None]


@pytest.mark.parametrize("classes, d", [(2, 10), (4, 10), (3, 60)])
def test_sfda_fisher_step_is_sklearns_shrinkage_lda(classes, d):
    """The projection onto the top C-1 Fisher directions plus the Bayes classifier there gives the posteriors of
    scikit-learn's shrinkage LDA on all features (S_B has rank C-1), also when fitted in the data's span."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from medtransfer.evaluate.transferability import fisher_fit

    rng = np.random.default_rng(classes)
    n = 300 if d < 50 else 40                       # the last case: fewer images than features
    y = np.arange(n) % classes
    f = rng.normal(size=(n, d))
    f[np.arange(n), y] += 1.0
    mine = fisher_fit(f, y, d, shrinkage=0.3)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.3).fit(f, y)
    np.testing.assert_allclose(mine.posteriors, lda.predict_proba(f), atol=1e-9)
    u, s, _ = np.linalg.svd(f - f.mean(axis=0), full_matrices=False)
    keep = s > 1e-9 * s.max()
    np.testing.assert_allclose(fisher_fit(u[:, keep] * s[keep], y, d, shrinkage=0.3).posteriors, mine.posteriors,
                               atol=1e-9)
    # lambda from the between-class spread: well-separated classes are shrunk less
    apart = f + 3.0 * np.eye(classes, d)[y]
    assert fisher_fit(apart, y, d).shrinkage < fisher_fit(f, y, d).shrinkage < 1


def test_sfda_ranks_separable_features_above_noise_and_true_labels_above_permuted():
    from medtransfer.evaluate.transferability import sfda_score

    rng, informative, y = _two_classes()
    noise = rng.normal(size=informative.shape)
    good = sfda_score(informative, y, "binary", 1)
    assert 0 < sfda_score(noise, y, "binary", 1) < good - 0.03 < 1
    assert abs(sfda_score(noise, y, "binary", 1) - 0.5) < 0.05       # ConfMix leaves noise at a coin flip
    permuted = rng.permutation(y)
    assert sfda_score(informative, permuted, "binary", 1) < good - 0.03
    # more separation, higher score
    _, clearer, _ = _two_classes(shift=3.0)
    assert sfda_score(clearer, y, "binary", 1) > good + 0.05


def test_sfda_is_invariant_to_each_features_scale_and_offset():
    from medtransfer.evaluate.transferability import sfda_score

    rng, f, y = _two_classes(d=8)
    scaled = f * np.array([1e-3, 1, 10, 1e4, 2, 3, 0.5, 7]) + rng.normal(size=8) * 100
    assert sfda_score(scaled, y, "binary", 1) == pytest.approx(sfda_score(f, y, "binary", 1), abs=1e-9)


def test_sfda_runs_binary_multilabel_and_multiclass():
    from medtransfer.evaluate.transferability import sfda_score

    rng, f, y = _two_classes(d=8)
    other = (f[:, 1] + 0.5 * rng.normal(size=len(f)) > 0).astype(float)
    two = np.column_stack([y[:, 0], other])
    # multi-label: the mean over the labels, each a binary problem of its own
    each = [sfda_score(f, two[:, [i]], "binary", 1) for i in range(2)]
    assert sfda_score(f, two, "multilabel", 2) == pytest.approx(np.mean(each))
    assert each[0] != pytest.approx(each[1])
    # a label with one class only is left out of the mean, as in LogME
    with_flat = np.column_stack([two, np.zeros(len(f))])
    assert sfda_score(f, with_flat, "multilabel", 3) == pytest.approx(np.mean(each))
    # multiclass: one C-class problem, informative features above noise
    classes = np.arange(300) % 3
    three = rng.normal(size=(300, 8))
    three[np.arange(300), classes] += 2
    assert sfda_score(three, classes, "multiclass", 3) > sfda_score(rng.normal(size=(300, 8)), classes, "multiclass", 3) + 0.1
    assert np.isfinite(sfda_score(three, classes, "multiclass", 5))     # two declared classes absent: left out


def test_sfda_degenerate_inputs_raise_or_score_as_documented():
    from medtransfer.evaluate.transferability import sfda_score

    rng, f, y = _two_classes(n=60, d=6)
    with pytest.raises(DataError, match="SFDA: no label has both classes"):
        sfda_score(f, np.zeros((60, 1)), "binary", 1)
    with pytest.raises(DataError, match="SFDA: no label has both classes"):
        sfda_score(f, np.full(60, 2), "multiclass", 3)
    with pytest.raises(DataError, match="SFDA: all 6 features are constant"):
        sfda_score(np.ones((60, 6)), y, "binary", 1)
    bad = f.copy()
    bad[0, 0] = np.inf
    with pytest.raises(DataError, match="SFDA: 1 of 60 images have NaN or infinite"):
        sfda_score(bad, y, "binary", 1)
    # constant and duplicated columns (rank-deficient) are scored, the same as without them
    padded = np.column_stack([f, np.full(60, 3.0), f[:, 0], 2 * f[:, 1]])
    score = sfda_score(padded, y, "binary", 1)
    assert np.isfinite(score) and 0.5 < score <= 1
    # classes that each collapse onto one point: perfectly separated, score 1 (no division by a zero scatter)
    points = np.repeat(np.array([[0.0, 1.0], [1.0, 0.0]]), 30, axis=0)
    assert sfda_score(points, np.repeat([0.0, 1.0], 30)[:, None], "binary", 1) == pytest.approx(1.0)
    # fewer images than features: in-sample, even noise separates and the score crowds toward 1 (documented)
    assert sfda_score(rng.normal(size=(40, 200)), np.arange(40) % 2, "binary", 1) > 0.99


def reference_sfda(f, y, a=1.0):
    """SFDA written plainly on all features with scikit-learn's shrinkage LDA (Shao et al. 2022; ConfMix as in
    the authors' code): lambda from S_B's top eigenvalue, softened own-class posterior, mix toward the mean of
    the other classes' means, refit with the same lambda, mean own-class posterior."""
    from scipy.special import softmax
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    f = (f - f.mean(axis=0)) / f.std(axis=0)
    classes = np.unique(y)
    priors = np.array([np.mean(y == c) for c in classes])
    means = np.array([f[y == c].mean(axis=0) for c in classes])
    s_b = sum(p * np.outer(m - priors @ means, m - priors @ means) for p, m in zip(priors, means))
    lam = max(np.exp(-a * np.linalg.eigvalsh(s_b).max()), 1e-10)
    first = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=lam).fit(f, y).predict_proba(f)
    conf = softmax(first, axis=1)[np.arange(len(y)), y]
    mixed = f.copy()
    for c in classes:
        other = np.mean([means[k] for k in classes if k != c], axis=0)
        mixed[y == c] = conf[y == c, None] * f[y == c] + (1 - conf[y == c, None]) * other
    second = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=lam).fit(mixed, y).predict_proba(mixed)
    return second[np.arange(len(y)), y].mean()


@pytest.mark.parametrize("classes", [2, 3])
def test_sfda_matches_the_plain_reference(classes):
    from medtransfer.evaluate.transferability import sfda_score

    rng = np.random.default_rng(7)
    y = np.arange(240) % classes
    f = rng.normal(size=(240, 12)) * rng.uniform(0.5, 5, size=12)
    f[np.arange(240), y] += 0.8
    kind, labels = ("binary", y[:, None].astype(float)) if classes == 2 else ("multiclass", y)
    assert sfda_score(f, labels, kind, 1 if classes == 2 else classes) == pytest.approx(reference_sfda(f, y), abs=1e-9)

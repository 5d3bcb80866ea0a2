"""The radiomics + logistic-regression baseline on synthetic feature tables (no images, no pyradiomics)."""
import numpy as np
import pandas as pd
import pytest
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medtransfer.config import RadiomicsConfig
from medtransfer.errors import DataError
from medtransfer.radiomics.baseline import AUTO_CV_MIN_CASES, fit_radiomics_baseline, grouped_folds


def binary_table(n, seed=0, signal=1.0, prevalence=0.4, n_noise=15):
    """Feature 'f0' carries the label; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.float32)
    X = rng.normal(size=(n, n_noise + 1))
    X[:, 0] += signal * y
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    return frame, y[:, None]


def test_c_is_the_best_on_val_as_recomputed_independently():
    Xtr, ytr = binary_table(120, seed=1)
    Xva, yva = binary_table(200, seed=2)
    rcfg = RadiomicsConfig(selection="val")
    model, chosen, note = fit_radiomics_baseline(Xtr, ytr, Xva, yva, "binary", rcfg, label_names=["lesion"])
    expected = {}
    for c in rcfg.c_grid:
        pipe = make_pipeline(SimpleImputer(strategy="median"), VarianceThreshold(0.0), StandardScaler(),
                             LogisticRegression(C=c, class_weight="balanced", max_iter=1000))
        pipe.fit(Xtr.to_numpy(), ytr[:, 0])
        expected[c] = roc_auc_score(yva[:, 0], pipe.predict_proba(Xva.to_numpy())[:, 1])
    best = max(expected.values())
    assert chosen == min(c for c, v in expected.items() if v >= best - 1e-12)
    assert model.selection == "val" and "validation AUROC (" in note   # binary: nothing is averaged
    assert model.selection_scores == pytest.approx(expected, abs=1e-9)


def test_val_labels_decide_c():
    """L1 at a tiny C zeroes every weight (AUROC 0.5): it wins only when val disagrees with train."""
    Xtr, ytr = binary_table(150, seed=3, signal=2.0)
    Xva, yva = binary_table(150, seed=4, signal=2.0)
    rcfg = RadiomicsConfig(selection="val", penalty="l1", c_grid=[1e-4, 1.0])
    assert fit_radiomics_baseline(Xtr, ytr, Xva, yva, "binary", rcfg)[1] == 1.0
    assert fit_radiomics_baseline(Xtr, ytr, Xva, 1 - yva, "binary", rcfg)[1] == 1e-4


def test_grouped_folds_never_split_a_patient():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(40)], rng.integers(1, 6, 40))
    strata = rng.integers(0, 2, len(patients))
    folds = grouped_folds(patients, strata, seed=0)
    assert len(folds) == 5
    held_out = np.zeros(len(patients), int)
    for train, test in folds:
        assert not set(patients[train]) & set(patients[test])
        held_out[test] += 1
    assert (held_out == 1).all()   # every image is held out exactly once
    assert all(len(set(patients[test])) > 0 for _, test in folds)


def test_grouped_cv_on_train_plus_val_with_patients():
    Xtr, ytr = binary_table(60, seed=5)
    Xva, yva = binary_table(60, seed=6)
    groups_tr = np.repeat([f"a{i}" for i in range(20)], 3)
    groups_va = np.repeat([f"b{i}" for i in range(30)], 2)
    model, chosen, note = fit_radiomics_baseline(Xtr, ytr, Xva, yva, "binary", RadiomicsConfig(selection="grouped_cv"),
                                                 groups_train=groups_tr, groups_val=groups_va)
    assert model.selection == "grouped_cv" and "patient-grouped CV on train+val (120 images)" in note
    assert chosen in RadiomicsConfig().c_grid


def test_auto_uses_grouped_cv_only_when_a_label_is_rare():
    rcfg = RadiomicsConfig(selection="auto")   # the rule before issue 23 (pool_cv is the default now)
    Xva, yva = binary_table(300, seed=7)
    small, y_small = binary_table(30, seed=8)           # ~12 positives < 20
    large, y_large = binary_table(400, seed=9)
    assert (y_small.sum() < AUTO_CV_MIN_CASES) and (y_large.sum() > AUTO_CV_MIN_CASES)
    assert fit_radiomics_baseline(small, y_small, Xva, yva, "binary", rcfg)[0].selection == "grouped_cv"
    assert fit_radiomics_baseline(large, y_large, Xva, yva, "binary", rcfg)[0].selection == "val"


def test_class_weight_is_balanced():
    """With 10% positives, balanced weights centre the training scores near 0.5, not near 0.1."""
    Xtr, ytr = binary_table(400, seed=10, prevalence=0.1, signal=0.5)
    Xva, yva = binary_table(200, seed=11, prevalence=0.1, signal=0.5)
    model, _, _ = fit_radiomics_baseline(Xtr, ytr, Xva, yva, "binary", RadiomicsConfig(selection="val"))
    assert model.models[0].class_weight == "balanced"
    assert model.predict_scores(Xtr).mean() > 0.35


def test_constant_and_empty_features_are_dropped_and_nan_imputed():
    Xtr, ytr = binary_table(80, seed=12)
    Xva, yva = binary_table(80, seed=13)
    for frame in (Xtr, Xva):
        frame["flat"] = 3.0
        frame["empty"] = np.nan
    Xtr.loc[0, "f1"] = np.inf
    Xva.loc[:4, :] = np.nan            # a val image whose extraction failed: every feature imputed
    model, _, _ = fit_radiomics_baseline(Xtr, ytr, Xva, yva, "binary", RadiomicsConfig(selection="val"))
    assert "flat" not in model.kept_features and "empty" not in model.kept_features
    assert len(model.kept_features) == Xtr.shape[1] - 2
    assert any("2 of 18 features dropped" in n for n in model.notes)
    scores = model.predict_scores(Xva)
    assert np.isfinite(scores).all() and np.allclose(scores[:5], scores[0])
    assert list(model.coefficients(["y"]).index) == model.kept_features


def test_label_without_training_positives_gets_a_constant_score_and_a_note():
    rng = np.random.default_rng(14)
    X = rng.normal(size=(120, 6))
    Y = np.zeros((120, 2), np.float32)
    Y[:, 0] = (X[:, 0] + 0.3 * rng.normal(size=120)) > 0
    Y[100:, 1] = 1                      # label 1 has positives only in val
    model, _, _ = fit_radiomics_baseline(X[:80], Y[:80], X[80:], Y[80:], "multilabel", RadiomicsConfig(selection="val"),
                                         label_names=["Effusion", "Hernia"])
    scores = model.predict_scores(X[80:])
    assert scores.shape == (40, 2) and np.all(scores[:, 1] == 0.0)
    assert any("Hernia: only negative cases in the training subset" in n for n in model.notes)


def test_multiclass_one_vs_rest_rows_sum_to_one_and_is_deterministic():
    rng = np.random.default_rng(15)
    y = rng.integers(0, 3, 240)
    X = rng.normal(size=(240, 8))
    X[np.arange(240), y] += 1.5
    rcfg = RadiomicsConfig(penalty="elasticnet", l1_ratio=0.5, selection="grouped_cv", c_grid=[0.1, 1.0])
    runs = [fit_radiomics_baseline(X[:160], y[:160], X[160:], y[160:], "multiclass", rcfg, seed=3, n_outputs=3)
            for _ in range(2)]
    a, b = (m.predict_scores(X[160:]) for m, _, _ in runs)
    assert a.shape == (80, 3) and np.allclose(a.sum(1), 1.0)
    assert np.array_equal(a, b) and runs[0][1] == runs[1][1]
    assert (a.argmax(1) == y[160:]).mean() > 0.6


def test_all_constant_features_is_a_one_line_data_error():
    X = np.ones((20, 4))
    y = (np.arange(20) % 2).astype(np.float32)[:, None]
    with pytest.raises(DataError, match="every feature is empty or constant"):
        fit_radiomics_baseline(X, y, X, y, "binary", RadiomicsConfig(selection="val"))

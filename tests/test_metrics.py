import numpy as np
import pytest

from medtransfer.evaluate import score_metrics


def test_label_without_positives_is_null_with_reason():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=np.float32)
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.5], [0.1, 0.2]])
    m = score_metrics(y, s, "multilabel", ["Effusion", "Hernia"])
    assert m.auroc["Effusion"] == pytest.approx(1.0)
    assert m.auroc["Hernia"] is None
    assert "no positive" in m.undefined["Hernia"]
    assert m.auroc_macro == pytest.approx(1.0)


def test_multiclass_is_one_vs_rest():
    y = np.array([0, 1, 2, 2])
    s = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    m = score_metrics(y, s, "multiclass", ["KL0", "KL1", "KL2"])
    assert set(m.auroc) == {"KL0", "KL1", "KL2"}
    assert m.accuracy == pytest.approx(1.0)
    assert m.auroc_macro == pytest.approx(1.0)


def test_imperfect_binary_auroc_matches_hand_count():
    y = np.array([[0], [0], [1], [1]], dtype=np.float32)
    s = np.array([[0.1], [0.6], [0.4], [0.9]])
    # pairs (pos, neg): (0.4,0.1) ok, (0.4,0.6) wrong, (0.9,*) ok -> 3/4
    assert score_metrics(y, s, "binary", ["Pneumonia"]).auroc_macro == pytest.approx(0.75)

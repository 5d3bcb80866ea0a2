"""Scores in predictions_*.csv round-trip exactly, so AUROCs read back from the file equal metrics.json."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medtransfer.runs.scoring import write_predictions


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scores_round_trip_and_keep_their_ranking(tmp_path, dtype):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400).astype(float)
    # a confident model: most scores below 1e-6, where six decimals would make them all tie at 0
    scores = (10.0 ** rng.uniform(-9, -6, 400) * (1 + labels)).astype(dtype)[:, None]
    path = tmp_path / "predictions_test.csv"
    write_predictions(path, [f"img{i}" for i in range(400)], labels[:, None], scores, ["finding"], "binary")
    back = pd.read_csv(path)["score_finding"].to_numpy()
    assert np.array_equal(back.astype(dtype), scores[:, 0])
    assert roc_auc_score(labels, back) == roc_auc_score(labels, scores[:, 0])
    assert roc_auc_score(labels, np.round(scores[:, 0], 6)) != roc_auc_score(labels, scores[:, 0])  # what 6 decimals did

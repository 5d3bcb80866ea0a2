"""The report's paired DeLong names its test: clustered by patient wherever the predictions carry patient ids
(every task kind, not only one label), unclustered without them, and 'clustered bootstrap only' when a
clustered DeLong cannot be made."""
import numpy as np
import pandas as pd
import pytest

from medtransfer.evaluate.delong import delong_paired_macro, delong_paired_macro_clustered
from medtransfer.report.paired import BOOTSTRAP_ONLY, CLUSTERED, UNCLUSTERED, paired_delong
from medtransfer.report.versus import delong_tests

FINDINGS = ["a", "b", "c"]


def _write(folder, y, scores, patients):
    folder.mkdir()
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(y))]})
    if patients is not None:
        frame["patient_id"] = patients
    for j, f in enumerate(FINDINGS):
        frame[f"true_{f}"] = y[:, j]
        frame[f"score_{f}"] = scores[:, j]
    frame.to_csv(folder / "predictions_test.csv", index=False)


def _study(tmp_path, patients):
    rng = np.random.default_rng(1)
    owner = np.repeat(np.arange(60), 3)
    y = (rng.random((60, 3)) < 0.4)[owner].astype(int)
    a = y + rng.normal(0, 1, (60, 3))[owner] + rng.normal(0, 0.5, y.shape)
    b = y + rng.normal(0, 0.8, y.shape)
    ids = None if patients is None else [patients(k) for k in owner]
    _write(tmp_path / "ra", y, a, ids)
    _write(tmp_path / "rb", y, b, ids)
    return y, a, b, owner


def test_multilabel_with_patient_ids_is_clustered(tmp_path):
    y, a, b, owner = _study(tmp_path, lambda k: f"P{k:03d}")
    got = paired_delong(tmp_path, "ra", "rb", "multilabel")
    want = delong_paired_macro_clustered(y, a, b, np.array([f"P{k:03d}" for k in owner]))
    assert got["test"] == CLUSTERED and got["n_labels"] == 3
    assert got["se"] == pytest.approx(want["se"], rel=1e-9)
    assert got["se"] > delong_paired_macro(y, a, b)["se"]
    assert delong_tests([{"tests": {"200": [got, {"p_value": None, "note": "x"}]}}]) == [CLUSTERED]


def test_without_patient_ids_it_says_one_image_per_patient(tmp_path):
    _study(tmp_path, None)
    assert paired_delong(tmp_path, "ra", "rb", "multilabel")["test"] == UNCLUSTERED


def test_missing_patient_ids_leave_the_clustered_bootstrap_only(tmp_path):
    _study(tmp_path, lambda k: "" if k == 5 else f"P{k:03d}")
    got = paired_delong(tmp_path, "ra", "rb", "multilabel")
    assert got["p_value"] is None and got["test"] == BOOTSTRAP_ONLY and BOOTSTRAP_ONLY in got["note"]

"""Seed statistics and redaction used by the study report."""
import math

import numpy as np
import pytest
from scipy import stats

from medtransfer.evaluate.summary import diff_ci, mean_ci
from medtransfer.report.redact import REDACTED, redact, short_reason


def test_mean_ci_is_the_student_t_interval():
    values = [0.71, 0.74, 0.78, 0.69, 0.75]
    got = mean_ci(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert got.n == 5 and got.mean == pytest.approx(np.mean(values)) and got.sd == pytest.approx(np.std(values, ddof=1))
    assert (got.low, got.high) == pytest.approx((low, high))
    assert mean_ci(values, level=0.9).high < got.high


def test_mean_ci_one_value_has_no_interval_and_nan_is_ignored():
    one = mean_ci([0.8, float("nan"), None])
    assert one.n == 1 and one.mean == 0.8 and math.isnan(one.sd) and math.isnan(one.low) and math.isnan(one.high)
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)


def test_diff_ci_is_welch():
    a, b = [0.80, 0.82, 0.85], [0.70, 0.75, 0.71, 0.69]
    got = diff_ci(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got.mean == pytest.approx(np.mean(a) - np.mean(b))
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high))
    single = diff_ci([0.8], b)
    assert single.mean == pytest.approx(0.8 - np.mean(b)) and math.isnan(single.low)
    same = diff_ci([0.8, 0.8], [0.7, 0.7])
    assert (same.low, same.high) == pytest.approx((0.1, 0.1))


@pytest.mark.parametrize("text", [
    "cannot decode /data/nih14-mini/images/00000001_000.png",
    "bad file 'images/9001695L.png' in labels.csv",
    "Patient ID: 30805 has no images",
    "patient_id=P00123 appears twice",
    "image train/17 is empty",
    "knee 9001695 missing",
])
def test_redact_removes_image_and_patient_ids(text):
    out = redact(text)
    assert REDACTED in out
    for token in ("00000001", "9001695", "30805", "P00123", "train/17"):
        assert token not in out


def test_redact_keeps_what_the_user_needs():
    msg = "WeightsUnavailable: place resnet18-f37072fd.pth in ~/.cache/torch/hub/checkpoints (N=2000, epoch 12)"
    assert redact(msg) == msg
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 3\nTrainingDiverged: loss is NaN at epoch 4"
    assert short_reason(tb) == "TrainingDiverged: loss is NaN at epoch 4"
    assert short_reason(None) == "(no reason recorded)"
    assert len(short_reason("x" * 1000)) == 240

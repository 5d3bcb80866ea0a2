"""answer.json's learning-curve crossover: a radiomics curve that cannot be fitted (flat, or < 3 N) is
compared through its per-N values, never dropped; only a CNN curve that cannot be fitted gives no answer, and an
N between studied sizes is read off a curve only when its held-out check passed."""
from types import SimpleNamespace

import numpy as np
import pandas as pd

from medtransfer.report.answer import _crossing, _curve_answer

NS = [50.0, 200.0, 800.0, 3200.0]
NO_DRAWS = SimpleNamespace(row_draws={})


def _rows(ns, aurocs):
    return [pd.Series({"N": n, "test_auroc_mean": a}, name=i) for i, (n, a) in enumerate(zip(ns, aurocs))]


def _cnn():
    curve, model = _curve_answer(_rows(NS, [0.95 - 1.2 * n ** -0.5 for n in NS]), NO_DRAWS, [])
    assert curve["fitted"]
    return model


def test_a_flat_radiomics_curve_still_gives_the_crossover_n():
    curve, base = _curve_answer(_rows(NS, [0.80, 0.79, 0.80, 0.80]), NO_DRAWS, [])
    assert not curve["fitted"] and curve["refused"]                 # flat: no radiomics curve to extrapolate
    got = _crossing(_cnn(), base)
    assert "refused" not in got and "per-N values" in got["radiomics_side"]   # compared, not dropped
    # the CNN curve crosses between N = 50 and 200 (0.780 -> 0.865), but without bootstrap draws its held-out
    # check cannot run, so no N is read off it even between studied sizes (issue 23): the reason instead
    assert got["matches_from_N"] is None and "between the studied N" in got["match_note"]
    assert "held-out" in got["match_note"]


def test_radiomics_at_two_sizes_is_compared_through_its_values():
    curve, base = _curve_answer(_rows(NS[:2], [0.80, 0.80]), NO_DRAWS, [])
    assert not curve["fitted"] and "needs 3" in curve["refused"]
    got = _crossing(_cnn(), base)
    assert "per-N values" in got["radiomics_side"] and "held-out" in got["match_note"]


def test_a_cnn_without_a_curve_is_refused_with_its_reason():
    _, cnn = _curve_answer(_rows(NS[:2], [0.70, 0.80]), NO_DRAWS, [])
    _, base = _curve_answer(_rows(NS, [0.80, 0.79, 0.80, 0.80]), NO_DRAWS, [])
    got = _crossing(cnn, base)
    assert got["refused"].startswith("no learning-curve fit for the CNN") and "needs at least 3" in got["refused"]
    assert np.isnan(cnn.fit.a)

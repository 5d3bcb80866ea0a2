"""Issue 23 item 5: learning curves you can lean on.

A curve through as many sizes as it has parameters predicts nothing beyond them; the curve refitted without
the largest N must predict the value measured there (inside its prediction interval) before anything is
extrapolated; and the fit weights each per-N AUROC by 1 / its variance.
"""
import math
import sys

import numpy as np
import pandas as pd
import pytest

from medtransfer.evaluate.learning_curve import (
    EXACT_REASON, UNWEIGHTED, crossover_n, fit_curve, fit_power_law, gated_curve, holdout_check,
    inverse_variance_weights)

NS = np.array([50, 100, 200, 400, 800, 1600], dtype=float)


def law(n, a=0.95, b=0.9, c=0.45):
    return a - b * np.asarray(n, dtype=float) ** -c


def draws_around(measured, sds, n_boot=200, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(measured)[:, None] + rng.normal(0, 1, (len(measured), n_boot)) * np.asarray(sds)[:, None]


# ---------------------------------------------------------------------------------------------- exact fit
def test_three_sizes_fit_exactly_and_nothing_beyond_them_is_given():
    ns, y = [50, 200, 800], [0.776, 0.873, 0.918]
    model = gated_curve(ns, y, draws_around(y, [0.01] * 3))
    assert model.fit.ok and model.fit.exact_fit and model.blocked == EXACT_REASON
    beyond = model.predict(1600)
    assert math.isnan(beyond.estimate) and beyond.reason.endswith(EXACT_REASON)
    target = model.n_for_target(0.95)               # only reachable (if at all) beyond the studied N
    assert math.isnan(target.estimate) and EXACT_REASON in target.reason
    inside = model.n_for_target(0.85)               # between 50 and 200: an interpolation, kept
    assert 50 < inside.estimate < 200 and inside.reason is None
    assert not (inside.high > 800)                  # an interval end beyond the studied N is not shown either


def test_a_blocked_curve_gives_no_crossover_beyond_the_studied_n():
    ns = [50, 200, 800]
    cnn = fit_curve(ns, [0.70, 0.80, 0.84], draws_around([0.70, 0.80, 0.84], [0.01] * 3, seed=1))
    base = fit_curve(ns, [0.86, 0.861, 0.862], draws_around([0.86, 0.861, 0.862], [0.01] * 3, seed=2))
    got = crossover_n(cnn, base)
    assert got.blocked == EXACT_REASON and got.match_n is None
    assert "not within the studied N" in got.match_reason and EXACT_REASON in got.match_reason


# ---------------------------------------------------------------------------------------------- the gate
def test_gate_blocks_extrapolation_when_the_held_out_point_misses():
    y = law(NS)
    y[-1] -= 0.03                                   # the largest N falls short of what the curve promises
    draws = draws_around(y, [0.003] * len(NS), seed=3)
    check = holdout_check(NS, y, draws)
    assert check.ok and check.covered is False and not check.interval[0] <= check.measured <= check.interval[1]
    model = gated_curve(NS, y, draws)
    assert model.fit.ok and model.blocked and "was measured" in model.blocked
    assert math.isnan(model.predict(3200).estimate) and "not extrapolated" in model.predict(3200).reason
    assert math.isnan(model.n_for_target(model.fit.a - 1e-4).estimate)   # reached only beyond N = 1600
    assert model.predict(300).reason is None        # inside the studied N the curve still answers


def test_gate_lets_a_curve_that_predicts_its_held_out_point_extrapolate():
    y = law(NS) + np.random.default_rng(5).normal(0, 0.002, len(NS))
    model = gated_curve(NS, y, draws_around(y, [0.004] * len(NS), seed=6))
    assert model.holdout.covered is True and model.blocked is None
    at_2x = model.predict(3200)
    assert at_2x.reason is None and at_2x.extrapolated and abs(at_2x.estimate - law(3200)) < 0.02


def test_gate_without_draws_has_no_interval_and_blocks():
    model = fit_curve(NS, law(NS), gate=True)
    assert model.holdout.covered is None and "no prediction interval" in model.blocked
    assert model.holdout.error == pytest.approx(0, abs=1e-6)   # the check itself still runs


# ---------------------------------------------------------------------------------------------- weighting
def test_weighted_fit_differs_from_unweighted_when_variances_differ_and_equals_it_when_equal():
    y = law(NS) + np.array([0.03, -0.01, 0.0, 0.004, -0.002, 0.001])
    unequal = draws_around(y, [0.05, 0.03, 0.01, 0.005, 0.004, 0.003], seed=7)
    weights, how = inverse_variance_weights(unequal)
    assert "bootstrap draws" in how and weights[0] < weights[-1]
    plain = fit_power_law(NS, y)
    weighted = fit_power_law(NS, y, weights)
    assert abs(weighted.c - plain.c) > 1e-3
    equal, _ = inverse_variance_weights(None, y - 0.02, y + 0.02)      # the same interval at every N
    same = fit_power_law(NS, y, equal)
    np.testing.assert_allclose([same.a, same.b, same.c], [plain.a, plain.b, plain.c], rtol=1e-6)


def test_unknown_variances_fall_back_to_unweighted_and_say_so():
    weights, how = inverse_variance_weights(None)
    assert weights is None and how == UNWEIGHTED
    model = gated_curve(NS, law(NS))
    assert model.weighting == UNWEIGHTED


# ---------------------------------------------------------------------------------------------- the backtest
def _backtest_module():
    """benchmarks/ is not a package: load the script by its path."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_curve_backtest.py"
    spec = importlib.util.spec_from_file_location("learning_curve_backtest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_backtest_on_a_synthetic_study_predicts_n_max_and_says_why_short_curves_are_left_out():
    bt = _backtest_module()
    ns = np.array([50, 100, 200, 400, 800, 3200], dtype=float)      # N <= 800 = N_max / 4: 5 sizes to fit
    y = law(ns) + np.random.default_rng(11).normal(0, 0.002, len(ns))
    long = bt.Curve("synthetic / long", ns, y, y - 0.01, y + 0.01, draws_around(y, [0.004] * len(ns), seed=12))
    short = bt.Curve("synthetic / 3 N", ns[:3], y[:3], y[:3] - 0.01, y[:3] + 0.01, None)
    no_span = bt.Curve("synthetic / 4 N", ns[[0, 2, 3, 4]], y[[0, 2, 3, 4]], y[[0, 2, 3, 4]] - 0.01,
                       y[[0, 2, 3, 4]] + 0.01, None)     # N <= 200: 2 sizes, nothing to fit
    table = bt.backtest([long, short, no_span])
    first = table.iloc[0]
    assert pd.isna(first["reason"]) and first["abs_error"] < 0.02 and first["covered"] in (True, False)
    assert first["predicted"] == pytest.approx(law(3200), abs=0.02)
    assert "needs at least 4" in table.iloc[1]["reason"] and "needs 3 to fit" in table.iloc[2]["reason"]
    assert bt.summary_line(table).startswith("1 of 3 curves backtested")
    assert bt.summary_line(table.iloc[1:]).startswith("no curve of the 2 has enough N")
    assert "not backtested" in bt.markdown(table)

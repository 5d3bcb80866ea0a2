"""Crossover N of a CNN against a baseline, on constructed learning curves with known answers."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtransfer.errors import DataError
from medtransfer.evaluate.crossover import crossing, crossover, outcome_text, seed_summary
from medtransfer.kinds import CrossoverOutcome

ALREADY, NEVER = CrossoverOutcome.ALREADY, CrossoverOutcome.NEVER

NS = [50, 100, 200, 400, 800, 1600, 3200]


def _curves(diff_of_n, ns=NS, offsets=(-0.01, 0.0, 0.01), base=0.70):
    """Baseline AUROC per seed, and CNN = baseline + diff(N) + the seed's offset."""
    cnn, ref = [], []
    for n in ns:
        for seed, off in enumerate(offsets):
            b = base + 0.004 * seed + 0.01 * math.log(n)
            ref.append({"N": n, "seed": seed, "auroc": b})
            cnn.append({"N": n, "seed": seed, "auroc": b + diff_of_n(n) + off})
    return pd.DataFrame(cnn), pd.DataFrame(ref)


def test_linear_in_log_n_gives_the_exact_crossings():
    """d(N) = 0.02 ln(N / 500) + seed offsets (-0.01, 0, +0.01): sd = 0.01 at every N, so the 95% bounds are
    d +- h with h = t(0.975, 2) 0.01 / sqrt(3), straight lines in ln N, and interpolation is exact:
    comparable where d + h = 0 -> N = 500 exp(-h / 0.02) (~144); outperforms where d - h = 0 -> 500 exp(h / 0.02)."""
    cnn, ref = _curves(lambda n: 0.02 * math.log(n / 500))
    got = crossover(cnn, ref, n_boot=300)
    h = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert got["method"] == "seeds"
    assert got["comparable_n"] == pytest.approx(500 * math.exp(-h / 0.02), rel=1e-9)
    assert got["outperform_n"] == pytest.approx(500 * math.exp(h / 0.02), rel=1e-9)
    assert 100 < got["comparable_n"] < 200 and 1600 < got["outperform_n"] < 3200
    assert got["comparable_reason"] is None and got["outperform_reason"] is None
    per_n = got["per_n"]
    assert list(per_n["N"]) == NS and (per_n["n_pairs"] == 3).all()
    np.testing.assert_allclose(per_n["diff_mean"], [0.02 * math.log(n / 500) for n in NS], atol=1e-12)
    np.testing.assert_allclose(per_n["diff_ci_high"] - per_n["diff_mean"], h, atol=1e-12)
    assert "log N" in got["definition"] and "paired by seed" in got["definition"]


def test_ranges_bracket_the_estimate_and_widen_with_seed_noise():
    rng = np.random.default_rng(0)
    small = crossover(*_curves(lambda n: 0.02 * math.log(n / 500), offsets=rng.normal(0, 0.004, 5)), n_boot=500)
    large = crossover(*_curves(lambda n: 0.02 * math.log(n / 500), offsets=rng.normal(0, 0.012, 5)), n_boot=500)
    for got in (small, large):
        for key in ("comparable", "outperform"):
            low, high = got[f"{key}_n_ci"]
            assert low is not None and high is not None and low <= got[f"{key}_n"] <= high
    width = {k: math.log(g["outperform_n_ci"][1] / g["outperform_n_ci"][0]) for k, g in (("s", small), ("l", large))}
    assert width["l"] > width["s"]
    assert crossover(*_curves(lambda n: 0.02 * math.log(n / 500)), n_boot=500, seed=3)["comparable_n_ci"] == \
        crossover(*_curves(lambda n: 0.02 * math.log(n / 500)), n_boot=500, seed=3)["comparable_n_ci"]


def test_no_crossing_within_the_studied_n():
    below = crossover(*_curves(lambda n: -0.10), n_boot=100)
    assert below["comparable_n"] is None and below["comparable_reason"] == NEVER
    assert below["outperform_n"] is None and below["outperform_reason"] == NEVER
    above = crossover(*_curves(lambda n: 0.10), n_boot=100)
    assert above["comparable_n"] is None and above["comparable_reason"] == ALREADY
    assert above["outperform_reason"] == ALREADY and above["comparable_n_ci"] is None
    # comparable from the start (never significantly below) but never significantly above
    level = crossover(*_curves(lambda n: 0.0), n_boot=100)
    assert level["comparable_reason"] == ALREADY and level["outperform_reason"] == NEVER


def test_the_last_crossing_counts_when_the_curve_dips_again():
    """Identical seed offsets -> zero-width intervals: the bounds are the mean difference itself.
    d = -0.05, +0.01, -0.03, +0.02, +0.04 at N = 100 ... 1600: comparable only from between 400 and 800,
    at t = 0.03 / 0.05 = 0.6 of the way in log N: 400 * 2 ** 0.6."""
    ns = [100, 200, 400, 800, 1600]
    d = dict(zip(ns, [-0.05, 0.01, -0.03, 0.02, 0.04]))
    got = crossover(*_curves(d.get, ns=ns, offsets=(0.0, 0.0, 0.0)), n_boot=100)
    assert got["comparable_n"] == pytest.approx(400 * 2 ** 0.6)
    assert got["outperform_n"] == pytest.approx(400 * 2 ** 0.6)
    assert got["comparable_n_ci"] == pytest.approx((400 * 2 ** 0.6, 400 * 2 ** 0.6))


def test_crossing_helper_strictness_and_nan():
    assert crossing([100, 200], [-0.01, 0.0], strict=False) == (pytest.approx(200.0), None)
    assert crossing([100, 200], [-0.01, 0.0], strict=True) == (None, NEVER)
    assert crossing([100, 200, 400], [-0.01, np.nan, 0.01], strict=True)[0] == pytest.approx(200.0)
    assert crossing([100], [np.nan], strict=True) == (None, CrossoverOutcome.NO_INTERVAL)
    assert outcome_text(CrossoverOutcome.NO_INTERVAL) == "no interval at any N"


def test_open_ended_range_when_resamples_cross_outside_the_studied_n():
    """Crossing just above the smallest N with noisy seeds: some resamples are comparable from the start."""
    rng = np.random.default_rng(2)
    got = crossover(*_curves(lambda n: 0.03 * math.log(n / 100), offsets=rng.normal(0, 0.02, 4)), n_boot=500)
    assert 50 < got["comparable_n"] < 100
    assert got["comparable_n"] is not None and got["comparable_n_ci"][0] is None
    assert got["comparable_n_ci"][1] > got["comparable_n"]


def test_two_seeds_give_no_range_and_one_seed_uses_delong():
    two = crossover(*_curves(lambda n: 0.02 * math.log(n / 500), offsets=(-0.001, 0.001)), n_boot=100)
    assert two["comparable_n"] is not None and two["comparable_n_ci"] is None and "2 seeds" in two["ci_note"]
    cnn, ref = _curves(lambda n: 0.02 * math.log(n / 500), offsets=(0.0,))
    none = crossover(cnn, ref)
    assert none["method"] is None and none["comparable_n"] is None and none["comparable_reason"] is CrossoverOutcome.NO_TEST
    assert "no test" in outcome_text(none["comparable_reason"])
    d = pd.DataFrame({"N": NS, "ci_low": [0.02 * math.log(n / 500) - 0.02 for n in NS],
                      "ci_high": [0.02 * math.log(n / 500) + 0.02 for n in NS]})
    got = crossover(cnn, ref, delong=d)
    assert got["method"] == "delong" and "DeLong" in got["definition"]
    assert got["comparable_n"] == pytest.approx(500 / math.e) and got["outperform_n"] == pytest.approx(500 * math.e)
    assert got["comparable_n_ci"] is None and "one seed" in got["ci_note"]


def test_pairing_uses_only_seeds_run_by_both():
    cnn, ref = _curves(lambda n: 0.0)
    ref = ref[~((ref["N"] == 50) & (ref["seed"] == 2))]
    cnn.loc[(cnn["N"] == 100) & (cnn["seed"] == 1), "auroc"] = np.nan      # a run without a test AUROC
    per_n = crossover(cnn, ref, n_boot=50)["per_n"].set_index("N")
    assert per_n.loc[50, "n_pairs"] == 2 and per_n.loc[100, "n_pairs"] == 2 and per_n.loc[200, "n_pairs"] == 3
    empty = crossover(cnn[cnn["N"] == 50], ref[ref["N"] == 100])
    assert empty["comparable_n"] is None and empty["comparable_reason"] is CrossoverOutcome.NO_PAIRS
    assert "no (N, seed)" in outcome_text(empty["comparable_reason"])


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.drop(columns="seed"), "missing column 'seed'"),
    (lambda c: pd.concat([c, c.iloc[:1]]), "more than one row"),
    (lambda c: c.assign(N=0), "must be positive"),
])
def test_bad_curves_raise_one_line_data_errors(mutate, message):
    cnn, ref = _curves(lambda n: 0.0)
    with pytest.raises(DataError, match=message) as err:
        crossover(mutate(cnn), ref)
    assert "\n" not in str(err.value)


def test_seed_summary_is_the_t_interval():
    values = [0.71, 0.74, 0.78]
    got = seed_summary(values)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert got["n"] == 3 and got["mean"] == pytest.approx(np.mean(values)) and got["sd"] == pytest.approx(
        np.std(values, ddof=1))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
    one = seed_summary([0.8])
    assert one["n"] == 1 and math.isnan(one["sd"]) and math.isnan(one["ci_low"])

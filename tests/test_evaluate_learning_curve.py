"""Learning-curve model AUROC(N) = a - b N^-c: recovery of known curves, refusals, intervals, crossover, hold-out."""
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from medtransfer.errors import DataError
from medtransfer.evaluate.learning_curve import (
    METHOD, CurveModel, PowerLawFit, crossover_n, fit_curve, fit_power_law, holdout_check)

NS = np.array([50, 100, 200, 400, 800, 1600], dtype=float)
TRUE = (0.95, 0.9, 0.45)

# A real medtransfer study: PneumoniaMNIST target, ResNet-18 at 32 px, test AUROC (mean over seeds).
STUDY_NS = [50, 200, 800]
STUDY = {"scratch": [0.776, 0.873, 0.918], "source:chest": [0.842, 0.899, 0.932]}


def law(n, a=TRUE[0], b=TRUE[1], c=TRUE[2]):
    return a - b * np.asarray(n, dtype=float) ** -c


def noisy(rng, sd, n_boot, ns=NS, shared_sd=0.0, **params):
    """Measured AUROCs = truth + noise, and bootstrap columns scattered around the measurement the same way."""
    truth = law(ns, **params)
    measured = truth + rng.normal(0, sd, len(ns))
    draws = measured[:, None] + rng.normal(0, sd, (len(ns), n_boot)) + rng.normal(0, shared_sd, n_boot)
    return measured, draws


def closed_form_three(y):
    """Exact a and c through 3 sizes spaced by a factor 4: rises g1, g2 give 4^-c = g2 / g1."""
    g1, g2 = y[1] - y[0], y[2] - y[1]
    r = g2 / g1
    return y[2] + g2 * r / (1 - r), -math.log(r) / math.log(4)


# ---------------------------------------------------------------------------------------------- (a) recovery
def test_recovers_a_known_power_law_from_slightly_noisy_points():
    y = law(NS) + np.random.default_rng(0).normal(0, 1e-4, len(NS))
    fit = fit_power_law(NS, y)
    assert fit.ok and fit.reason is None and not fit.exact_fit and fit.bounds_hit == ()
    assert fit.a == pytest.approx(0.95, abs=2e-3)
    assert fit.b == pytest.approx(0.9, rel=2e-2)
    assert fit.c == pytest.approx(0.45, abs=5e-3)
    assert fit.rmse < 2e-4 and fit.r2 > 0.999 and fit.n_points == 6
    exact = fit_power_law(NS, law(NS))
    np.testing.assert_allclose([exact.a, exact.b, exact.c], TRUE, rtol=1e-6)
    assert exact(400) == pytest.approx(law(400), abs=1e-9)


def test_weights_pull_the_fit_towards_the_heavier_points():
    y = law(NS)
    y[0] += 0.03                                      # one bad point at the smallest N
    light = fit_power_law(NS, y, weights=[1e-4, 1, 1, 1, 1, 1])
    plain = fit_power_law(NS, y)
    assert abs(light.c - 0.45) < abs(plain.c - 0.45) and abs(light.c - 0.45) < 5e-3


def test_repeated_sizes_fit_like_their_means():
    seeds = np.array([-0.01, 0.0, 0.01])
    ns = np.repeat(NS, 3)
    y = law(ns) + np.tile(seeds, len(NS))
    fit = fit_power_law(ns, y)
    assert fit.ok and fit.n_points == 18
    np.testing.assert_allclose([fit.a, fit.b, fit.c], TRUE, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- (b) inversion
def test_n_for_target_inverts_predict():
    model = fit_curve(NS, law(NS))
    for n in (30.0, 75.0, 640.0, 5000.0):
        assert model.n_for_target(model.predict(n).estimate).estimate == pytest.approx(n, rel=1e-8)
    for t in (0.80, 0.88, 0.93):
        got = model.n_for_target(t)
        assert got.reason is None and model.predict(got.estimate).estimate == pytest.approx(t, abs=1e-10)
        assert got.estimate == pytest.approx((0.9 / (0.95 - t)) ** (1 / 0.45), rel=1e-6)
    assert not model.n_for_target(0.88).extrapolated and model.n_for_target(0.93).extrapolated
    assert model.predict(400).extrapolated is False and model.predict(1601).extrapolated is True
    assert model.predict(49).extrapolated is True


def test_a_target_above_the_asymptote_is_refused_with_the_share_of_draws_that_reach_it():
    rng = np.random.default_rng(5)
    measured, draws = noisy(rng, 0.01, 200)
    model = fit_curve(NS, measured, draws)
    above = model.n_for_target(model.fit.a + 0.005)
    assert math.isnan(above.estimate) and "not reachable" in above.reason and f"{model.fit.a:.3f}" in above.reason
    assert above.reachable_fraction == pytest.approx(np.mean(model.draw_params[:, 0] > model.fit.a + 0.005))
    assert 0 < above.reachable_fraction < 1
    reachable = model.n_for_target(0.90)
    assert reachable.reason is None and reachable.low <= reachable.estimate <= reachable.high


# ---------------------------------------------------------------------------------------------- (c) refusals
def test_refuses_two_sizes():
    fit = fit_power_law([50, 200, 50], [0.7, 0.8, 0.71])
    assert not fit.ok and "2 distinct" in fit.reason and math.isnan(fit.a)


@pytest.mark.parametrize("y", [np.full(6, 0.8), 0.9 - 0.01 * np.log(NS), law(NS)[::-1]],
                         ids=["flat", "falling", "reversed"])
def test_refuses_flat_or_falling_curves(y):
    fit = fit_power_law(NS, y)
    assert not fit.ok and "does not rise" in fit.reason


def test_refuses_a_poor_fit_to_scattered_points():
    fit = fit_power_law(NS, [0.70, 0.80, 0.75, 0.85, 0.78, 0.86])
    assert not fit.ok and fit.reason.startswith("poor fit") and fit.r2 < 0.8
    model = fit_curve(NS, [0.70, 0.80, 0.75, 0.85, 0.78, 0.86])
    assert "poor fit" in model.predict(400).reason and math.isnan(model.predict(400).estimate)


def test_three_sizes_fit_exactly_when_concave_and_are_refused_otherwise():
    y = law([50, 200, 800])
    fit = fit_power_law([50, 200, 800], y)
    assert fit.ok and fit.exact_fit and fit.rmse < 1e-9
    np.testing.assert_allclose([fit.a, fit.b, fit.c], TRUE, rtol=1e-6)
    convex = fit_power_law([50, 200, 800], [0.70, 0.72, 0.80])        # rises faster at larger N: no power law
    assert not convex.ok and "not concave" in convex.reason


def test_bad_inputs_are_one_line_data_errors():
    with pytest.raises(DataError, match="aurocs"):
        fit_power_law([50, 100, 200], [0.7, 0.8])
    with pytest.raises(DataError, match="ns"):
        fit_power_law([0, 100, 200], [0.7, 0.8, 0.9])
    with pytest.raises(DataError, match="aurocs"):
        fit_power_law([50, 100, 200], [0.7, 1.2, 0.9])
    with pytest.raises(DataError, match="draws"):
        fit_curve(NS, law(NS), draws=np.zeros((5, 10)))
    with pytest.raises(DataError, match="weights"):
        fit_power_law(NS, law(NS), weights=[1, 1, 1, -1, 1, 1])


# ---------------------------------------------------------------------------------------------- (d) intervals
def test_intervals_contain_the_truth_on_noisy_curves():
    """Noise sd 0.01 per N: the 95% percentile intervals cover the true curve in most of 12 simulated studies."""
    rng = np.random.default_rng(11)
    covered = {400.0: 0, 3200.0: 0, "n_for_0.88": 0}
    n_true = (0.9 / (0.95 - 0.88)) ** (1 / 0.45)
    for _ in range(12):
        model = fit_curve(NS, *noisy(rng, 0.01, 100))
        assert model.fit.ok and model.n_draws == 100 and model.n_failed == 0
        for n in (400.0, 3200.0):
            got = model.predict(n)
            assert got.low <= got.estimate <= got.high
            covered[n] += got.low <= law(n) <= got.high
        target = model.n_for_target(0.88)
        covered["n_for_0.88"] += target.low <= n_true <= target.high
    assert min(covered.values()) >= 9, covered


def test_wider_noise_gives_wider_intervals_and_failed_columns_are_counted():
    rng = np.random.default_rng(2)
    narrow = fit_curve(NS, *noisy(rng, 0.002, 100))
    measured, draws = noisy(rng, 0.01, 100)
    draws[2, :7] = np.nan                             # seven bootstrap columns that produced no AUROC at N=200
    wide = fit_curve(NS, measured, draws)
    assert wide.n_failed == 7 and np.isnan(wide.draw_params[:7]).all() and np.isfinite(wide.draw_params[7:]).all()
    width = {k: m.predict(3200).high - m.predict(3200).low for k, m in (("n", narrow), ("w", wide))}
    assert width["w"] > 2 * width["n"]
    beyond = wide.predict_beyond()
    assert list(beyond) == [2.0, 4.0] and all(e.extrapolated for e in beyond.values())
    assert beyond[2.0].estimate == wide.predict(3200).estimate


def test_no_draws_gives_no_interval():
    got = fit_curve(NS, law(NS)).predict(3200)
    assert got.estimate == pytest.approx(law(3200)) and math.isnan(got.low) and math.isnan(got.high)


# ---------------------------------------------------------------------------------------------- crossover
BASE = dict(a=0.86, b=0.3, c=0.5)


def test_crossover_matches_where_the_two_curves_meet():
    n_true = brentq(lambda n: law(n) - law(n, **BASE), 50, 200)
    got = crossover_n(fit_curve(NS, law(NS)), fit_curve(NS, law(NS, **BASE)))
    assert got.baseline == "curve" and got.match_n == pytest.approx(n_true, rel=1e-3)
    assert got.match_extrapolated is False and got.match_reason is None
    assert got.beat_n is None and "no bootstrap draws" in got.beat_reason


def test_paired_draws_let_the_cnn_win_sooner_than_unpaired_ones():
    """Both curves share each column's luck (same test images, sd 0.02); pairing cancels it, shuffling does not."""
    rng = np.random.default_rng(3)
    shared = rng.normal(0, 0.02, 200)
    cnn_draws = law(NS)[:, None] + shared + rng.normal(0, 0.002, (6, 200))
    base_draws = law(NS, **BASE)[:, None] + shared + rng.normal(0, 0.002, (6, 200))
    cnn = fit_curve(NS, law(NS), cnn_draws)
    base = fit_curve(NS, law(NS, **BASE), base_draws)
    shuffled = fit_curve(NS, law(NS, **BASE), base_draws[:, rng.permutation(200)])
    paired = crossover_n(cnn, base)
    unpaired = crossover_n(cnn, shuffled, paired=False)
    assert paired.n_draws == 200 and paired.beat_reason is None and unpaired.beat_reason is None
    assert paired.match_n < paired.beat_n < unpaired.beat_n
    low, high = paired.match_range
    assert low <= paired.match_n <= high
    with pytest.raises(DataError, match="same bootstrap"):
        crossover_n(cnn, fit_curve(NS, law(NS, **BASE), base_draws[:, :150]))


def test_a_refused_baseline_is_used_through_its_per_n_values():
    flat = fit_curve(NS, np.full(6, 0.85))
    assert not flat.fit.ok
    got = crossover_n(fit_curve(NS, law(NS)), flat)
    assert got.baseline == "per-N values"
    assert got.match_n == pytest.approx((0.9 / (0.95 - 0.85)) ** (1 / 0.45), rel=1e-3)
    # a falling baseline keeps its best value (0.93 at N=50) at every larger N: the CNN must reach 0.93
    falling = fit_curve([50, 200, 800, 3200], [0.93, 0.92, 0.91, 0.90])
    got = crossover_n(fit_curve(NS, law(NS)), falling)
    assert got.match_n == pytest.approx((0.9 / 0.02) ** (1 / 0.45), rel=1e-3) and got.match_extrapolated


def test_crossover_without_a_cnn_curve_says_why():
    got = crossover_n(fit_curve([50, 200], [0.7, 0.8]), fit_curve(NS, law(NS, **BASE)))
    assert got.match_n is None and got.beat_n is None and "2 distinct" in got.match_reason


# ---------------------------------------------------------------------------------------------- (e) hold-out
def test_holdout_error_is_small_on_an_exact_power_law():
    check = holdout_check(NS, law(NS))
    assert check.ok and check.held_out_n == 1600 and check.measured == pytest.approx(law(1600))
    assert abs(check.error) < 1e-6 and check.predicted.extrapolated


def test_holdout_on_a_noisy_curve_reports_an_interval_and_refuses_three_sizes():
    rng = np.random.default_rng(4)
    measured, draws = noisy(rng, 0.005, 100)
    check = holdout_check(NS, measured, draws)
    assert check.ok and check.error == pytest.approx(check.predicted.estimate - measured[-1])
    assert check.predicted.low < check.predicted.high and check.fit.n_points == 5
    refused = holdout_check([50, 200, 800], [0.7, 0.8, 0.85])
    assert not refused.ok and "needs 4" in refused.reason and math.isnan(refused.error)


# ---------------------------------------------------------------------------------------------- (f) real study
@pytest.mark.parametrize("init", sorted(STUDY))
def test_real_study_curves_fit_exactly_and_refuse_to_extrapolate(init):
    """Issue 23: a 3-parameter curve through 3 sizes passes through them; it is kept (inside the studied N it
    interpolates) but predicts nothing beyond them: the reason instead of a number."""
    y = STUDY[init]
    model = fit_curve(STUDY_NS, y)
    fit = model.fit
    assert isinstance(model, CurveModel) and isinstance(fit, PowerLawFit)
    assert fit.ok and fit.exact_fit and fit.bounds_hit == ()
    a, c = closed_form_three(y)
    assert fit.a == pytest.approx(a, abs=1e-8) and fit.c == pytest.approx(c, abs=1e-8)
    for est in model.predict_beyond().values():
        assert math.isnan(est.estimate) and "as many parameters as points" in est.reason
    assert model.predict(400).estimate == pytest.approx(fit(400))


def test_real_study_pretraining_stays_ahead_of_scratch():
    scratch, source = (fit_curve(STUDY_NS, STUDY[k]) for k in ("scratch", "source:chest"))
    behind = crossover_n(scratch, source)
    assert behind.match_n is None and behind.match_reason.startswith("not within")
    ahead = crossover_n(source, scratch)
    assert ahead.match_n is None and ahead.match_reason.startswith("already")


def test_method_is_one_line_naming_the_model_and_its_uncertainty():
    assert "\n" not in METHOD and "a - b*N^-c" in METHOD and "bootstrap" in METHOD and "extrapolat" in METHOD


def test_n_for_a_target_just_under_a_flat_curves_asymptote_is_infinite_not_an_overflow():
    import math

    import numpy as np

    from medtransfer.evaluate.learning_curve import CurveModel, PowerLawFit

    fit = PowerLawFit(a=0.9, b=1.0, c=0.01, rmse=0.0, n_points=3, ok=True)
    model = CurveModel(fit, np.array([50.0, 200.0, 800.0]), np.array([0.5, 0.55, 0.6]))
    est = model.n_for_target(0.8999)   # (1 / 1e-4) ** 100 overflows a float
    assert math.isinf(est.estimate) and est.extrapolated and est.reason is None

"""advise names its pick as the study's report does (issue 23): the cheapest recipe within one standard error of
the best, never a name, and it says which recipes are within noise of the best."""
import math

import numpy as np

from medtransfer.advise.choice import ONE_SE_RULE, one_se_pick, paired_interval, standard_error
from medtransfer.advise.plan import Arm
from medtransfer.advise.search import SearchData, SplitArrays, Trial
from medtransfer.kinds import IMAGENET, SCRATCH, Strategy

EMPTY = SplitArrays(np.zeros((0, 4, 4), np.uint8), np.zeros(0), np.zeros(0))


def _cv_data(k=5):
    folds = tuple((np.arange(0), np.arange(0)) for _ in range(k))   # only their number is read
    return SearchData(EMPTY, EMPTY, "binary", ["finding"], folds=folds)


def _arm(strategy, init=IMAGENET, name="imagenet"):
    return Arm(name, init, "resnet18", Strategy(strategy), "constant")


def _trial(arm, folds, steps=40):
    return Trial(arm, 2, steps, 100, float(np.mean(folds)), 1.0, None, fold_auroc=tuple(folds))


def test_the_cheapest_recipe_within_one_se_is_named_and_the_far_one_is_not_within_noise():
    data = _cv_data()
    full = _trial(_arm("full"), [0.90, 0.80, 0.86, 0.78, 0.84])          # the best mean, 0.836
    frozen = _trial(_arm("frozen"), [0.85, 0.79, 0.84, 0.77, 0.82])      # 0.814: within 1 SE, cheaper
    scratch = _trial(_arm("full", SCRATCH, "scratch"), [0.60, 0.55, 0.58, 0.52, 0.57])
    order = {t.arm: i for i, t in enumerate([scratch, full, frozen])}   # scratch first: order never beats cost
    se, how = standard_error(data, full)
    assert "corrected" in how and full.val_auroc - se <= frozen.val_auroc
    choice = one_se_pick(data, [scratch, full, frozen], order)
    assert choice.best is full and choice.pick is frozen and choice.rule == ONE_SE_RULE
    assert choice.within_noise == (full, frozen)                         # scratch is separable from the best
    assert choice.noise_line == "2 of 3 recipes within noise of the best"
    d = paired_interval(data, scratch, full)
    assert d.separable and d.high < 0 and "Nadeau" in d.method


def test_a_clear_winner_is_the_pick_even_when_a_cheaper_recipe_exists():
    data = _cv_data()
    full = _trial(_arm("full"), [0.90, 0.91, 0.89, 0.90, 0.92])
    frozen = _trial(_arm("frozen"), [0.70, 0.72, 0.69, 0.71, 0.70])
    choice = one_se_pick(data, [frozen, full], {frozen.arm: 0, full.arm: 1})
    assert choice.pick is full and choice.within_noise == (full,)
    assert choice.rule.startswith("highest validation AUROC")


def test_on_a_validation_split_the_se_is_a_patient_bootstrap_and_ties_are_within_noise():
    rng = np.random.default_rng(0)
    y = (np.arange(40) % 2).astype(float)[:, None]     # the search's binary labels and scores are (n, 1)
    val = SplitArrays(np.zeros((40, 4, 4), np.uint8), y, np.arange(40) // 2)   # 2 images per patient
    data = SearchData(val, val, "binary", ["finding"])
    scores = y + rng.normal(scale=1.0, size=(40, 1))
    a = Trial(_arm("full"), 1, 10, 100, 0.0, 1.0, scores)
    b = Trial(_arm("gradual"), 1, 10, 100, 0.0, 1.0, scores + rng.normal(scale=0.05, size=(40, 1)))
    from medtransfer.evaluate.metrics import macro_auroc
    a = Trial(a.arm, 1, 10, 100, macro_auroc(y, a.val_scores, "binary"), 1.0, a.val_scores)
    b = Trial(b.arm, 1, 10, 100, macro_auroc(y, b.val_scores, "binary"), 1.0, b.val_scores)
    se, how = standard_error(data, a)
    assert how == "bootstrap over the validation patients" and 0.02 < se < 0.2
    choice = one_se_pick(data, [a, b], {a.arm: 0, b.arm: 1})
    assert choice.pick.arm.strategy == Strategy.GRADUAL          # the cheaper of two near-identical recipes
    assert len(choice.within_noise) == 2
    assert not paired_interval(data, a, b).separable


def test_without_scores_the_se_is_undefined_and_only_the_best_is_within_one_se():
    data = SearchData(EMPTY, EMPTY, "binary", ["finding"])
    a, b = Trial(_arm("full"), 1, 10, 100, 0.8, 1.0), Trial(_arm("frozen"), 1, 10, 100, 0.79, 1.0)
    se, _ = standard_error(data, a)
    assert math.isnan(se)
    choice = one_se_pick(data, [a, b], {a.arm: 0, b.arm: 1})
    assert choice.pick is a and choice.within_noise == (a, b)      # no interval: not separable
    assert choice.to_json()["se"] is None

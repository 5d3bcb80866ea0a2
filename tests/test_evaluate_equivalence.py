"""'Comparable' is equivalence within a margin (TOST), 'outperforms' a lower bound above 0, and Holm adjusts a
family of comparisons (issue 23 item 4)."""
import math

import numpy as np
import pytest

from medtransfer.errors import DataError
from medtransfer.evaluate.equivalence import (ABOVE, BELOW, COMPARABLE, NO_TEST, NOT_SHOWN_COMPARABLE, TOST_LEVEL,
                                              bootstrap_p_value, bracket, claim, holm, tost)


def test_a_90_percent_interval_inside_the_margin_is_comparable():
    assert TOST_LEVEL == pytest.approx(0.90)
    assert tost(-0.015, 0.012, margin=0.02) == COMPARABLE


def test_an_interval_wider_than_the_margin_is_not_shown_comparable_even_centred_on_zero():
    # the case: -0.099 [-0.44, +0.25] was called 'comparable' because it was not shown worse
    assert tost(-0.44, 0.25, margin=0.02) == NOT_SHOWN_COMPARABLE
    assert tost(-0.03, 0.03, margin=0.02) == NOT_SHOWN_COMPARABLE
    assert tost(-0.001, 0.021, margin=0.02) == NOT_SHOWN_COMPARABLE
    assert tost(math.nan, 0.01) == NO_TEST
    with pytest.raises(DataError):
        tost(-0.01, 0.01, margin=0)


def test_claim_outperforms_only_with_the_lower_bound_above_zero():
    assert claim(0.004, 0.05, 0.008, 0.048, 0.02) == ABOVE
    assert claim(-0.05, -0.001, -0.04, -0.003, 0.02) == BELOW
    assert claim(-0.011, 0.014, -0.009, 0.012, 0.02) == COMPARABLE
    assert claim(-0.10, 0.14, -0.08, 0.12, 0.02) == NOT_SHOWN_COMPARABLE


def test_holm_step_down_in_the_input_order():
    got = holm([0.04, 0.01, 0.03, math.nan])
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    assert got[:3] == pytest.approx([0.06, 0.03, 0.06])
    assert math.isnan(got[3])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])    # 0.8 x 2 capped at 1; never below an earlier step
    assert holm([0.02]) == pytest.approx([0.02])              # a family of one is not adjusted


def test_bootstrap_p_value_is_twice_the_smaller_tail():
    draws = np.concatenate([np.full(95, 0.1), np.full(5, -0.1)])
    assert bootstrap_p_value(draws) == pytest.approx(0.10)
    assert 0 < bootstrap_p_value(np.full(100, 0.2)) < 0.05


def test_bracket_names_studied_n_only():
    assert bracket([50, 200, 800], [False, False, True]) == (800.0, 200.0)
    assert bracket([50, 200, 800], [True, True, True]) == (50.0, None)
    assert bracket([50, 200, 800], [True, True, False]) == (None, None)
    assert bracket([50, 200, 800], [False, True, True]) == (200.0, 50.0)

"""What 'comparable' and 'outperforms' mean in a report: equivalence within a margin, superiority, and Holm.

"Not significantly worse" is not "comparable": with 8 validation images or 3 seeds every interval is wide,
so nothing is ever shown worse and everything would be called comparable. Here

* comparable = equivalent within a margin by two one-sided tests (TOST, Schuirmann 1987): at alpha = 0.05
  each side, the difference's (1 - 2 alpha) = 90% interval lies inside [-margin, +margin]. An interval
  wider than the margin can never be shown comparable, however close its centre is to 0;
* outperforms = the 95% interval's lower bound above 0 (and worse = its upper bound below 0);
* several comparisons answering one question (e.g. "does any initialisation beat the baseline at this N")
  have their p-values adjusted by Holm's step-down method, which controls the family-wise error.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import DataError

ALPHA = 0.05
TOST_LEVEL = 1 - 2 * ALPHA           # the interval whose inclusion in the margin is the two one-sided tests
DEFAULT_MARGIN = 0.02                # AUROC points

COMPARABLE = "comparable"
NOT_SHOWN_COMPARABLE = "not shown comparable"
ABOVE = "significantly above"
BELOW = "significantly below"
NO_TEST = "no test"


def tost(low90: float, high90: float, margin: float = DEFAULT_MARGIN) -> str:
    """COMPARABLE iff the 90% interval of the difference lies inside [-margin, +margin], else
    NOT_SHOWN_COMPARABLE (NO_TEST without an interval)."""
    if margin <= 0:
        raise DataError(f"equivalence margin: must be positive, got {margin}")
    if low90 is None or high90 is None or not (math.isfinite(low90) and math.isfinite(high90)):
        return NO_TEST
    return COMPARABLE if -margin < low90 and high90 < margin else NOT_SHOWN_COMPARABLE


def claim(low95: float, high95: float, low90: float, high90: float, margin: float = DEFAULT_MARGIN) -> str:
    """One comparison's verdict: ABOVE (95% lower bound > 0), BELOW (upper < 0), else the TOST verdict."""
    if low95 is not None and math.isfinite(low95) and low95 > 0:
        return ABOVE
    if high95 is not None and math.isfinite(high95) and high95 < 0:
        return BELOW
    return tost(low90, high90, margin)


def bootstrap_p_value(draws) -> float:
    """Two-sided bootstrap p-value of 'difference = 0' from its draws: twice the smaller tail, at most 1."""
    d = np.asarray(draws, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return math.nan
    tail = min(np.mean(d <= 0), np.mean(d >= 0))
    return float(min(1.0, 2 * max(tail, 1 / (len(d) + 1))))   # never exactly 0 from finitely many draws


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order (NaN stays NaN and is not counted).

    The i-th smallest of m p-values is multiplied by (m - i), i from 0, then made non-decreasing along that
    order and capped at 1; a comparison is significant at ALPHA iff its adjusted p < ALPHA.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[k]))
        out[k] = running
    return out


def bracket(n_values, holds) -> tuple[float | None, float | None]:
    """(first, before): the smallest studied N from which ``holds`` is true at it and every larger studied N,
    and the studied N just below it where it failed (None when it holds already at the smallest, or nowhere).

    No interpolation between studied N: between two sizes the data say nothing.
    """
    n = np.asarray(n_values, dtype=float)
    h = np.asarray(holds, dtype=bool)
    if len(n) == 0 or not h[-1]:
        return None, None
    failing = np.flatnonzero(~h)
    if len(failing) == 0:
        return float(n[0]), None
    i = int(failing[-1])
    return float(n[i + 1]), float(n[i])

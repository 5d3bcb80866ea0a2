"""Summaries over repeated runs (seeds): mean with a t-interval, and the gap between two recipes.

A study repeats each recipe over a handful of seeds; with 3-5 values a normal
interval is too narrow, so the 95% CI uses Student's t with n-1 degrees of freedom.
One value has no spread: its sd and CI are NaN, never zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    sd: float
    low: float
    high: float


def _finite(values) -> np.ndarray:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def t_interval(mean, sd, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised t-interval of means from (mean, sample sd, n) arrays; NaN where n < 2."""
    mean, sd, n = (np.asarray(a, dtype=np.float64) for a in (mean, sd, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + level / 2, np.where(n >= 2, n - 1, np.nan)) * sd / np.sqrt(n)
    return mean - half, mean + half


def mean_ci(values, level: float = 0.95) -> MeanCI:
    """Mean, sample sd (ddof=1) and the t-interval of the mean over the finite values."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return MeanCI(1, mean, math.nan, math.nan, math.nan)
    sd = float(x.std(ddof=1))
    low, high = t_interval(mean, sd, n, level)
    return MeanCI(n, mean, sd, float(low), float(high))


def diff_ci(a, b, level: float = 0.95) -> MeanCI:
    """Difference of means a - b with a Welch t-interval (unequal variances, unpaired).

    Unpaired on purpose: it does not assume seed k of one recipe saw the same
    images as seed k of the other, so it is conservative when they did.
    NaN interval when either side has fewer than two values; ``sd`` holds the
    standard error of the difference and ``n`` the smaller group size.
    """
    x, y = _finite(a), _finite(b)
    if len(x) == 0 or len(y) == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan)
    diff = float(x.mean() - y.mean())
    n = min(len(x), len(y))
    if len(x) < 2 or len(y) < 2:
        return MeanCI(n, diff, math.nan, math.nan, math.nan)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return MeanCI(n, diff, 0.0, diff, diff)
    dof = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return MeanCI(n, diff, se, diff - half, diff + half)


def cv_corrected_ci(scores, folds: int, level: float = 0.95) -> MeanCI:
    """Mean of cross-validation fold scores (any number of repeats x ``folds`` folds) with the corrected
    resampled t-interval of Nadeau & Bengio (2003): the variance of the mean is ``sd^2 x (1/J + 1/(K-1))``
    for J scores from K-fold CV, not ``sd^2 / J``. Fold scores share most of their training images, so they
    are correlated and the plain t-interval over them is too narrow; ``sd`` holds the corrected standard error.
    Paired differences of two recipes on the same folds are scores too. NaN interval with under 2 scores."""
    x = _finite(scores)
    n = len(x)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1 or folds < 2:
        return MeanCI(n, mean, math.nan, math.nan, math.nan)
    se = float(x.std(ddof=1) * math.sqrt(1.0 / n + 1.0 / (folds - 1)))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return MeanCI(n, mean, se, mean - half, mean + half)

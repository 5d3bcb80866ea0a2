"""How many images are enough: an inverse power law fitted to one recipe's AUROC across training-set sizes.

Learning curves of image classifiers rise quickly and then flatten; the usual
model for that shape is AUROC(N) = a - b * N^(-c), with a the asymptote (what
unlimited data would give, at most 1), b > 0 the gap that data closes and c > 0
how fast it closes. Fitted to the measured sizes it answers "what would 2x / 4x
the data give", "how many images reach AUROC t" and "from which N does the CNN
match / beat the baseline". Everything beyond the largest studied N is an
extrapolation of the model, and is labelled so.

Uncertainty comes from the bootstrap draws produced elsewhere (a (len(N), B)
matrix; column b is one *joint* draw of the AUROC at every N): the curve is
refitted on each column and every derived quantity is computed per refit, so its
percentile interval carries the correlation between the N of one draw. Refits the
optimiser fails on (or columns holding NaN) are dropped and counted, never
replaced; refits that are merely poor are kept, since dropping them would narrow
the interval.

Fitting. With x = ln N and x0 the middle of the studied ln N range the model is
AUROC = a - g * exp(-c (x - x0)), where g = b * exp(-c x0) is the gap at the
middle size: a, g and c are all of order 0.1-1, which keeps the bounded least
squares (scipy.optimize.least_squares) well conditioned. It starts from the best
point of a grid over c, where a and g follow in closed form (the model is linear
in them for fixed c). Bounds: 0 <= a <= 1, 0 <= g <= 1, C_MIN <= c <= C_MAX.

A fit is refused (``ok`` False, ``reason`` one line) when
  * fewer than 3 distinct N were measured (3 parameters need 3 sizes);
  * the points do not rise with N (least-squares slope on ln N <= 0): a flat or
    falling curve has no power law to extrapolate;
  * the optimiser does not converge;
  * exactly 3 distinct N: no curve within the bounds passes through the points
    (3 parameters, 3 sizes: an admissible model fits exactly, so any residual
    means the points are not concave in ln N or need a > 1 or c > C_MAX);
  * 4 or more distinct N and the fit is *poor*: R^2 < MIN_R2, i.e. the curve
    explains less than that share of the (weighted) spread of the points.

Weighting. A per-N mean AUROC measured on a few seeds and a small test set is
noisier at small N than at large N; an unweighted fit lets the noisiest point
pull the curve as hard as the most precise one. ``inverse_variance_weights``
gives each per-N AUROC the weight 1 / its variance, read from its bootstrap
draws (the row of the joint draw matrix) or, without draws, from its interval;
when neither is known the fit is unweighted and says so (``CurveModel.weighting``).

Extrapolation (any value outside the studied N) is refused, the reason given
instead of a number (``CurveModel.blocked``), when
  * the fit has as many parameters as points (3 distinct N: ``exact_fit``): the
    curve passes through them, so nothing tested its form (EXACT_REASON);
  * ``gate=True`` (the report) and the held-out check fails: the curve refitted
    without the largest N does not predict it (the measured value lies outside
    the prediction interval, see ``holdout_check``), or the check could not be
    made (no interval, refused refit). Values inside the studied N stay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from scipy.optimize import least_squares

from ..errors import DataError
from ..kinds import CrossoverOutcome
from .crossover import crossing, outcome_text

C_MIN, C_MAX = 0.01, 2.0      # exponent bounds: c -> 0 is a straight line in ln N, c > 2 a step
MIN_R2 = 0.8                  # a fit explaining less of the spread of 4+ points is refused as poor
MIN_DRAWS = 20                # fewer successful refits than this give no interval
HORIZON = 10.0                # crossover_n looks up to this multiple of the largest studied N
EXACT_TOL = 1e-6              # AUROC units: a 3-size fit this close to every per-N mean passes through them
N_PARAMS = 3                  # a, b, c: a fit to this many distinct N passes through them and predicts nothing
VAR_FLOOR = 1e-6              # AUROC^2 (SD 0.001): a per-N variance below this is taken as this, no infinite weight
EXACT_REASON = "as many parameters as points: the curve passes through them, it predicts nothing"
UNWEIGHTED = "unweighted: the variance of the per-N AUROCs is unknown (no bootstrap draws or interval)"
_C_GRID = np.geomspace(C_MIN, C_MAX, 160)

METHOD = ("Learning curve: inverse power law AUROC(N) = a - b*N^-c (a <= 1, b > 0, 0 < c <= 2) fitted by bounded "
          "least squares in ln N to the per-N AUROCs, each weighted by 1/its variance (from its bootstrap draws); "
          "intervals are percentile intervals over refits on each joint bootstrap draw of the per-N AUROCs (failed "
          "refits dropped and counted). Nothing is extrapolated beyond the studied N from a curve fitted through as "
          "many sizes as it has parameters (3), nor from one whose refit without the largest N misses the value "
          "measured there (outside its 95% prediction interval); the reason is given instead.")


@dataclass(frozen=True)
class PowerLawFit:
    """AUROC(N) = a - b * N^(-c) and how well it fits; when ``ok`` is False the numbers are NaN or unusable."""

    a: float
    b: float
    c: float
    rmse: float                   # unweighted root mean square residual, AUROC units
    n_points: int                 # rows fitted (repeated N count separately)
    ok: bool
    reason: str | None = None     # one line: why the fit is refused
    exact_fit: bool = False       # 3 distinct N: the curve passes through the points, rmse says nothing
    r2: float = math.nan          # share of the weighted spread of the points the curve explains
    bounds_hit: tuple[str, ...] = ()   # parameters resting on a bound ("a" at 1, "c" at C_MIN or C_MAX)

    def __call__(self, n) -> np.ndarray | float:
        """The fitted AUROC at ``n`` (scalar or array)."""
        out = self.a - self.b * np.power(np.asarray(n, dtype=float), -self.c)
        return float(out) if np.ndim(out) == 0 else out


class Estimate(NamedTuple):
    """A value from the fitted curve with its bootstrap percentile interval.

    ``low``/``high`` are NaN without enough successful refits (MIN_DRAWS). For a
    refusal ``estimate`` is NaN and ``reason`` says why. ``reachable_fraction``
    is set only by ``CurveModel.n_for_target``: the share of refits whose
    asymptote lies above the target.
    """

    estimate: float
    low: float
    high: float
    extrapolated: bool
    reason: str | None = None
    reachable_fraction: float | None = None


class HoldoutCheck(NamedTuple):
    """The curve fitted without the largest N, against what was measured there (error = predicted - measured)."""

    held_out_n: float
    measured: float
    predicted: Estimate
    error: float
    fit: PowerLawFit
    ok: bool
    reason: str | None = None
    interval: tuple[float, float] = (math.nan, math.nan)   # prediction interval for the measured value
    covered: bool | None = None   # measured inside ``interval``; None: no interval (no usable bootstrap draws)


class CrossoverN(NamedTuple):
    """Where a CNN curve is predicted to match (d >= 0) and to beat (lower bound of d > 0) a baseline.

    d(N) = CNN AUROC - baseline AUROC. ``*_n`` is None when there is no crossing
    (``*_reason`` says why); ``match_range`` is the percentile range of the
    matching N over the refits, an end None when it lies outside the searched
    sizes. ``*_extrapolated`` is False when the N lies inside the sizes both
    curves measured.
    """

    match_n: float | None
    match_range: tuple[float | None, float | None] | None
    match_extrapolated: bool | None
    match_reason: str | None
    beat_n: float | None
    beat_extrapolated: bool | None
    beat_reason: str | None
    baseline: str                 # "curve" (its power law) or "per-N values" (its fit was refused)
    paired: bool
    n_draws: int                  # columns used for the intervals (both sides succeeded)
    blocked: str | None = None    # why the search stopped at the studied N (a curve's extrapolation refused)


# ---------------------------------------------------------------------------------------------- inputs
def _as_curve(ns, aurocs, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.asarray(ns, dtype=float).ravel()
    y = np.asarray(aurocs, dtype=float).ravel()
    if n.shape != y.shape:
        raise DataError(f"aurocs: {y.size} values for {n.size} training-set sizes")
    if not np.isfinite(n).all() or (n < 1).any():
        raise DataError("ns: training-set sizes must be finite and at least 1")
    if not np.isfinite(y).all() or (y < 0).any() or (y > 1).any():
        raise DataError("aurocs: values must be finite AUROCs in [0, 1]")
    if weights is None:
        w = np.ones_like(y)
    else:
        w = np.asarray(weights, dtype=float).ravel()
        if w.shape != y.shape or not np.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
            raise DataError("weights: expected one finite non-negative weight per AUROC, not all zero")
    return n, y, w


def _as_draws(draws, n_rows: int) -> np.ndarray | None:
    if draws is None:
        return None
    d = np.asarray(draws, dtype=float)
    if d.ndim != 2 or d.shape[0] != n_rows:
        raise DataError(f"draws: expected shape ({n_rows}, B) (one row per training-set size), got {d.shape}")
    return d


def inverse_variance_weights(draws=None, ci_low=None, ci_high=None, level: float = 0.95
                             ) -> tuple[np.ndarray | None, str]:
    """(1 / variance of each per-N AUROC, how it was found), or (None, UNWEIGHTED) when it is unknown.

    Why: the per-N means are not equally precise (few seeds and small test sets at
    one N, more at another), and least squares is only efficient when each point
    counts by its precision. The variance comes from the point's bootstrap draws
    (a row of the joint draw matrix: seed and test-set luck together), else from
    its interval (half-width / z, a normal reading of a percentile interval).
    Variances are floored at VAR_FLOOR so a degenerate point cannot take all the weight.
    """
    var = None
    if draws is not None:
        d = np.asarray(draws, dtype=float)
        finite = np.isfinite(d).sum(axis=1)
        if d.ndim == 2 and (finite >= MIN_DRAWS).all():
            var, source = np.nanvar(d, axis=1, ddof=1), "its bootstrap draws"
    if var is None and ci_low is not None and ci_high is not None:
        lo, hi = np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float)
        if np.isfinite(lo).all() and np.isfinite(hi).all():
            z = float(NormalDist().inv_cdf(0.5 + level / 2))
            var, source = ((hi - lo) / (2 * z)) ** 2, f"its {level:.0%} interval"
    if var is None:
        return None, UNWEIGHTED
    return 1.0 / np.maximum(var, VAR_FLOOR), f"weighted by 1/variance of each per-N AUROC (from {source})"


# ---------------------------------------------------------------------------------------------- fitting
def _centre(n: np.ndarray) -> float:
    x = np.log(n)
    return float((x.min() + x.max()) / 2)


def _grid_start(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(a, g, c) of the best grid point over c, with a and g in closed form; y may hold one curve per row."""
    y = np.atleast_2d(y)                                          # (R, n)
    z = np.exp(-_C_GRID[:, None] * x[None, :])                    # (K, n)
    sw = w.sum()
    zbar = (z * w).sum(1) / sw                                    # (K,)
    ybar = (y * w).sum(1) / sw                                    # (R,)
    zc = z - zbar[:, None]
    szz = (w * zc ** 2).sum(1)                                    # (K,)
    szy = np.einsum("kn,rn->rk", w * zc, y)                       # (R, K); centring y is implied by sum(w zc) = 0
    g = np.clip(-szy / np.maximum(szz, 1e-300), 0.0, 1.0)
    a = ybar[:, None] + g * zbar[None, :]
    over = a > 1                                                  # asymptote above 1: pin it at 1, refit g alone
    g_pinned = np.clip(np.einsum("kn,rn->rk", w * z, 1 - y) / (w * z ** 2).sum(1), 0.0, 1.0)
    a = np.where(over, 1.0, np.clip(a, 0.0, 1.0))
    g = np.where(over, g_pinned, g)
    resid = y[:, None, :] - (a[..., None] - g[..., None] * z[None])
    best = np.argmin((w * resid ** 2).sum(2), axis=1)
    rows = np.arange(len(y))
    return np.column_stack([a[rows, best], g[rows, best], _C_GRID[best]])


def _polish(x: np.ndarray, y: np.ndarray, sw: np.ndarray, start: np.ndarray):
    def residuals(p):
        return sw * (p[0] - p[1] * np.exp(-p[2] * x) - y)

    start = np.clip(start, [0.0, 0.0, C_MIN], [1.0, 1.0, C_MAX])
    return least_squares(residuals, start, bounds=([0.0, 0.0, C_MIN], [1.0, 1.0, C_MAX]), method="trf",
                         x_scale=[0.1, 0.1, 0.3], xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)


def _to_abc(p: np.ndarray, x0: float) -> tuple[float, float, float]:
    a, g, c = (float(v) for v in p)
    return a, g * math.exp(c * x0), c


def _refused(n_points: int, reason: str, **extra) -> PowerLawFit:
    return PowerLawFit(math.nan, math.nan, math.nan, math.nan, n_points, False, reason, **extra)


def fit_power_law(ns, aurocs, weights=None) -> PowerLawFit:
    """Fit AUROC(N) = a - b N^-c to measured sizes ``ns`` (>= 1) and AUROCs; see the module text for refusals.

    ``weights`` (optional, one per point) multiply the squared residuals, e.g.
    1 / variance of each AUROC; repeated N (one row per seed) are allowed.
    """
    n, y, w = _as_curve(ns, aurocs, weights)
    distinct = np.unique(n).size
    if distinct < 3:
        return _refused(len(y), f"{distinct} distinct training-set size(s): a 3-parameter curve needs at least 3")
    x0 = _centre(n)
    x = np.log(n) - x0
    xm = np.average(x, weights=w)
    slope = float(np.sum(w * (x - xm) * y) / np.sum(w * (x - xm) ** 2))
    if not slope > 1e-9:    # flat to rounding counts as flat
        return _refused(len(y), f"AUROC does not rise with N (slope {slope * math.log(2):+.4f} per doubling): "
                                "no learning curve to fit")
    res = _polish(x, y, np.sqrt(w), _grid_start(x, y, w)[0])
    if not res.success or not np.isfinite(res.x).all():
        return _refused(len(y), f"the curve fit did not converge ({res.message})")
    a, b, c = _to_abc(res.x, x0)
    fitted = a - res.x[1] * np.exp(-c * x)
    rmse = float(np.sqrt(np.mean((y - fitted) ** 2)))
    ss_tot = float(np.sum(w * (y - np.average(y, weights=w)) ** 2))
    r2 = 1 - float(np.sum(w * (y - fitted) ** 2)) / ss_tot
    hit = tuple(name for name, on in (("a", a >= 1 - 1e-9), ("c", c <= C_MIN * (1 + 1e-6) or c >= C_MAX * (1 - 1e-6)))
                if on)
    common = dict(rmse=rmse, n_points=len(y), exact_fit=distinct == 3, r2=r2, bounds_hit=hit)
    if distinct == 3:       # repeated rows (seeds) scatter around their N: exactness is about the per-N means
        _, miss = _per_n(n, w * (y - fitted))
        miss = float(np.max(np.abs(miss / _per_n(n, w)[1])))
        if miss > EXACT_TOL:
            return PowerLawFit(a, b, c, ok=False, reason=(
                f"no curve with a <= 1 and c <= {C_MAX:g} passes through the 3 sizes (misses one by {miss:.4f}): "
                "they are not concave in ln N"), **common)
    if distinct > 3 and r2 < MIN_R2:
        return PowerLawFit(a, b, c, ok=False, reason=(
            f"poor fit: the curve explains R^2 = {r2:.2f} of the spread of the points (at least {MIN_R2:g} needed)"),
                           **common)
    return PowerLawFit(a, b, c, ok=True, **common)


def _refit_draws(n: np.ndarray, w: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(B, 3) array of (a, b, c) per bootstrap column; NaN rows where the column holds NaN or the fit fails."""
    x0 = _centre(n)
    x = np.log(n) - x0
    sw = np.sqrt(w)
    out = np.full((draws.shape[1], 3), np.nan)
    usable = np.isfinite(draws).all(axis=0)
    if not usable.any():
        return out
    cols = np.flatnonzero(usable)
    starts = _grid_start(x, draws[:, cols].T, w)
    for col, start in zip(cols, starts):
        res = _polish(x, draws[:, col], sw, start)
        if res.success and np.isfinite(res.x).all():
            out[col] = _to_abc(res.x, x0)
    return out


# ---------------------------------------------------------------------------------------------- the model
def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval over finite-or-infinite values (NaN = failed refit, left out)."""
    v = values[~np.isnan(values)]
    if v.size < MIN_DRAWS:
        return math.nan, math.nan
    alpha = 1 - level
    low, high = np.quantile(v, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(low), float(high)


def _curve_values(params: np.ndarray, n: np.ndarray) -> np.ndarray:
    """AUROC at each size ``n`` (G,) for each parameter row (R, 3) -> (R, G)."""
    return params[:, :1] - params[:, 1:2] * np.power(n[None, :], -params[:, 2:3])


@dataclass(frozen=True, eq=False)
class CurveModel:
    """One recipe's learning curve: the point fit, the refits on the bootstrap columns, and the measured values.

    ``draw_params`` is (B, 3) of (a, b, c), row b the refit on bootstrap column
    b (NaN where it failed), so two models built from the same bootstrap can be
    compared column by column.
    """

    fit: PowerLawFit
    ns: np.ndarray
    aurocs: np.ndarray
    draws: np.ndarray | None = None
    draw_params: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    level: float = 0.95
    weighting: str = "as given"           # how the points were weighted (``inverse_variance_weights``' note)
    blocked: str | None = None            # why nothing outside the studied N is given (module text); None: allowed
    holdout: HoldoutCheck | None = None   # the check that gated extrapolation (``fit_curve(gate=True)``)

    @property
    def n_draws(self) -> int:
        return int(self.draw_params.shape[0])

    @property
    def n_failed(self) -> int:
        """Bootstrap columns whose refit failed (dropped from every interval)."""
        return int(np.isnan(self.draw_params).any(axis=1).sum())

    def _outside(self, n: float) -> bool:
        return bool(n < self.ns.min() or n > self.ns.max())

    def refusal(self, n: float) -> str | None:
        """Why no value is given at ``n``: outside the studied N while extrapolation is blocked; else None."""
        if self.blocked and self._outside(n):
            return f"not extrapolated beyond the studied N: {self.blocked}"
        return None

    def predict(self, n: float) -> Estimate:
        """Fitted AUROC at training-set size ``n`` with its bootstrap interval (refused outside the studied N
        when extrapolation is blocked)."""
        n = float(n)
        if not self.fit.ok:
            return Estimate(math.nan, math.nan, math.nan, self._outside(n), f"no curve: {self.fit.reason}")
        if self.refusal(n):
            return Estimate(math.nan, math.nan, math.nan, True, self.refusal(n))
        low, high = _interval(_curve_values(self.draw_params, np.array([n]))[:, 0], self.level)
        return Estimate(float(self.fit(n)), low, high, self._outside(n))

    def predict_beyond(self, factors=(2.0, 4.0)) -> dict[float, Estimate]:
        """Predictions at multiples of the largest studied N (extrapolations by construction)."""
        top = float(self.ns.max())
        return {float(f): self.predict(f * top) for f in factors}

    def n_for_target(self, target: float) -> Estimate:
        """Training-set size at which the curve reaches AUROC ``target``: N = (b / (a - target))^(1/c).

        Refused when ``target`` is at or above the fitted asymptote a. The
        interval counts a refit whose asymptote is at or below the target as
        N = infinity (so ``high`` may be inf); ``reachable_fraction`` is the share
        of refits that reach it.
        """
        t = float(target)
        p = self.draw_params[~np.isnan(self.draw_params).any(axis=1)]
        reach = float(np.mean(p[:, 0] > t)) if len(p) else None
        if not self.fit.ok:
            return Estimate(math.nan, math.nan, math.nan, False, f"no curve: {self.fit.reason}", reach)
        a, b, c = self.fit.a, self.fit.b, self.fit.c
        with np.errstate(divide="ignore", invalid="ignore"):
            per_draw = np.where(p[:, 0] > t, (p[:, 1] / (p[:, 0] - t)) ** (1 / p[:, 2]), np.inf)
        low, high = _interval(per_draw, self.level)
        if self.blocked:   # an interval end or an asymptote outside the studied N would be an extrapolation
            low = low if low >= self.ns.min() else math.nan
            high = high if high <= self.ns.max() else math.nan
            if t >= a:
                return Estimate(math.nan, low, high, True, self.refusal(math.inf), reach)
        if t >= a:
            share = "" if reach is None else f"; reachable in {reach:.0%} of {len(p)} bootstrap refits"
            return Estimate(math.nan, low, high, True,
                            f"AUROC {t:.3f} is not reachable: the fitted asymptote is {a:.3f}{share}", reach)
        with np.errstate(over="ignore"):   # a flat curve (small c) just under its asymptote: N overflows to inf
            n_star = float(np.power(b / (a - t), 1 / c))
        if self.refusal(n_star):
            return Estimate(math.nan, low, high, True, self.refusal(n_star), reach)
        return Estimate(n_star, low, high, self._outside(n_star), None, reach)


def fit_curve(ns, aurocs, draws=None, weights=None, level: float = 0.95, *, gate: bool = False,
              weighting: str | None = None) -> CurveModel:
    """Point fit of the learning curve plus a refit on every bootstrap column of ``draws`` ((len(ns), B)).

    Extrapolation is blocked for a fit through as many sizes as parameters, and,
    with ``gate``, unless the held-out-largest-N check passes (module text).
    ``weighting`` says in words how ``weights`` were found.
    """
    if not 0 < level < 1:
        raise DataError(f"level: must lie in (0, 1), got {level}")
    n, y, w = _as_curve(ns, aurocs, weights)
    d = _as_draws(draws, len(n))
    fit = fit_power_law(n, y, w)
    params = np.empty((0, 3))
    if d is not None:
        params = _refit_draws(n, w, d) if fit.ok else params      # no curve: nothing to refit
    how = weighting or ("unweighted" if weights is None else "weighted as given")
    check, blocked = None, None
    if fit.ok and np.unique(n).size <= N_PARAMS:
        blocked = EXACT_REASON
    elif fit.ok and gate:
        check = holdout_check(n, y, d, w, level)
        blocked = gate_reason(check)
    return CurveModel(fit, n, y, d, params, level, how, blocked, check)


def gated_curve(ns, aurocs, draws=None, ci=None, level: float = 0.95) -> CurveModel:
    """The report's curve: inverse-variance weights (from ``draws``, else the per-N interval ``ci`` = (lows,
    highs), else unweighted with a note) and extrapolation gated by the held-out check."""
    lows, highs = ci if ci is not None else (None, None)
    weights, how = inverse_variance_weights(draws, lows, highs, level)
    return fit_curve(ns, aurocs, draws, weights, level, gate=True, weighting=how)


# ---------------------------------------------------------------------------------------------- crossover
def _per_n(ns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over repeated N (rows of ``values``, which may be 1-D or (rows, B))."""
    uniq, inv = np.unique(ns, return_inverse=True)
    sums = np.zeros((len(uniq),) + values.shape[1:])
    np.add.at(sums, inv, values)
    return uniq, sums / np.bincount(inv).reshape((-1,) + (1,) * (values.ndim - 1))


def _held_baseline(ns: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A baseline without a curve, on ``grid``: the running maximum of its per-N values, linear in ln N between
    measured sizes and held flat outside them.

    The running maximum credits the baseline at every N with the best it reached
    with fewer images (it could have ignored the rest), so a noisy or falling
    baseline is never assumed to get worse; nor is it assumed to improve beyond
    the largest N. Both lean against declaring the CNN the winner.
    """
    uniq, mean = _per_n(ns, values)
    cols = np.maximum.accumulate(mean if mean.ndim == 2 else mean[:, None], axis=0)     # (nN, K)
    lx, gx = np.log(uniq), np.log(grid)
    return np.stack([np.interp(gx, lx, cols[:, k]) for k in range(cols.shape[1])])     # (K, G)


def _baseline_on_grid(baseline: CurveModel, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(the baseline's point values, its (B, G) bootstrap values or None) on ``grid``: its own power law when
    its fit was accepted, otherwise its per-N values held as in :func:`_held_baseline`."""
    if baseline.fit.ok:
        base_draws = _curve_values(baseline.draw_params, grid) if baseline.n_draws else None
        return baseline.fit(grid), base_draws
    base_draws = _held_baseline(baseline.ns, baseline.draws, grid) if baseline.draws is not None else None
    return _held_baseline(baseline.ns, baseline.aurocs, grid)[0], base_draws


def _difference_draws(cnn: CurveModel, base_draws: np.ndarray, grid: np.ndarray, paired: bool) -> np.ndarray:
    """(B', G) bootstrap values of d = CNN - baseline on ``grid``, the draws with a non-finite value dropped.

    Paired draws must come from one bootstrap (equal B); unpaired ones are combined one to one (first min(B)).
    """
    b_cnn, b_base = cnn.n_draws, base_draws.shape[0]
    if paired and b_cnn != b_base:
        raise DataError(f"baseline: {b_base} bootstrap draws against {b_cnn} for the CNN; paired draws need "
                        "the same bootstrap (or pass paired=False)")
    k = min(b_cnn, b_base)
    d_draws = _curve_values(cnn.draw_params[:k], grid) - base_draws[:k]
    return d_draws[np.isfinite(d_draws).all(axis=1)]


def _match_range(d_draws: np.ndarray, grid: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """The percentile range of the match N over the draws of d; an end beyond the grid (a draw that never
    crosses, or is already above at the smallest N) is None."""
    found = []
    for row in d_draws:
        n_star, why = crossing(grid, row, strict=False)
        found.append(n_star if n_star is not None else (-math.inf if why is CrossoverOutcome.ALREADY else math.inf))
    r_lo, r_hi = _interval(np.asarray(found), level)
    return (None if math.isinf(r_lo) else r_lo, None if math.isinf(r_hi) else r_hi)


def crossover_n(cnn: CurveModel, baseline: CurveModel, *, paired: bool = True, horizon: float = HORIZON,
                grid_size: int = 400) -> CrossoverN:
    """Smallest N from which the CNN curve stays at or above the baseline (match) and significantly above (beat).

    d(N) = CNN curve - baseline, on a grid log-spaced from the smallest studied N
    of either to ``horizon`` x the largest; between grid points the crossing is
    interpolated in ln N (``crossover.crossing``). The baseline is its own power
    law when its fit is accepted, otherwise its per-N values (see
    ``_held_baseline``). Beat: the lower percentile bound of d over the bootstrap
    columns is above 0. ``paired=True`` (both sets of draws come from the same
    bootstrap, column b of one matching column b of the other) requires equal B
    and lets pairing cancel the luck both share; with ``paired=False`` the
    columns are independent draws and are combined one to one (the first
    min(B) of each).
    """
    if horizon < 1:
        raise DataError(f"horizon: must be at least 1, got {horizon}")
    base_kind = "curve" if baseline.fit.ok else "per-N values"
    if not cnn.fit.ok:
        reason = f"no CNN curve: {cnn.fit.reason}"
        return CrossoverN(None, None, None, reason, None, None, reason, base_kind, paired, 0)
    lo, hi, blocked = _search_range(cnn, baseline, horizon)
    grid = np.geomspace(lo, hi, grid_size)
    inside = (max(cnn.ns.min(), baseline.ns.min()), min(cnn.ns.max(), baseline.ns.max()))
    base_point, base_draws = _baseline_on_grid(baseline, grid)
    diff = cnn.fit(grid) - base_point

    def located(n_star, reason):
        if n_star is not None and blocked:   # issue 23: a crossing between studied N only from a curve that
            return None, None, (f"no N read off the curve between the studied N ({lo:g} to {hi:g}): "  # passed its
                                f"{blocked}")                                                        # gate
        if n_star is not None:
            return n_star, not (inside[0] <= n_star <= inside[1]), None
        never = (f"not within the studied N (up to {hi:g}); not extrapolated beyond it: {blocked}" if blocked
                 else f"not within {horizon:g}x the largest studied N")
        text = {CrossoverOutcome.ALREADY: "already at the smallest studied N", CrossoverOutcome.NEVER: never}.get(reason)
        return None, None, text or outcome_text(reason)

    match_n, match_extra, match_reason = located(*crossing(grid, diff, strict=False))

    n_used, match_range = 0, None
    beat_n, beat_extra, beat_reason = None, None, "no bootstrap draws for both curves: no interval"
    if cnn.n_draws and base_draws is not None:
        d_draws = _difference_draws(cnn, base_draws, grid, paired)
        n_used = len(d_draws)
        if n_used >= MIN_DRAWS:
            alpha = 1 - cnn.level
            lower = np.quantile(d_draws, alpha / 2, axis=0, method="inverted_cdf")
            beat_n, beat_extra, beat_reason = located(*crossing(grid, lower, strict=True))
            match_range = _match_range(d_draws, grid, cnn.level)
        else:
            beat_reason = f"{n_used} usable bootstrap draws: at least {MIN_DRAWS} needed for an interval"
    return CrossoverN(match_n, match_range, match_extra, match_reason, beat_n, beat_extra, beat_reason,
                      base_kind, paired, n_used, blocked)


def _search_range(cnn: CurveModel, baseline: CurveModel, horizon: float) -> tuple[float, float, str | None]:
    """(smallest, largest N searched, why the search stops at the studied N or None): a curve whose
    extrapolation is blocked is only read inside its studied sizes (a refused baseline's held per-N
    values are not a curve, so they do not limit the search)."""
    lo = float(min(cnn.ns.min(), baseline.ns.min()))
    hi = float(max(cnn.ns.max(), baseline.ns.max())) * horizon
    limited = [m for m in (cnn, baseline) if m.fit.ok and m.blocked]
    if not limited:
        return lo, hi, None
    lo = max(lo, *(float(m.ns.min()) for m in limited))
    hi = min(hi, *(float(m.ns.max()) for m in limited))
    return lo, max(hi, lo * (1 + 1e-9)), limited[0].blocked


# ---------------------------------------------------------------------------------------------- checking
def holdout_check(ns, aurocs, draws=None, weights=None, level: float = 0.95,
                  fit_up_to: float | None = None) -> HoldoutCheck:
    """Fit without the largest N and compare the prediction there with what was measured.

    ``fit_up_to``: fit only the sizes at or below it (default: every size but the
    largest); ``benchmarks/learning_curve_backtest.py`` fits N <= N_max / 4.

    The one honest test of extrapolation the data allow; needs 4 distinct N (3
    left to fit: an exact fit there is still a fair test, since the held-out
    point took no part in it). Repeated rows at the largest N are averaged into
    ``measured``. ``interval`` is the prediction interval for the measured value:
    measured + the percentile interval of (refit b's prediction - draw b's value
    at the largest N) over the joint bootstrap columns, so it carries the curve's
    uncertainty and the held-out point's own noise; ``covered`` is whether the
    measured value lies inside it (the error interval holds 0).
    """
    n, y, w = _as_curve(ns, aurocs, weights)
    d = _as_draws(draws, len(n))
    top = float(n.max())
    keep = n < top if fit_up_to is None else n <= fit_up_to
    held = n == top
    measured = float(y[held].mean())
    left = np.unique(n[keep]).size
    if left < N_PARAMS or (fit_up_to is None and np.unique(n).size < N_PARAMS + 1):
        reason = (f"{np.unique(n).size} distinct training-set sizes: a hold-out check needs 4 (3 left to fit)"
                  if fit_up_to is None else f"{left} distinct training-set size(s) at or below N = {fit_up_to:g}: "
                  "a hold-out check needs 3 to fit")
        fit = _refused(int(keep.sum()), reason)
        return HoldoutCheck(top, measured, Estimate(math.nan, math.nan, math.nan, True, reason), math.nan, fit,
                            False, reason)
    model = fit_curve(n[keep], y[keep], None if d is None else d[keep], w[keep], level)
    if not model.fit.ok:
        return HoldoutCheck(top, measured, model.predict(top), math.nan, model.fit, False,
                            f"fit without N={top:g} refused: {model.fit.reason}")
    at_top = _curve_values(model.draw_params, np.array([top]))[:, 0]   # not model.predict: a check may extrapolate
    predicted = Estimate(float(model.fit(top)), *_interval(at_top, level), True)
    interval, covered = (math.nan, math.nan), None
    if d is not None and model.n_draws:
        e_lo, e_hi = _interval(at_top - d[held].mean(axis=0), level)
        if math.isfinite(e_lo):
            interval, covered = (measured + e_lo, measured + e_hi), bool(e_lo <= 0 <= e_hi)
    return HoldoutCheck(top, measured, predicted, predicted.estimate - measured, model.fit, True, None,
                        interval, covered)


def gate_reason(check: HoldoutCheck) -> str | None:
    """Why the held-out check stops extrapolation, or None when it passed (measured inside the interval)."""
    if not check.ok:
        return f"the held-out-largest-N check could not be made ({check.reason})"
    if check.covered is None:
        return "the held-out-largest-N check has no prediction interval (no usable bootstrap draws)"
    if not check.covered:
        low, high = check.interval
        return (f"refitted without N = {check.held_out_n:g}, the curve predicts {check.predicted.estimate:.3f} there "
                f"({check.predicted.estimate - check.measured:+.3f}; 95% prediction interval {low:.3f} to {high:.3f}) "
                f"but {check.measured:.3f} was measured: the curve's form fails where it can be tested")
    return None

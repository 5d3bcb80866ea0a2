"""One interval for a recipe's AUROC that counts both sources of luck: the test set and the training seed.

A study trains a recipe at a training-set size N with seeds 0..S-1 and scores
every run on the same test images. Its AUROC is uncertain for two reasons:

* the test set is a sample of patients (the patient bootstrap of
  ``bootstrap.bootstrap_auroc_samples`` measures this for one run), and
* the training run is one draw of the seed (initialisation, batch order,
  augmentation): another seed gives another model (the spread of the S runs'
  AUROCs measures this).

A percentile interval of one run's patient bootstrap ignores the second; a
t-interval over the S points ignores the first. Here both enter one
**two-level bootstrap**. The input is an (S, B) array: row s holds the B
patient-resample AUROCs of seed s's run, all rows computed with the same
bootstrap seed, so column b is the *same* patient resample for every run.
Draw b is

    mean over seeds of column b      (test level: the seed average on patient resample b)
  + sum_s w_bs (p_s - mean p) / S    (seed level: w_bs independent N(0, 1), p_s = run s's full-test AUROC)

with the seed level then widened for few seeds (below); the estimate is the
mean of the S full-test AUROCs and the interval the percentile interval of the
draws. With S = 1 there is no seed level: the
draws are that run's bootstrap and the interval is exactly its test-set
percentile interval, unless a seed variance is lent (below).

One seed. A single run cannot measure its seed spread, and its test-set
interval alone undercovers badly whenever seeds matter (normal model: 87%
when the seed SD equals the test SE, 46% at three times). A caller that knows
a neighbouring cell of the same recipe (``report.intervals``: the nearest N
with 2 or more seeds, else other recipes at this N, pooled) passes its seed
variance as a ``SeedSpread``: the draws get normal seed noise of that variance
and the few-seed widening below, with the lender's degrees of freedom. This
assumes the seed spread changes slowly with N; the interval's
``seed_variance`` names the lender. With nothing to borrow it says
``NOT_COVERED``.

Why Gaussian seed multipliers instead of drawing S seeds with replacement: the
two have the same mean and variance given the points, and the same pairing
(the same multipliers on both sides of a paired difference, or at every N of a
learning curve, keep whatever the seeds share), but a resampled mean of 2-3
values takes only 3-10 distinct values, and widening it for few seeds (below)
piles draws onto a few spikes, which a curve refitted on the draws would
inherit. The multiplier ("wild") draws are smooth.

Few seeds. Two corrections keep the seed level honest with S = 2-5:

1. bias: the seed level above varies by (S-1)/S times s^2/S (s = sd of the S
   points, ddof 1), a third too little for 3 seeds, half for 2. It is rescaled
   to s^2/S (the sqrt(S/(S-1)) that ``crossover`` applies);
2. the seed variance is itself a guess from S-1 degrees of freedom, so a
   normal-shaped interval undercovers whenever the seeds matter (with 3 seeds
   a z-interval instead of a t-interval). The seed level is widened further so
   that the draws' variance is (t_nu / z)^2 (V_test + s^2/S): V_test is the
   variance of the test level over the draws, z and t_nu the two-sided
   quantiles at ``level`` of the normal and of Student's t with
   nu = (V_test + U)^2 / (U^2 / (S-1)) degrees of freedom (Welch-Satterthwaite
   with the bootstrap's V_test taken as exact). U is the *upper quartile* of
   the seed variance of the mean given its S-1 df, s^2/S * (S-1) / chi2_{S-1}(0.25),
   not s^2/S: plain Satterthwaite trusts an s^2 that is small by chance and
   then covers only 87% (S = 2) / 92% (S = 3) of the time when the seeds
   dominate (normal model, seed SE s/sqrt(S) 2-8 times the test SE); with the
   upper quartile it covers 95-96% (S = 3 or 5) for ratios of seed SE to test
   SE from 0.1 to 100. When the test set dominates nu is large and only
   correction 1 remains; when the seeds dominate the interval tends to the
   seed t-interval.

Two seeds. nu is never below 2. Two values cannot bound a variance: their
1-df t-interval is 12.7 standard errors wide each side and turns into [0, 1] as
soon as two seeds disagree by a few points of AUROC. With the floor the widest
interval is a 2-df t (4.3 standard errors), so 2 seeds never give [0, 1] for
want of seeds, at a price: when the seed spread dominates, 2 seeds cover less
than 95% (normal model: 95-97% while the seed SE is at most twice the test
SE, 92% at four times, 86% in the limit). A third seed removes the floor's
effect (nu >= S - 1 = 2 anyway). Seed spread measured on one test set also
holds some test-set noise (different models err on different images), which
the test level counts again: a slight conservatism. The draws are clipped to
[0, 1] ([-1, 1] for differences) and, through t_nu / z, depend on ``level``.

Differences of two recipes on the same test images use the same patient
resample b on both sides. When seed s of both recipes trained on the same
N-subset (``paired_seeds``), the per-seed differences are the points and rows
of a single group, so whatever the two share (the subset, the hard test cases)
cancels; otherwise each side has its own seed level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import special

from ..errors import DataError

_SEED_VARIANCE_QUANTILE = 0.25   # seed variance used for the t degrees of freedom: its upper quartile
_MIN_DOF = 2.0                   # never a wider t than 2 df, even with 2 seeds (see the module docstring)


NOT_COVERED = "test set only; seed variation not covered"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval, and a one-line account of how the interval was made.

    ``seed_variance`` says where the seed level came from, because a reader cannot tell from the numbers
    whether seed luck is in the interval: "from 3 seeds", "borrowed from ...", or ``NOT_COVERED``.
    """
    estimate: float
    low: float
    high: float
    level: float
    method: str
    n_seeds: int
    seed_variance: str = ""


@dataclass(frozen=True)
class SeedSpread:
    """A seed variance lent to a one-seed cell, which cannot measure its own (see "One seed" above).

    ``variance``: the run-to-run variance of one run's AUROC (sd^2 of the lender's seeds, ddof 1);
    ``dof``: its degrees of freedom (seeds - 1, summed when pooled); ``source``: where it came from,
    in words for the page ("N=800 of this recipe (3 seeds)").
    """
    variance: float
    dof: int
    source: str


class _SeedGroup(NamedTuple):
    """One recipe's runs (or one set of per-seed differences), laid out for the two-level draws."""
    rows: np.ndarray        # (S, n_boot): column b of row s = run s on patient resample b
    points: np.ndarray      # (S,): full-test AUROC of each run
    weights: np.ndarray     # (n_boot, S): the seed multipliers of each draw
    borrowed: SeedSpread | None = None    # with S = 1 only: the seed variance lent by another cell


def within_noise(interval: Interval) -> bool:
    """True when the interval of a difference contains 0: the two recipes are not told apart."""
    return bool(interval.low <= 0.0 <= interval.high)


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise DataError(f"level: must lie in (0, 1), got {level}")
    return float(level)


def _runs(draws, points, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(draws (S, B), points (S,)) as finite float arrays, or a DataError naming the input."""
    rows = np.asarray(draws, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
        raise DataError(f"{name}: expected an (S seeds, B resamples) array of bootstrap AUROCs, got shape {rows.shape}")
    point = np.asarray(points, dtype=np.float64)
    if point.shape != (rows.shape[0],):
        raise DataError(f"{name}: {rows.shape[0]} rows of draws but points of shape {point.shape} "
                        f"(expected one full-test AUROC per seed)")
    if not np.isfinite(rows).all():
        raise DataError(f"{name}: draws contain NaN or infinite values")
    if not np.isfinite(point).all():
        raise DataError(f"{name}: points contain NaN or infinite values")
    return rows, point


def _columns(n_columns: int, n_boot) -> np.ndarray:
    """Draw b uses patient resample b (cycling when more draws than resamples are asked for)."""
    if n_boot is None:
        return np.arange(n_columns)
    if int(n_boot) < 1:
        raise DataError(f"n_boot: must be at least 1, got {n_boot}")
    return np.arange(int(n_boot)) % n_columns


def _seed_weights(n_seeds: int, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(n_draws, S) independent N(0, 1) seed multipliers: the smooth counterpart of drawing S seeds with replacement."""
    return rng.standard_normal(size=(n_draws, n_seeds))


def _seed_part(sign: float, g: _SeedGroup) -> tuple[np.ndarray, float, float] | None:
    """(seed-level deviations of the draws, variance of the seed mean, its dof) of one group; None without one.

    S >= 2: the multipliers on the centred points. One seed with a lent variance: normal noise with that
    variance (the multipliers of seed 0 times its sd), so the few-seed widening below treats it like S - 1
    = ``dof`` seeds of its own.
    """
    n_seeds = len(g.points)
    if n_seeds > 1:
        deviation = sign * (g.weights @ (g.points - g.points.mean())) / n_seeds
        return deviation, float(g.points.var(ddof=1)) / n_seeds, float(n_seeds - 1)
    lent = g.borrowed
    if lent is None or lent.dof < 1 or not lent.variance > 0:
        return None
    return sign * g.weights[:, 0] * math.sqrt(lent.variance), float(lent.variance), float(lent.dof)


def _draws(groups: list[tuple[float, _SeedGroup]], level: float, clip: tuple[float, float]
           ) -> tuple[float, np.ndarray, str]:
    """(estimate, calibrated draws, how) for sum(sign * mean over seeds) of the groups; see the module docstring."""
    estimate, draws, seed_parts = 0.0, 0.0, []
    seed_var = seed_var_upper = df_terms = 0.0
    for sign, g in groups:
        draws = draws + sign * g.rows.mean(axis=0)             # test level: the seed mean on each patient resample
        estimate += sign * float(g.points.mean())
        part = _seed_part(sign, g)
        if part is not None:
            deviation, var_of_mean, dof = part
            seed_parts.append((deviation, var_of_mean))
            seed_var += var_of_mean
            # for the degrees of freedom only: its upper quartile given its dof (see the module docstring)
            upper = var_of_mean * dof / special.chdtri(dof, 1 - _SEED_VARIANCE_QUANTILE)
            seed_var_upper += upper
            df_terms += upper ** 2 / dof
    draws = np.asarray(draws, dtype=np.float64)
    if seed_var == 0:
        how = f"one seed: {NOT_COVERED}" if all(len(g.points) == 1 for _, g in groups) else "all seeds equal"
        return estimate, np.clip(draws, *clip), how
    test_var = float(draws.var(ddof=1)) if len(draws) > 1 else 0.0
    dof = max((test_var + seed_var_upper) ** 2 / df_terms, _MIN_DOF)
    widen = float(special.stdtrit(dof, 0.5 + level / 2) / special.ndtri(0.5 + level / 2))   # t_nu / z
    # seed variance that brings the total to (t/z)^2 (V_test + s^2/S); at least s^2/S since t >= z
    seed_scale = (widen ** 2 * (test_var + seed_var) - test_var) / seed_var
    for deviation, var_of_mean in seed_parts:
        spread = float(deviation.var(ddof=1)) if len(deviation) > 1 else 0.0
        if spread > 0:
            draws = draws + math.sqrt(seed_scale * var_of_mean / spread) * deviation
    how = f"seed level widened for few seeds to a t with {dof:.1f} df"
    lent = [g.borrowed.source for _, g in groups if len(g.points) == 1 and g.borrowed is not None]
    if lent:
        how = f"one seed: seed variance borrowed from {'; '.join(lent)}; {how}"
    return estimate, np.clip(draws, *clip), how


def seed_account(n_seeds: int, borrowed: SeedSpread | None) -> str:
    """Where a cell's seed level comes from, in words for the page: its own seeds, a lender, or nowhere."""
    if n_seeds > 1:
        return f"from {n_seeds} seeds"
    if borrowed is not None and borrowed.dof >= 1 and borrowed.variance > 0:
        return f"borrowed from {borrowed.source}"
    return NOT_COVERED


def _interval(estimate: float, draws: np.ndarray, level: float, what: str, how: str, n_seeds: int,
              seed_variance: str = "") -> Interval:
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    method = (f"{what}: {level:.0%} percentile interval of {len(draws)} two-level bootstrap draws over "
              f"{n_seeds} seed{'s' if n_seeds != 1 else ''} and the test patients ({how})")
    return Interval(float(estimate), float(low), float(high), level, method, n_seeds, seed_variance)


def _combined(draws, points, n_boot, seed: int, level: float, borrowed: SeedSpread | None = None
              ) -> tuple[float, np.ndarray, str, int]:
    rows, point = _runs(draws, points, "draws")
    level = _check_level(level)
    columns = _columns(rows.shape[1], n_boot)
    group = _SeedGroup(rows[:, columns], point, _seed_weights(len(point), len(columns), np.random.default_rng(seed)),
                       borrowed if len(point) == 1 else None)
    estimate, values, how = _draws([(1.0, group)], level, (0.0, 1.0))
    return estimate, values, how, len(point)


def combined_draws(draws, points, *, n_boot: int | None = None, seed: int = 0, level: float = 0.95,
                   borrowed: SeedSpread | None = None) -> np.ndarray:
    """The (n_boot,) two-level bootstrap draws of a recipe's mean AUROC over seeds (see the module docstring).

    ``draws`` (S, B): row s = ``bootstrap_auroc_samples`` of seed s's run, all
    with the same bootstrap seed; ``points`` (S,): each run's full-test AUROC.
    Draw b uses patient resample b (``n_boot`` defaults to B; more cycle
    through the B resamples) and seed multipliers from ``default_rng(seed)``,
    so calls with the same S and ``seed`` (two recipes, or one recipe at each
    N) share them. Kept so that a later fit (a learning curve) can be refitted
    on the very same draws. ``borrowed``: with one seed, the seed variance lent
    by another cell (ignored with 2 or more seeds, which measure their own).
    """
    return _combined(draws, points, n_boot, seed, level, borrowed)[1]


def combined_interval(draws, points, *, n_boot: int | None = None, seed: int = 0, level: float = 0.95,
                      borrowed: SeedSpread | None = None) -> Interval:
    """Mean full-test AUROC over seeds with a two-level (seeds x patients) bootstrap interval.

    With one seed and nothing ``borrowed`` it is exactly the test-set percentile
    interval of that run's patient bootstrap, and ``seed_variance`` says so.
    """
    estimate, values, how, n_seeds = _combined(draws, points, n_boot, seed, level, borrowed)
    return _interval(estimate, values, level, "mean AUROC over seeds", how, n_seeds,
                     seed_account(n_seeds, borrowed))


def paired_difference_draws(draws_a, points_a, draws_b, points_b, *, paired_seeds: bool = True,
                            n_boot: int | None = None, seed: int = 0, level: float = 0.95) -> np.ndarray:
    """Two-level bootstrap draws of mean AUROC(a) - mean AUROC(b) on the same test images and resamples.

    Column b of both sides must be the same patient resample (same bootstrap
    seed, same test images). ``paired_seeds``: seed s of a and b trained on the
    same N-subset, so the per-seed differences get one seed level (the same
    multipliers on both sides); otherwise each side has its own.
    """
    return _difference(draws_a, points_a, draws_b, points_b, paired_seeds, _Resampling(n_boot, seed, level))[1]


def paired_difference_interval(draws_a, points_a, draws_b, points_b, *, paired_seeds: bool = True,
                               n_boot: int | None = None, seed: int = 0, level: float = 0.95) -> Interval:
    """Recipe a minus recipe b with the patient resamples paired (and the seeds when ``paired_seeds``)."""
    estimate, values, how, n_seeds = _difference(draws_a, points_a, draws_b, points_b, paired_seeds,
                                                 _Resampling(n_boot, seed, level))
    what = "difference a - b, patients" + (" and seeds paired" if paired_seeds else " paired, seeds unpaired")
    return _interval(estimate, values, level, what, how, n_seeds)


def unpaired_difference_interval(draws_a, points_a, draws_b, points_b, *, n_boot: int | None = None, seed: int = 0,
                                 level: float = 0.95) -> Interval:
    """Recipe a minus recipe b as if the two sides were independent (neither patients nor seeds paired).

    The B resamples of side b are shuffled and each side has its own seed level,
    which is what one would get from two unrelated test sets. Only a reference:
    on the same test images it overstates the noise of the difference, and
    comparing it with ``paired_difference_interval`` shows what pairing buys.
    """
    estimate, values, how, n_seeds = _difference(draws_a, points_a, draws_b, points_b, False,
                                                 _Resampling(n_boot, seed, level, shuffle=True))
    return _interval(estimate, values, level, "difference a - b, unpaired", how, n_seeds)


class _Resampling(NamedTuple):
    """How a difference is resampled: ``n_boot`` patient-resample columns (None: all), the generator's
    ``seed``, the interval ``level``, and whether side b's resamples are shuffled (unpaired patients)."""
    n_boot: int | None
    seed: int
    level: float
    shuffle: bool = False


def _difference(draws_a, points_a, draws_b, points_b, paired_seeds: bool, how_resampled: _Resampling
                ) -> tuple[float, np.ndarray, str, int]:
    """(estimate, draws, method, seeds) of recipe a minus recipe b (see the public functions above)."""
    n_boot, seed, level, shuffle = how_resampled
    rows_a, point_a = _runs(draws_a, points_a, "draws_a")
    rows_b, point_b = _runs(draws_b, points_b, "draws_b")
    level = _check_level(level)
    if rows_a.shape[1] != rows_b.shape[1]:
        raise DataError(f"draws_b: {rows_b.shape[1]} resamples per seed but draws_a has {rows_a.shape[1]} "
                        "(both sides need the same patient resamples)")
    if paired_seeds and len(point_a) != len(point_b):
        raise DataError(f"draws_b: {len(point_b)} seeds but draws_a has {len(point_a)}; "
                        "paired seeds need the same seeds on both sides (or pass paired_seeds=False)")
    rng = np.random.default_rng(seed)
    columns = _columns(rows_a.shape[1], n_boot)
    columns_b = rng.permutation(rows_b.shape[1])[columns] if shuffle else columns
    if paired_seeds:
        group = _SeedGroup(rows_a[:, columns] - rows_b[:, columns_b], point_a - point_b,
                           _seed_weights(len(point_a), len(columns), rng))
        estimate, values, how = _draws([(1.0, group)], level, (-1.0, 1.0))
        return estimate, values, how, len(point_a)
    side_a = _SeedGroup(rows_a[:, columns], point_a, _seed_weights(len(point_a), len(columns), rng))
    side_b = _SeedGroup(rows_b[:, columns_b], point_b, _seed_weights(len(point_b), len(columns), rng))
    estimate, values, how = _draws([(1.0, side_a), (-1.0, side_b)], level, (-1.0, 1.0))
    return estimate, values, how, min(len(point_a), len(point_b))

"""The report's one uncertainty model: a recipe at an N, and the difference of two recipes, as the
two-level bootstrap of ``evaluate.uncertainty`` over the runs' own test draws (``report.draws``).

Every interval the report shows comes from here, so the learning-curve bands, the best-recipe
table, the gains and the CNN-vs-radiomics comparison say the same thing the same way. A row
whose runs have no draws (none recorded and no predictions to rebuild them from) keeps the
Student-t interval over seeds, and its ``ci_method`` says so.

A row with one seed cannot measure its seed spread, so it borrows one (``Intervals.lender``): the nearest N of
the same recipe (task, arch, method, recipe) with 2 or more seeds, nearest on a log scale since the grid's N
are, more seeds breaking ties; failing that, the other recipes of its (task, arch, method) at the same N,
their variances pooled. Seed spread shrinks with N, so a lender at a nearby N is the better guess; other
recipes at the same N are the fallback because their spread can differ in kind (a frozen backbone varies
less than a full fine-tune). Its ``seed_variance`` column names the lender, or says the seeds are not covered.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..evaluate.equivalence import TOST_LEVEL, bootstrap_p_value
from ..evaluate.summary import cv_corrected_ci, diff_ci, mean_ci
from ..evaluate.uncertainty import (NOT_COVERED, SeedSpread, combined_draws, paired_difference_draws,
                                    seed_account)
from .tables import runs_behind

LEVEL = 0.95
BOOTSTRAP = "two-level bootstrap"
T_OVER_SEEDS = "t over seeds"
METHOD = ("95% CI: two-level bootstrap of 1,000 patient resamples of the test set (the same resamples for every "
          "run) x the seeds (their spread widened for few seeds, so 2-3 seeds give an honest, not a 0-1, interval); "
          "a one-seed cell borrows the seed variance of the nearest N of the same recipe with 2 or more seeds (else "
          "of the other recipes at its N, pooled), as its seed_variance says, and without a lender it is labelled '"
          + NOT_COVERED + "'. Differences of two recipes are paired: the same patient "
          "resamples and the same seeds (same training subsets) on both sides.")


VAL_BOOTSTRAP = "seed-paired bootstrap over the validation predictions"
VAL_SEEDS = "paired t over the seeds' validation AUROCs"
NO_INTERVAL = "no interval (one shared seed, no validation predictions)"
VAL_FOLDS = ("fold-paired t over the seeds' cross-validation folds (Nadeau-Bengio corrected: fold scores share "
             "training images)")


class Difference(NamedTuple):
    """a - b with its 95% interval; ``p_value`` (two-sided, of a - b = 0) and the 90% interval (``low90``,
    ``high90``, for two one-sided tests) where the draws or the seeds give them, NaN otherwise."""
    mean: float
    low: float
    high: float
    method: str
    n_seeds: int
    p_value: float = float("nan")
    low90: float = float("nan")
    high90: float = float("nan")


def _quantiles(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _from_draws(values: np.ndarray, mean: float, method: str, n: int) -> Difference:
    """A Difference read off paired bootstrap draws: 95% and 90% percentile intervals and the bootstrap p."""
    return Difference(mean, *_quantiles(values), method, n, bootstrap_p_value(values),
                      *_quantiles(values, TOST_LEVEL))


def _paired_t(differences: np.ndarray, method: str) -> Difference:
    """Mean of per-seed paired differences with its 95% and 90% t-intervals (NaN with one seed)."""
    d95, d90 = mean_ci(differences, LEVEL), mean_ci(differences, TOST_LEVEL)
    return Difference(d95.mean, d95.low, d95.high, method, d95.n, low90=d90.low, high90=d90.high)


class Intervals:
    """Combined intervals (and their draws) per summary row; paired differences between two rows."""

    def __init__(self, summary: pd.DataFrame, runs: pd.DataFrame, draws: dict[str, np.ndarray],
                 val_draws: dict | None = None, pixel_draws: dict | None = None):
        self.summary, self.runs, self.draws = summary, runs, draws
        self.val_draws = val_draws or {}     # run_id -> RunDraws of its validation predictions
        self.pixel_draws = pixel_draws or {}   # run_id -> RunDraws of the pixel baseline fitted beside it
        self.row_draws: dict = {}            # summary index -> (B,) combined draws
        self._seeds: dict = {}
        self._val_cache: dict = {}

    def _runs_of(self, index) -> pd.DataFrame:
        """The done runs behind a summary row, one per seed, in seed order (seed s is row s at every N)."""
        if index not in self._seeds:
            runs = runs_behind(self.runs, self.summary.loc[index])
            self._seeds[index] = runs[runs["test_auroc"].notna()].sort_values("seed").drop_duplicates("seed")
        return self._seeds[index]

    def _matrix(self, runs: pd.DataFrame, test_set: str | None = None) -> np.ndarray | None:
        """(S, B) draws of ``runs``; None unless every run has draws of one test set (``test_set`` if given)."""
        got = [self.draws.get(r) for r in runs["run_id"]]
        if not got or any(d is None for d in got):
            return None
        sets = {d.test_set for d in got}
        if len(sets) != 1 or (test_set is not None and sets != {test_set}) or len({len(d.values) for d in got}) != 1:
            return None
        return np.stack([d.values for d in got])

    def _test_set(self, runs: pd.DataFrame) -> str | None:
        d = self.draws.get(runs["run_id"].iloc[0]) if len(runs) else None
        return None if d is None else d.test_set

    def _seed_spread(self, indices) -> SeedSpread | None:
        """The pooled seed variance of the rows ``indices`` that have 2 or more finished seeds (None: none)."""
        squares = dof = seeds = used = 0
        for index in indices:
            aurocs = self._runs_of(index)["test_auroc"].to_numpy(float)
            if len(aurocs) >= 2:
                squares += float(aurocs.var(ddof=1)) * (len(aurocs) - 1)
                dof, seeds, used = dof + len(aurocs) - 1, seeds + len(aurocs), used + 1
        return None if not dof else SeedSpread(squares / dof, dof, f"{used} row(s) ({seeds} seeds)")

    def lender(self, index) -> SeedSpread | None:
        """The seed variance a one-seed row borrows (see the module docstring); None when nothing can lend."""
        s, row = self.summary, self.summary.loc[index]
        same = ((s["task"] == row["task"]) & (s["method"].astype(str) == str(row["method"]))
                & (s["arch"].isna() if pd.isna(row["arch"]) else s["arch"] == row["arch"]) & (s.index != index))
        recipe = s[same & (s["recipe"] == row["recipe"]) & (s["n_seeds"] >= 2)]
        if len(recipe) and np.isfinite(float(row["N"])):
            distance = np.abs(np.log(recipe["N"].astype(float) / float(row["N"])))
            nearest = recipe.assign(_d=distance.round(9)).sort_values(["_d", "n_seeds"], ascending=[True, False])
            for lender_index in nearest.index:
                spread = self._seed_spread([lender_index])
                if spread is not None:
                    return SeedSpread(spread.variance, spread.dof, f"N={float(s.loc[lender_index, 'N']):,.0f} "
                                      f"of this recipe ({spread.dof + 1} seeds)")
        others = s[same & (s["recipe"] != row["recipe"]) & (s["n_train"] == row["n_train"]) & (s["n_seeds"] >= 2)]
        spread = self._seed_spread(others.index)
        if spread is None:
            return None
        return SeedSpread(spread.variance, spread.dof, f"the other recipes at this N, pooled: {spread.source}")

    def attach(self) -> pd.DataFrame:
        """The summary with its CI columns from the two-level bootstrap (``ci_method`` says which rows, and
        ``seed_variance`` where each row's seed level came from)."""
        out = self.summary.copy()
        out["ci_method"] = np.where(out["n_seeds"] >= 2, T_OVER_SEEDS, None)
        out["seed_variance"] = [f"from {int(n)} seeds" if n >= 2 else None for n in out["n_seeds"]]
        for index in out.index[out["n_seeds"] > 0]:
            runs = self._runs_of(index)
            matrix = self._matrix(runs)
            if matrix is None:
                continue
            lent = self.lender(index) if len(runs) == 1 else None
            values = combined_draws(matrix, runs["test_auroc"].to_numpy(float), seed=0, level=LEVEL, borrowed=lent)
            self.row_draws[index] = values
            out.loc[index, ["test_auroc_ci_low", "test_auroc_ci_high"]] = _quantiles(values)
            out.loc[index, "ci_method"] = BOOTSTRAP
            out.loc[index, "seed_variance"] = seed_account(len(runs), lent)
        self.summary = out
        return out

    def _paired(self, index_a, index_b) -> tuple[np.ndarray, float, int] | None:
        """(paired draws, mean per-seed difference, seeds) of row a minus row b over the seeds both finished."""
        runs_a, runs_b = self._runs_of(index_a), self._runs_of(index_b)
        common = sorted(set(runs_a["seed"]) & set(runs_b["seed"]))
        if not common:
            return None
        a, b = runs_a[runs_a["seed"].isin(common)], runs_b[runs_b["seed"].isin(common)]
        ma = self._matrix(a)
        mb = self._matrix(b, self._test_set(a))     # the same test images and resamples on both sides, or no pairing
        if ma is None or mb is None or ma.shape[1] != mb.shape[1]:
            return None
        pa, pb = a["test_auroc"].to_numpy(float), b["test_auroc"].to_numpy(float)
        values = paired_difference_draws(ma, pa, mb, pb, paired_seeds=True, seed=0, level=LEVEL)
        return values, float(np.mean(pa - pb)), len(common)

    def difference(self, index_a, index_b) -> Difference:
        """Row a minus row b: paired bootstrap over the seeds both finished; Welch t when draws are missing."""
        paired = self._paired(index_a, index_b)
        if paired is not None:
            values, mean, n = paired
            return _from_draws(values, mean, BOOTSTRAP, n)
        runs_a, runs_b = self._runs_of(index_a), self._runs_of(index_b)
        d = diff_ci(runs_a["test_auroc"], runs_b["test_auroc"])
        return Difference(d.mean, d.low, d.high, T_OVER_SEEDS, min(len(runs_a), len(runs_b)))

    def versus_pixels(self, index) -> tuple[Difference, float] | None:
        """(row minus the pixel baseline fitted beside each of its runs, that baseline's mean test AUROC), paired
        on the test patients and the seeds (each seed's baseline saw that seed's training images); None unless
        every seed's run recorded the baseline on the same test resamples as the run itself."""
        runs = self._runs_of(index)
        points = runs["pixels_test_auroc"].to_numpy(float) if "pixels_test_auroc" in runs else np.array([])
        got = [self.pixel_draws.get(r) for r in runs["run_id"]]
        model = self._matrix(runs) if len(runs) else None
        if model is None or not len(points) or not np.isfinite(points).all() or any(d is None for d in got):
            return None
        if {d.test_set for d in got} != {self._test_set(runs)} or {len(d.values) for d in got} != {model.shape[1]}:
            return None
        pa = runs["test_auroc"].to_numpy(float)
        values = paired_difference_draws(model, pa, np.stack([d.values for d in got]), points, paired_seeds=True,
                                         seed=0, level=LEVEL)
        return _from_draws(values, float(np.mean(pa - points)), BOOTSTRAP, len(runs)), float(points.mean())

    def _val_runs(self, index) -> pd.DataFrame:
        """The done runs behind a row with a validation AUROC, one per seed, in seed order."""
        runs = runs_behind(self.runs, self.summary.loc[index])
        return runs[runs["val_auroc"].notna()].sort_values("seed").drop_duplicates("seed")

    def _val_matrices(self, a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
        """(S, B) validation draws of both sides, or None unless seed s of both was scored on the same images."""
        got_a = [self.val_draws.get(r) for r in a["run_id"]]
        got_b = [self.val_draws.get(r) for r in b["run_id"]]
        if not got_a or any(d is None for d in got_a + got_b):
            return None
        if any(x.test_set != y.test_set for x, y in zip(got_a, got_b)) or len({len(d.values) for d in got_a + got_b}) != 1:
            return None
        return np.stack([d.values for d in got_a]), np.stack([d.values for d in got_b])

    @staticmethod
    def _folds(runs: pd.DataFrame) -> np.ndarray | None:
        """(S, K) fold AUROCs of cross-validated runs (runs.cv), or None unless every run has K of them."""
        if "cv_fold_auroc" not in runs or runs.empty:
            return None
        got = [f for f in runs["cv_fold_auroc"]]
        if any(not isinstance(f, list) or not f for f in got) or len({len(f) for f in got}) != 1:
            return None
        return np.array([[np.nan if v is None else v for v in f] for f in got], dtype=float)

    def val_difference(self, index_a, index_b) -> Difference:
        """Mean validation AUROC of row a minus row b over the seeds both finished: a seed-paired bootstrap over
        the validation predictions where every run kept them on the same images, else a paired t over the
        seeds' validation AUROCs (``method`` says which; NaN interval with one shared seed and no predictions)."""
        key = (index_a, index_b)
        if key not in self._val_cache:
            self._val_cache[key] = self._val_difference(index_a, index_b)
        return self._val_cache[key]

    def _val_difference(self, index_a, index_b) -> Difference:
        runs_a, runs_b = self._val_runs(index_a), self._val_runs(index_b)
        common = sorted(set(runs_a["seed"]) & set(runs_b["seed"]))
        a, b = runs_a[runs_a["seed"].isin(common)], runs_b[runs_b["seed"].isin(common)]
        pa, pb = a["val_auroc"].to_numpy(float), b["val_auroc"].to_numpy(float)
        if not common:
            return Difference(float("nan"), float("nan"), float("nan"), NO_INTERVAL, 0)
        folds_a, folds_b = self._folds(a), self._folds(b)
        if folds_a is not None and folds_b is not None and folds_a.shape == folds_b.shape:
            k = folds_a.shape[1]
            d95, d90 = (cv_corrected_ci((folds_a - folds_b).ravel(), k, level) for level in (LEVEL, TOST_LEVEL))
            return Difference(d95.mean, d95.low, d95.high, VAL_FOLDS, len(common), low90=d90.low, high90=d90.high)
        matrices = self._val_matrices(a, b)
        if matrices is not None:
            values = paired_difference_draws(matrices[0], pa, matrices[1], pb, paired_seeds=True, seed=0,
                                             level=LEVEL)
            return _from_draws(values, float(np.mean(pa - pb)), VAL_BOOTSTRAP, len(common))
        got = _paired_t(pa - pb, VAL_SEEDS)
        return got if len(common) >= 2 else got._replace(method=NO_INTERVAL)

    def val_se(self, index) -> tuple[float, str]:
        """(standard error of the row's mean validation AUROC, how): the sd of its two-level bootstrap over
        the validation predictions where every seed kept them, else sd / sqrt(seeds); NaN with one seed and
        no predictions."""
        runs = self._val_runs(index)
        points = runs["val_auroc"].to_numpy(float)
        folds = self._folds(runs)
        if folds is not None:
            return cv_corrected_ci(folds.ravel(), folds.shape[1]).sd, "corrected SE over the seeds' cv folds"
        got = [self.val_draws.get(r) for r in runs["run_id"]]
        if len(points) and all(d is not None for d in got) and len({len(d.values) for d in got}) == 1:
            values = combined_draws(np.stack([d.values for d in got]), points, seed=0, level=LEVEL)
            return float(np.std(values, ddof=1)), VAL_BOOTSTRAP
        if len(points) < 2:
            return float("nan"), NO_INTERVAL
        return float(points.std(ddof=1) / np.sqrt(len(points))), "sd over seeds / sqrt(seeds)"

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

from ..evaluate.summary import diff_ci
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


class Difference(NamedTuple):
    mean: float
    low: float
    high: float
    method: str
    n_seeds: int


def _quantiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


class Intervals:
    """Combined intervals (and their draws) per summary row; paired differences between two rows."""

    def __init__(self, summary: pd.DataFrame, runs: pd.DataFrame, draws: dict[str, np.ndarray]):
        self.summary, self.runs, self.draws = summary, runs, draws
        self.row_draws: dict = {}            # summary index -> (B,) combined draws
        self._seeds: dict = {}

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
            return Difference(mean, *_quantiles(values), BOOTSTRAP, n)
        runs_a, runs_b = self._runs_of(index_a), self._runs_of(index_b)
        d = diff_ci(runs_a["test_auroc"], runs_b["test_auroc"])
        return Difference(d.mean, d.low, d.high, T_OVER_SEEDS, min(len(runs_a), len(runs_b)))

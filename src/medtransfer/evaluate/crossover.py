"""Seed summaries, and the training-set size at which a CNN catches up with a baseline.

The seed paper's headline is of the form "the CNN needed N patients to be
comparable to, and M to outperform, radiomics". Here both numbers come from the
*paired* per-seed differences d(N) = AUROC(CNN) - AUROC(baseline): seed k of both
methods trained on the same nested subset and was tested on the same images, so
pairing cancels the luck of the draw that both share.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import DataError
from ..kinds import CrossoverOutcome
from .summary import mean_ci, t_interval

# What a reader sees for each outcome (the report pages and answer.json's *_note); no code compares these.
OUTCOME_TEXT = {
    CrossoverOutcome.ALREADY: "already at the smallest N",
    CrossoverOutcome.NEVER: "never within the studied N",
    CrossoverOutcome.NO_INTERVAL: "no interval at any N",
    CrossoverOutcome.NO_PAIRS: "no (N, seed) run of both methods",
    CrossoverOutcome.NO_TEST: "one seed per N and no DeLong interval: no test",
}

DEFINITION_SEEDS = (
    "d(N) = CNN test AUROC minus baseline test AUROC, paired by seed (same training subset, same test images). "
    "At each studied N: the mean of d over seeds and its {level:.0%} Student-t interval "
    "(an N where only one seed of both finished is left out). "
    "Comparable from N: the smallest N from which the upper bound of that interval is at least 0 at this and "
    "every larger studied N (the CNN is no longer significantly below the baseline). "
    "Outperforms from N: the same with the lower bound above 0 (significantly above). "
    "Between two studied N the bound is interpolated linearly in log N. "
    "Range: {level:.0%} percentile interval of that N over {n_boot} bootstrap resamples of the seeds "
    "(a seed is drawn with all its N together; deviations from the mean are inflated by sqrt(n/(n-1)) so that "
    "few seeds do not shrink the spread); '<' / '>' = outside the studied N. "
    "It reflects seed-to-seed variation on a fixed test set, not the sampling of the test set."
)
DEFINITION_DELONG = (
    "d(N) = CNN test AUROC minus baseline test AUROC on the same test images, one seed per N. "
    "At each studied N: the paired DeLong {level:.0%} interval of d. "
    "Comparable from N: the smallest N from which the upper bound is at least 0 at this and every larger "
    "studied N; outperforms from N: the same with the lower bound above 0. "
    "Between two studied N the bound is interpolated linearly in log N. "
    "No range: with one seed there is no seed-to-seed spread to resample."
)


def seed_summary(values, level: float = 0.95) -> dict:
    """mean, sd, n and the Student-t interval (ci_low, ci_high) over finite values; sd / CI NaN for n < 2."""
    s = mean_ci(values, level)
    return {"mean": s.mean, "sd": s.sd, "n": s.n, "ci_low": s.low, "ci_high": s.high}


def _curve(frame, name: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{name}: expected a DataFrame with columns N, seed, auroc")
    for col in ("N", "seed", "auroc"):
        if col not in frame.columns:
            raise DataError(f"{name}: missing column '{col}'")
    out = frame[["N", "seed", "auroc"]].copy()
    out["N"] = pd.to_numeric(out["N"], errors="coerce")
    out["auroc"] = pd.to_numeric(out["auroc"], errors="coerce")
    out = out[out["auroc"].notna() & out["N"].notna()]
    if (out["N"] <= 0).any():
        raise DataError(f"{name}: column 'N' must be positive (it is plotted on a log scale)")
    if out.duplicated(["N", "seed"]).any():
        raise DataError(f"{name}: more than one row for the same (N, seed)")
    return out


def paired_table(curve_cnn: pd.DataFrame, curve_base: pd.DataFrame) -> pd.DataFrame:
    """The (N, seed) pairs found in both curves, with d = cnn - base."""
    pairs = _curve(curve_cnn, "curve_cnn").merge(_curve(curve_base, "curve_base"), on=["N", "seed"],
                                                 suffixes=("_cnn", "_base"))
    pairs["d"] = pairs["auroc_cnn"] - pairs["auroc_base"]
    return pairs.sort_values(["N", "seed"], ignore_index=True)


def per_n_differences(pairs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per N: n_pairs, mean AUROC of each method, mean paired difference with sd and t-interval."""
    g = pairs.groupby("N", sort=True)
    out = g.agg(n_pairs=("d", "size"), cnn_mean=("auroc_cnn", "mean"), base_mean=("auroc_base", "mean"),
                diff_mean=("d", "mean"), diff_sd=("d", "std")).reset_index()
    out["diff_ci_low"], out["diff_ci_high"] = t_interval(out["diff_mean"], out["diff_sd"], out["n_pairs"], level)
    return out


def outcome_text(outcome: CrossoverOutcome | None) -> str | None:
    """The sentence shown for an outcome (None for None: a crossing was found)."""
    return None if outcome is None else OUTCOME_TEXT[CrossoverOutcome(outcome)]


def crossing(n_values, bound, strict: bool) -> tuple[float | None, CrossoverOutcome | None]:
    """(N*, None) where ``bound`` last rises to >= 0 (> 0 if ``strict``) for good, or (None, why not).

    Linear interpolation in log N between the last studied N that fails and the
    next one; N with a NaN bound are left out.
    """
    x, f = np.log(np.asarray(n_values, dtype=float)), np.asarray(bound, dtype=float)
    ok = np.isfinite(f)
    x, f = x[ok], f[ok]
    if len(x) == 0:
        return None, CrossoverOutcome.NO_INTERVAL
    past = f > 0 if strict else f >= 0
    if past.all():
        return None, CrossoverOutcome.ALREADY
    i = int(np.flatnonzero(~past)[-1])
    if i == len(x) - 1:
        return None, CrossoverOutcome.NEVER
    t = -f[i] / (f[i + 1] - f[i])
    return float(math.exp(x[i] + t * (x[i + 1] - x[i]))), None


def _seed_bootstrap(pairs: pd.DataFrame, n_values: np.ndarray, level: float, n_boot: int,
                    seed: int) -> dict[str, tuple]:
    """Percentile range of both crossing Ns over resamples of whole seeds (all N of a seed together).

    Resampling whole seeds keeps the correlation between the N of one seed (nested
    subsets). Deviations from each N's mean are inflated by sqrt(n/(n-1)), so the
    resampled means vary by s/sqrt(n) (the usual standard error), not by less.
    """
    wide = pairs.pivot(index="N", columns="seed", values="d").reindex(n_values).to_numpy()
    # with 3-5 seeds a plain bootstrap shrinks the spread by sqrt((n-1)/n): inflate the deviations to undo it
    n_at = np.isfinite(wide).sum(axis=1, keepdims=True)
    centre = np.nanmean(wide, axis=1, keepdims=True)
    wide = centre + (wide - centre) * np.sqrt(n_at / np.maximum(n_at - 1, 1))
    rng = np.random.default_rng(seed)
    draws = wide[:, rng.integers(0, wide.shape[1], size=(n_boot, wide.shape[1]))]   # (nN, B, S)
    count = np.isfinite(draws).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(draws, axis=2) / count
        sd = np.sqrt(np.nansum((draws - mean[..., None]) ** 2, axis=2) / (count - 1))
    low, high = t_interval(mean, sd, count, level)
    alpha = 1 - level
    ranges = {}
    for key, bounds, strict in (("comparable", high, False), ("outperform", low, True)):
        found = []
        for b in range(n_boot):
            n_star, reason = crossing(n_values, bounds[:, b], strict)
            found.append(n_star if n_star is not None else (-math.inf if reason is CrossoverOutcome.ALREADY else math.inf))
        lo, hi = np.quantile(np.asarray(found), [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
        ranges[key] = (None if math.isinf(lo) else float(lo), None if math.isinf(hi) else float(hi))
    return ranges


DEFINITION_PAIRED = (
    "d(N) = CNN test AUROC minus baseline test AUROC on the same test images, mean over the seeds both finished. "
    "At each studied N: its {level:.0%} paired two-level bootstrap interval (the same patient resamples and the "
    "same seeds on both sides). "
    "Comparable from N: the smallest N from which the upper bound is at least 0 at this and every larger "
    "studied N; outperforms from N: the same with the lower bound above 0. "
    "Between two studied N the bound is interpolated linearly in log N. "
    "The learning-curve fit in Key results extrapolates beyond the studied N."
)


def _paired_bootstrap_crossover(out: dict, per_n: pd.DataFrame, intervals: pd.DataFrame, n_values: np.ndarray,
                                level: float) -> dict:
    """:func:`crossover`'s result ``out`` completed from the paired bootstrap intervals of d(N) (same patients,
    same seeds): they replace the t-intervals in ``per_n``; an N whose runs lack draws keeps its t-interval
    (NaN with one seed). No range for the crossing N: the learning-curve fit gives that."""
    paired = intervals.groupby("N")[["ci_low", "ci_high", "diff"]].mean().reindex(n_values)
    has = paired["ci_low"].notna().to_numpy()
    for column, source in (("diff_mean", "diff"), ("diff_ci_low", "ci_low"), ("diff_ci_high", "ci_high")):
        per_n.loc[has, column] = paired[source].to_numpy()[has]
    out.update(method="paired bootstrap", definition=DEFINITION_PAIRED.format(level=level)
               + ("" if has.all() else " An N where a run has no bootstrap draws keeps the Student-t "
                                       "interval of the per-seed differences."))
    out["comparable_n"], out["comparable_reason"] = crossing(n_values, per_n["diff_ci_high"].to_numpy(), strict=False)
    out["outperform_n"], out["outperform_reason"] = crossing(n_values, per_n["diff_ci_low"].to_numpy(), strict=True)
    out["ci_note"] = "no range: the learning-curve fit (Key results) gives the crossing N with its interval"
    return out


def _seed_or_delong_bounds(per_n: pd.DataFrame, delong: pd.DataFrame | None, n_values: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(upper, lower, method) bounds of d(N): the seeds' t-intervals ('seeds'); with one seed at every N the
    paired DeLong interval ('delong') when given, else no test (None, the t-bounds, NaN, kept)."""
    upper, lower = per_n["diff_ci_high"].to_numpy(), per_n["diff_ci_low"].to_numpy()
    if not (per_n["n_pairs"] < 2).all():
        return upper, lower, "seeds"
    if delong is not None and not delong.empty:
        dl = delong.groupby("N")[["ci_low", "ci_high"]].mean().reindex(n_values)
        return dl["ci_high"].to_numpy(), dl["ci_low"].to_numpy(), "delong"
    return upper, lower, None


def crossover(curve_cnn: pd.DataFrame, curve_base: pd.DataFrame, *, level: float = 0.95, n_boot: int = 2000,
              seed: int = 0, delong: pd.DataFrame | None = None, intervals: pd.DataFrame | None = None) -> dict:
    """Smallest N from which a CNN is comparable to / outperforms a baseline (see ``definition`` in the result).

    ``curve_cnn`` / ``curve_base``: columns N, seed, auroc, one row per run;
    rows are paired on (N, seed). ``delong`` (optional; columns N, ci_low,
    ci_high of the paired DeLong interval of cnn - base) is used when no N has
    two seeds. Returns comparable_n, comparable_n_ci, comparable_reason,
    outperform_n, outperform_n_ci, outperform_reason, method ('seeds' |
    'delong' | None), per_n (DataFrame), definition and ci_note. A crossing N is
    None when there is no crossing (reason: a ``CrossoverOutcome``, e.g. NEVER within the studied N or
    ALREADY at the smallest N; ``outcome_text`` gives its sentence); a range end is None when it lies outside the
    studied N (below the smallest / beyond the largest), the whole range None
    when it cannot be estimated (ci_note says why).
    """
    if not 0 < level < 1:
        raise DataError(f"level: must lie in (0, 1), got {level}")
    pairs = paired_table(curve_cnn, curve_base)
    per_n = per_n_differences(pairs, level)
    out = {"comparable_n": None, "comparable_n_ci": None, "comparable_reason": None, "outperform_n": None,
           "outperform_n_ci": None, "outperform_reason": None, "method": None, "per_n": per_n,
           "definition": DEFINITION_SEEDS.format(level=level, n_boot=n_boot), "ci_note": None}
    if per_n.empty:
        out["comparable_reason"] = out["outperform_reason"] = CrossoverOutcome.NO_PAIRS
        return out
    n_values = per_n["N"].to_numpy(float)
    if intervals is not None and not intervals.empty:
        return _paired_bootstrap_crossover(out, per_n, intervals, n_values, level)
    upper, lower, method = _seed_or_delong_bounds(per_n, delong, n_values)
    if method == "delong":
        out["definition"] = DEFINITION_DELONG.format(level=level)
    out["method"] = method
    out["comparable_n"], out["comparable_reason"] = crossing(n_values, upper, strict=False)
    out["outperform_n"], out["outperform_reason"] = crossing(n_values, lower, strict=True)
    if method is None:
        out["comparable_reason"] = out["outperform_reason"] = CrossoverOutcome.NO_TEST
        return out
    n_seeds = pairs["seed"].nunique()
    if method == "delong":
        out["ci_note"] = "one seed: no seed-to-seed spread to resample"
    elif n_seeds < 3:
        out["ci_note"] = f"{n_seeds} seeds: too few to resample for a range (3 or more needed)"
    else:
        ranges = _seed_bootstrap(pairs, n_values, level, int(n_boot), seed)
        for key in ("comparable", "outperform"):
            if out[f"{key}_n"] is not None:
                out[f"{key}_n_ci"] = ranges[key]
    return out

"""The seed paper's claims, each with this study's verdict and its numbers (answer.json ``claims``, and the table
at the top of report.html).

Romero et al. (Med Phys 2020) made six claims a reader of this study will hold it against. Each is checked
only where this study measured what the claim is about, with the paired test-set differences the rest of the
report shows (``report.intervals``):

* *supported*: where the claim says "better", the difference is above 0 at one or more studied N (Holm-adjusted
  over the N the claim covers) and below 0 at none; where it says "about equal", two one-sided tests put every
  studied N inside the equivalence margin;
* *contradicted*: the opposite is shown (a significant difference the other way, or, for "about equal", a
  significant difference at some N);
* *within noise*: measured, but neither is shown (intervals too wide, or both directions at different N);
* *not tested here*: the study has no runs that answer it (no ImageNet runs finished, no N in the claim's
  range, another architecture or task), said with what is missing.

A verdict is about this study's data and N, never a re-judgement of the paper.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..evaluate.equivalence import ALPHA, holm
from ..kinds import StrEnum
from .tables import RADIOMICS, display_recipe, n_keys_in_order, panel_rows, panels
from .tables import json_num as _num

PAPER = "Romero et al., Med Phys 2020"
SMALL_N = 2000          # "below 2,000": the paper's small-data regime
LARGE_N = 35000         # "little tuning needed above 35,000"
RECIPE_WORTH = 0.15     # "the recipe is worth > 15% AUC" (relative)


class Verdict(StrEnum):
    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    WITHIN_NOISE = "within noise"
    NOT_TESTED = "not tested here"


@dataclass
class Claim:
    """One claim of the paper and what this study says of it."""
    key: str
    claim: str
    verdict: Verdict
    evidence: str                                      # one line, numbers with 95% CIs
    per_n: list[dict] = field(default_factory=list)    # the comparisons behind the verdict

    def to_json(self) -> dict:
        out = asdict(self)
        out["verdict"] = self.verdict.value
        return out


def _where(task, arch) -> str:
    """A panel in plain words (answer.json): 'task / arch', or the task alone."""
    return f"{task} / {arch}" if isinstance(arch, str) else str(task)


def _n(value) -> str:
    return f"{int(value):,}" if value is not None and np.isfinite(value) else "all"


def _rows(gain: pd.DataFrame, init_kind: str, versus_kind: str, below: float | None) -> pd.DataFrame:
    """The gain rows of one comparison (init kind over versus kind), at N below ``below`` where given."""
    if gain.empty or "init_kind" not in gain:
        return gain.iloc[:0]
    sel = (gain["init_kind"] == init_kind) & (gain["versus_kind"] == versus_kind) & gain["gain_ci_low"].notna()
    if below is not None:
        sel &= pd.to_numeric(gain["N"], errors="coerce") < below
    return gain[sel]


def _per_n(rows: pd.DataFrame, adjusted: np.ndarray) -> list[dict]:
    return [{"where": _where(r.task, r.arch), "init": r.init,
             "versus": r.versus, "N": _num(r.N), "difference": _num(r.gain), "ci_low": _num(r.gain_ci_low),
             "ci_high": _num(r.gain_ci_high), "percent": _num(r.gain_percent), "p_holm": _num(p)}
            for r, p in zip(rows.itertuples(), adjusted)]


def _significant(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Holm-adjusted p, above 0, below 0): significance from the adjusted p where the draws give a p, else
    from the 95% interval excluding 0."""
    p = pd.to_numeric(rows["gain_p"], errors="coerce").to_numpy(float)
    adjusted = holm(p) if np.isfinite(p).any() else p
    low, high = rows["gain_ci_low"].to_numpy(float), rows["gain_ci_high"].to_numpy(float)
    sig = np.where(np.isfinite(adjusted), adjusted < ALPHA, (low > 0) | (high < 0))
    est = rows["gain"].to_numpy(float)
    return adjusted, sig & (est > 0), sig & (est < 0)


def _evidence(rows: pd.DataFrame) -> str:
    parts = [f"{r.init} - {r.versus} {r.gain:+.3f} [{r.gain_ci_low:+.3f}, {r.gain_ci_high:+.3f}] at N = {_n(r.N)}"
             for r in rows.itertuples()]
    return "; ".join(parts[:6]) + (f"; and {len(parts) - 6} more" if len(parts) > 6 else "")


def better_claim(gain: pd.DataFrame, key: str, text: str, kinds: tuple[str, str], missing: str) -> Claim:
    """"``kinds[0]`` beats ``kinds[1]`` below 2,000": supported / contradicted / within noise (Holm over N)."""
    rows = _rows(gain, kinds[0], kinds[1], SMALL_N)
    if rows.empty:
        return Claim(key, text, Verdict.NOT_TESTED, missing)
    adjusted, above, below = _significant(rows)
    verdict = (Verdict.SUPPORTED if above.any() and not below.any() else
               Verdict.CONTRADICTED if below.any() and not above.any() else Verdict.WITHIN_NOISE)
    best = rows.loc[rows["gain_percent"].idxmax()]
    size = f"; largest gain {best['gain_percent']:+.1f}% at N = {_n(best['N'])}" if np.isfinite(best["gain_percent"]) else ""
    return Claim(key, text, verdict, _evidence(rows) + size + " (Holm-adjusted over the N)", _per_n(rows, adjusted))


def equal_claim(gain: pd.DataFrame, margin: float) -> Claim:
    """"Other-site sources are no better than ImageNet": equivalence within ``margin`` at every studied N."""
    text = "Pretraining on X-rays of another body site is about equal to ImageNet"
    rows = _rows(gain, "other", "imagenet", None)
    if rows.empty:
        return Claim("other_site_equals_imagenet", text, Verdict.NOT_TESTED,
                     "needs finished other-site and ImageNet runs at the same N (none here)")
    adjusted, above, below = _significant(rows)
    low90, high90 = rows["gain_ci90_low"].to_numpy(float), rows["gain_ci90_high"].to_numpy(float)
    inside = np.isfinite(low90) & (low90 > -margin) & (high90 < margin)
    verdict = (Verdict.CONTRADICTED if (above | below).any() else
               Verdict.SUPPORTED if inside.all() else Verdict.WITHIN_NOISE)
    how = f"; equivalence margin +/-{margin:g} AUROC (two one-sided tests on the 90% interval)"
    return Claim("other_site_equals_imagenet", text, verdict, _evidence(rows) + how, _per_n(rows, adjusted))


def radiomics_claim(measured: list[dict]) -> Claim:
    """DenseNet121 vs radiomics on the 14-label task: comparable from ~1,600, better from ~10,000."""
    text = ("DenseNet121 needs about 1,600 patients to be comparable to radiomics + logistic regression and "
            "10,000 to beat it (14-label task)")
    key = "densenet_vs_radiomics"
    ours = [m for m in measured if m["task_kind"] == "multilabel" and "densenet121" in str(m["arch"])]
    if not ours:
        others = "; ".join(f"{m['where']}: {m['init']} {_from_n(m.get('comparable_from_N'), m.get('outperforms_from_N'))}"
                           for m in measured[:3])
        return Claim(key, text, Verdict.NOT_TESTED, "needs a DenseNet121 multi-label panel with the radiomics "
                     "baseline" + (f"; this study's own comparisons: {others}" if others else ""))
    parts, fits = [], []
    for m in ours:
        comparable, better = m.get("comparable_from_N"), m.get("outperforms_from_N")
        parts.append(f"{m['init']}: {_from_n(comparable, better)}")
        fits.append(_near(comparable, 1600) and _near(better, 10000))
    early = any((m.get("outperforms_from_N") or math.inf) <= 800 for m in ours)
    verdict = Verdict.SUPPORTED if any(fits) else Verdict.CONTRADICTED if early else Verdict.WITHIN_NOISE
    return Claim(key, text, verdict, "; ".join(parts) + " (studied N brackets, no interpolation)", ours)


def _from_n(comparable, better) -> str:
    """'comparable from N = 800, better from N = 800', or 'comparable at no N studied, better at no N studied'."""
    return (f"comparable {f'from N = {comparable}' if comparable else 'at no N studied'}, "
            f"better {f'from N = {better}' if better else 'at no N studied'}")


def _near(n, target: float) -> bool:
    """A studied N within a factor of 2 of the paper's figure."""
    return n is not None and target / 2 <= float(n) <= target * 2


def spread_claim(spreads: list[dict], large: bool) -> Claim:
    """How much the recipe matters: best minus worst recipe's test AUROC at an N (paired), relative to the worst."""
    if large:
        key, text = "little_tuning_above_35000", "Above 35,000 images little tuning is needed"
        rows = [s for s in spreads if s["N"] is not None and s["N"] >= LARGE_N]
    else:
        key, text = "recipe_worth_15_percent", "Below 2,000 images the choice of recipe is worth more than 15% AUC"
        rows = [s for s in spreads if s["N"] is not None and s["N"] < SMALL_N]
    if not rows:
        span = f"N >= {LARGE_N:,}" if large else f"N < {SMALL_N:,}"
        return Claim(key, text, Verdict.NOT_TESTED, f"no studied N in the claim's range ({span})")
    evidence = "; ".join(f"{s['where']}, N = {_n(s['N'])}: {s['best']} over {s['worst']} {s['percent']:+.1f}% "
                         f"[{s['percent_low']:+.1f}%, {s['percent_high']:+.1f}%]" for s in rows[:6])
    evidence += " (best and worst recipe picked on test, so the spread is an upper estimate)"
    lows = [s["percent_low"] / 100 for s in rows]
    highs = [s["percent_high"] / 100 for s in rows]
    if large:
        verdict = (Verdict.SUPPORTED if all(h < RECIPE_WORTH / 3 for h in highs) else
                   Verdict.CONTRADICTED if any(lo > RECIPE_WORTH / 3 for lo in lows) else Verdict.WITHIN_NOISE)
    else:
        verdict = (Verdict.SUPPORTED if any(lo > RECIPE_WORTH for lo in lows) else
                   Verdict.CONTRADICTED if all(h < RECIPE_WORTH for h in highs) else Verdict.WITHIN_NOISE)
    return Claim(key, text, verdict, evidence, rows)


def check_claims(gain: pd.DataFrame, measured: list[dict], spreads: list[dict], margin: float) -> list[Claim]:
    """The six claims, in the paper's order (see the module docstring)."""
    missing = "needs finished same-site and {} runs at the same N below 2,000 (none here)"
    return [
        better_claim(gain, "same_site_beats_imagenet", "Same-site (chest X-ray) pretraining beats ImageNet below "
                     "2,000 images, by up to 15% AUC", ("same", "imagenet"), missing.format("ImageNet")),
        better_claim(gain, "same_site_beats_other_site", "Same-site pretraining beats pretraining on X-rays of "
                     "another body site below 2,000 images", ("same", "other"), missing.format("other-site")),
        equal_claim(gain, margin),
        radiomics_claim(measured),
        spread_claim(spreads, large=False),
        spread_claim(spreads, large=True),
    ]


def recipe_spreads(summary: pd.DataFrame, intervals) -> list[dict]:
    """Per panel and N: the best and the worst CNN recipe by mean test AUROC and their paired difference,
    also relative to the worst (the paper's "% AUC"), with the 95% interval."""
    out = []
    for task, arch in panels(summary):
        panel = panel_rows(summary, task, arch)
        cnn = panel[(panel["method"] != RADIOMICS) & (panel["n_seeds"] > 0) & panel["test_auroc_mean"].notna()]
        for nk in n_keys_in_order(cnn):
            at = cnn[cnn["n_train"] == nk].sort_values("test_auroc_mean", ascending=False, kind="stable")
            if len(at) < 2:
                continue
            best, worst = at.index[0], at.index[-1]
            d = intervals.difference(best, worst)
            base = float(at.loc[worst, "test_auroc_mean"])
            if not (np.isfinite(d.low) and base > 0):
                continue
            out.append({"where": _where(task, arch), "N": _num(at.loc[best, "N"]),
                        "best": display_recipe(at.loc[best]), "worst": display_recipe(at.loc[worst]),
                        "difference": _num(d.mean), "ci_low": _num(d.low), "ci_high": _num(d.high),
                        "percent": 100 * d.mean / base, "percent_low": 100 * d.low / base,
                        "percent_high": 100 * d.high / base})
    return out


def measured_crossovers(panels_out: list[dict]) -> list[dict]:
    """answer.json's measured CNN-vs-radiomics brackets, with the panel each belongs to."""
    return [{"where": _where(p["task"], p["arch"]), "task_kind": p["task_kind"], "arch": p["arch"], **m}
            for p in panels_out for m in p["crossover_vs_radiomics"]["measured"]]

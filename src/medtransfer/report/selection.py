"""Which recipe the report names at an N, and which recipes it cannot tell apart from the best there.

At small N the validation split is a handful of images: most recipes score validation AUROC 1.000, and
"the best" would be decided by whatever breaks the tie (formerly the recipe's name). So per (task, arch, N):

* the best is the highest mean validation AUROC over seeds;
* every other recipe gets its paired difference to the best (``Intervals.val_difference``: a seed-paired
  bootstrap over the validation predictions where runs kept them, else a paired t over the seeds' validation
  AUROCs); those whose 95% interval contains 0 are *within noise* of the best (no interval: not separable);
* the named pick follows the one-standard-error rule (Breiman et al. 1984): among the recipes whose mean
  validation AUROC is within one SE of the best's, the cheapest (COST_ORDER, then fewer optimiser steps);
  at equal cost the higher mean; at an exact tie the page and answer.json say "tied" and list them, and
  the one shown is the one that trained in fewer seconds (a cost, never a name).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ..kinds import RunMethod
from .intervals import Difference, Intervals
from .tables import STRATEGY_COST, display_recipe, runs_behind

ONE_SE = ("one-standard-error rule: the cheapest recipe whose mean validation AUROC is within 1 SE of the "
          "best's (cost: radiomics + LR < probe < frozen < gradual < full, then fewer optimiser steps; at equal cost the "
          "higher mean validation AUROC; never the name)")
TOLERANCE = 1e-9     # validation AUROCs equal to this are equal (means of the same few fractions)


@dataclass
class Choice:
    """The selection at one (task, arch, N); indices are summary row labels."""
    best: object                       # highest mean validation AUROC
    pick: object                       # the named recipe (ONE_SE)
    rule: str                          # why the pick, in words (pick_rule)
    tied: list = field(default_factory=list)          # indices exactly tied with the pick on cost and mean
    within_noise: list = field(default_factory=list)  # indices not separable from the best (best included)
    n_recipes: int = 0
    se: float = math.nan
    se_method: str = ""
    methods: list = field(default_factory=list)       # how the validation differences were made
    runner_up: object = None           # the highest mean validation AUROC other than the pick
    test_difference: Difference | None = None         # pick minus runner-up, on test (paired)


def _cost(row: pd.Series, runs: pd.DataFrame) -> tuple[int, float]:
    """(strategy rank in COST_ORDER, median optimiser steps of its runs; 0 for radiomics, inf unknown)."""
    if row["method"] == RunMethod.RADIOMICS:
        return 0, 0.0
    strategy = str(row.get("strategy"))
    rank = STRATEGY_COST.get(strategy, len(STRATEGY_COST))
    steps = runs_behind(runs, row)["steps"].median() if "steps" in runs else math.nan
    return rank, float(steps) if pd.notna(steps) else math.inf


def _pick(rows: pd.DataFrame, candidates: list, runs: pd.DataFrame) -> tuple[object, str, list]:
    """(pick, rule, tied) among ``candidates`` (within 1 SE of the best) by cost, then mean, then 'tied'."""
    costs = {i: _cost(rows.loc[i], runs) for i in candidates}
    cheapest = min(costs.values())
    same_cost = [i for i in candidates if costs[i] == cheapest]
    top = max(rows.loc[i, "val_auroc_mean"] for i in same_cost)
    tied = [i for i in same_cost if rows.loc[i, "val_auroc_mean"] >= top - TOLERANCE]
    if len(candidates) == 1:
        return candidates[0], "highest mean validation AUROC; no other recipe within 1 SE", []
    if len(same_cost) == 1:
        return same_cost[0], ONE_SE, []
    if len(tied) == 1:
        return tied[0], ONE_SE + f"; {len(same_cost)} recipes at equal cost: the higher mean validation AUROC", []
    seconds = {i: rows.loc[i, "seconds_mean"] for i in tied}
    pick = min(tied, key=lambda i: (seconds[i] if pd.notna(seconds[i]) else math.inf, -rows.loc[i, "n_seeds"]))
    names = ", ".join(display_recipe(rows.loc[i]) for i in tied)
    return pick, (ONE_SE + f"; tied: {len(tied)} recipes equal on cost and mean validation AUROC ({names}); "
                  "the one shown trained in the fewest seconds"), tied


def choose(rows: pd.DataFrame, intervals: Intervals) -> Choice | None:
    """The :class:`Choice` among one panel's summary ``rows`` at one N (rows of ``intervals.summary``)."""
    rows = rows[rows["n_seeds"] > 0]
    scored = rows[rows["val_auroc_mean"].notna()].sort_values("val_auroc_mean", ascending=False, kind="stable")
    if scored.empty:
        return None
    best = scored.index[0]
    top = float(scored.loc[best, "val_auroc_mean"])
    se, se_method = intervals.val_se(best)
    reach = top - (se if math.isfinite(se) else 0.0) - TOLERANCE
    candidates = [i for i in scored.index if scored.loc[i, "val_auroc_mean"] >= reach]
    pick, rule, tied = _pick(scored, candidates, intervals.runs)
    if se == 0:
        rule += ("; the best's SE is 0 (every seed and validation resample scores the same), so only an exact "
                 "tie is within 1 SE: see the recipes within noise")
    within, methods = [best], []
    for i in scored.index[1:]:
        d = intervals.val_difference(i, best)
        methods.append(d.method)
        if not (math.isfinite(d.low) and math.isfinite(d.high)) or d.low <= 0 <= d.high:
            within.append(i)
    others = [i for i in scored.index if i != pick]
    runner = others[0] if others else None
    return Choice(best=best, pick=pick, rule=rule, tied=tied, within_noise=within, n_recipes=len(scored),
                  se=se, se_method=se_method, methods=sorted(set(methods)), runner_up=runner,
                  test_difference=None if runner is None else intervals.difference(pick, runner))


def noise_line(choice: Choice) -> str:
    """'k of m recipes within noise of the best' (the page's and answer.json's words)."""
    return f"{len(choice.within_noise)} of {choice.n_recipes} recipes within noise of the best"


def within_names(choice: Choice, rows: pd.DataFrame) -> list[str]:
    return [display_recipe(rows.loc[i]) for i in choice.within_noise]


def selection_at(runs: pd.DataFrame, ranked: pd.DataFrame) -> dict:
    """How the recipes ranked at one N were selected (runs.cv): answer.json's ``selection`` (cv, holdout, or
    mixed where runs of one N differ, e.g. runs recorded before cross-validated selection) and a line saying
    what cv was. ``ranked``: the summary rows at that N."""
    behind = pd.concat([runs_behind(runs, ranked.loc[i]) for i in ranked.index]) if len(ranked) else runs.iloc[:0]
    kinds = sorted(set(behind["selection"].dropna())) if "selection" in behind else []
    kind = kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "holdout")
    if kind != "cv":
        return {"selection": kind, "selection_note": (
            "on the validation images" if kind == "holdout" else
            f"mixed: some runs at this N cross-validated, others selected on the validation images ({', '.join(kinds)})")}
    folds = behind["cv_fold_auroc"].map(lambda f: len(f) if isinstance(f, list) else None).dropna()
    pool = behind["cv_pool_images"].dropna()
    k = int(folds.mode().iloc[0]) if len(folds) else None
    size = f"{int(pool.median())} images" if len(pool) else "its images"
    return {"selection": "cv", "cv_folds": k, "pool_images": int(pool.median()) if len(pool) else None,
            "selection_note": (f"{k}-fold patient-grouped, stratified cross-validation over the N-pool ({size}: the "
                               "training images and the validation images a user with N would hold out), the same "
                               "folds for every recipe; ranked by mean fold AUROC, each final model trained on the "
                               "whole pool")}


def mark_init_picks(summary: pd.DataFrame, intervals: Intervals) -> pd.DataFrame:
    """``summary`` with ``init_pick``: True on the recipe the selection rule (``choose``) names for each
    initialisation at each (task, arch, N). Every table and figure that shows "the chest recipe" at an N
    (gains, learning curves, CNN vs radiomics) shows this one, so no two of them contradict each other."""
    out = summary.copy()
    out["init_pick"] = False
    done = out[out["n_seeds"] > 0]
    keys = ["task", "arch", "n_train", "method", "init"]
    for _, group in done.groupby(keys, dropna=False, sort=False):
        choice = choose(group, intervals)
        if choice is not None:
            out.loc[choice.pick, "init_pick"] = True
    return out

"""Backbones compared head to head: "or should I just put a linear probe on a foundation model?" (issue 25).

The report panels by (task, arch): each backbone's recipes are ranked and named within its own panel, since a
recipe (init x strategy x LR policy) means something else on another network. The question a user of a study with
several backbones asks is across the panels: at this N, does the best RAD-DINO recipe beat the best ResNet-18
recipe? So, per task and N where two or more backbones ran:

* each backbone's recipe is its named CNN recipe: the one-standard-error rule on validation (``selection.choose``)
  among that backbone's CNN recipes, which is the panel's pick unless the panel names the radiomics baseline (a
  study with ``baselines: [radiomics]``): the radiomics model is no backbone, and the panel says how it compares;
* the reference is the backbone whose named recipe has the highest mean validation AUROC (validation decides, as
  everywhere in the report; the test split only measures);
* every other backbone's named recipe is compared with it on the test split: the paired difference (the same
  patient resamples and the same seeds on both sides, ``Intervals.difference``) with its 95% interval. A
  difference whose interval contains 0 is "within noise" of the reference; neither is shown better.
"""
from __future__ import annotations

import math

import pandas as pd

from .intervals import Intervals
from .selection import choose
from .tables import RADIOMICS, display_recipe, marked_recipe, n_keys_in_order, ranked_recipes
from .tables import json_num as _num

REFERENCE_RULE = ("each backbone's recipe: the one-standard-error rule on validation among its CNN recipes; reference: "
                  "the backbone whose recipe has the highest mean validation AUROC; the others are compared with it on "
                  "the test split, paired on the same resamples of test patients and the same seeds where both have "
                  "them (else as the method says)")


def _named(rows: pd.DataFrame, intervals: Intervals):
    """The CNN recipe one backbone's rows at one N name (None when none finished)."""
    ranked = ranked_recipes(rows)
    if ranked.empty:
        return None
    choice = choose(ranked, intervals)
    return ranked.loc[choice.pick] if choice is not None else ranked.iloc[0]


def _entry(row: pd.Series, versus: dict | None) -> dict:
    return {"arch": str(row["arch"]), "recipe": display_recipe(row), "shown": marked_recipe(row),
            "n_seeds": int(row["n_seeds"]), "val_auroc": _num(row["val_auroc_mean"]),
            "test_auroc": _num(row["test_auroc_mean"]), "ci_low": _num(row["test_auroc_ci_low"]),
            "ci_high": _num(row["test_auroc_ci_high"]), "versus_reference": versus}


def _versus(intervals: Intervals, index, reference) -> dict:
    d = intervals.difference(index, reference)
    low, high = _num(d.low), _num(d.high)
    within = None if low is None or high is None else bool(low <= 0 <= high)
    return {"estimate": _num(d.mean), "low": low, "high": high, "method": d.method, "seeds": int(d.n_seeds),
            "within_noise": within}


def compare_backbones(summary: pd.DataFrame, intervals: Intervals) -> list[dict]:
    """answer.json's ``backbones``: one entry per (task, N) where two or more backbones named a recipe."""
    cnn = summary[(summary["method"] != RADIOMICS) & summary["arch"].notna()]
    out = []
    for task, rows in cnn.groupby("task", sort=True):
        archs = sorted(rows["arch"].unique())
        if len(archs) < 2:
            continue
        for nk in n_keys_in_order(rows):
            named = [r for r in (_named(rows[(rows["arch"] == a) & (rows["n_train"] == nk)], intervals)
                                 for a in archs) if r is not None]
            if len(named) < 2:
                continue
            reference = max(named, key=lambda r: (-math.inf if pd.isna(r["val_auroc_mean"])
                                                  else float(r["val_auroc_mean"])))
            entries = [_entry(r, None if r.name == reference.name else _versus(intervals, r.name, reference.name))
                       for r in named]
            out.append({"task": task, "n_train": nk, "N": int(reference["N"]) if pd.notna(reference["N"]) else None,
                        "reference_arch": str(reference["arch"]), "rule": REFERENCE_RULE, "backbones": entries})
    return out


def versus_word(v: dict) -> str | None:
    """What a ``versus_reference`` difference says: within noise, better or worse by its interval; None when it has
    no interval (then nothing is said of it)."""
    if v["estimate"] is None or v["within_noise"] is None:
        return None
    return "within noise" if v["within_noise"] else ("better" if v["low"] > 0 else "worse")


def backbone_lines(compared: list[dict]) -> list[str]:
    """The verdict's lines for ``compare_backbones``: per task and N, the reference backbone and how far each other
    backbone's named recipe is from it on test (within noise, better or worse by its paired interval)."""
    lines = []
    for c in compared:
        ref = next(b for b in c["backbones"] if b["versus_reference"] is None)
        others = []
        for b in c["backbones"]:
            v = b["versus_reference"]
            if v is None:
                continue
            word = versus_word(v)
            if word is None:
                others.append(f"{b['arch']}: no paired difference")
                continue
            others.append(f"{b['arch']} {v['estimate']:+.3f} (95% CI {v['low']:+.3f} to {v['high']:+.3f}), {word}")
        test = "no test AUROC" if ref["test_auroc"] is None else f"test AUROC {ref['test_auroc']:.3f}"
        lines.append(f"Backbones on {c['task']} at N = {c['N']}: {ref['arch']} leads on validation "
                     f"({ref['recipe']}, {test}); " + "; ".join(others) + ".")
    return lines

"""The study's answer as one object: ``STUDY_DIR/answer.json`` and the report's "Key results" are both made from it.

Per (task, arch): the best recipe at each N (chosen on validation, reported on test with the
two-level interval), each initialisation's best recipe at each N, its gain over scratch and
ImageNet (paired intervals), the crossover with radiomics (measured on the studied N, and from
the learning-curve fits), the N predicted for each ``report.targets`` AUROC, and predictions at
2x and 4x the largest N, each marked as an extrapolation. What was skipped, and why, comes first.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from ..evaluate import learning_curve as lc
from ..evaluate.equivalence import DEFAULT_MARGIN
from ..evaluate.per_run import SplitEstimate, split_disagreement
from ..kinds import RunRole, RunStatus, TaskKind
from ..radiomics.pixels import PIXEL_BASELINE
from .claims import check_claims, measured_crossovers, recipe_spreads
from .backbones import backbone_lines, compare_backbones
from .intervals import METHOD as UNCERTAINTY_METHOD
from .intervals import Intervals
from .selection import Choice, choose, noise_line, selection_at, within_names
from .tables import json_num as _num
from .tables import (RADIOMICS, RADIOMICS_LABEL, best_per_init, display_recipe, init_display_label, n_keys_in_order,
                     panel_rows, panels, ranked_recipes, runs_behind)

SELECTION = ("Every 'best' is chosen on mean validation AUROC over seeds (where the validation split is too small "
             "to select on, fewer than 50 images or 10 of a class, on the mean fold AUROC of a patient-grouped "
             "cross-validation over the N-pool instead: best_recipe_per_n's selection says which); test AUROC is "
             "read only for the numbers reported. The recipe named at each N follows the one-standard-error rule (the cheapest recipe within "
             "1 SE of the best's mean validation AUROC: radiomics + LR < probe < frozen < gradual < full, then fewer "
             "optimiser steps; at equal cost the higher mean; an exact tie is said as 'tied'), never the name; "
             "within_noise lists the recipes whose paired validation difference to the best contains 0.")
FEW_SEEDS = 3


def _count(x):
    return None if x is None or not math.isfinite(x) else int(round(x))


def _estimate(e: lc.Estimate, count: bool = False) -> dict:
    fmt = _count if count else _num
    out = {"estimate": fmt(e.estimate), "ci_low": fmt(e.low), "ci_high": fmt(e.high),
           "extrapolated": bool(e.extrapolated)}
    if e.reason:
        out["refused"] = e.reason
    if e.reachable_fraction is not None:
        out["reachable_in_fraction_of_refits"] = _num(e.reachable_fraction, 3)
    return out


def skipped_items(runs: pd.DataFrame, sites: dict[str, str]) -> list[dict]:
    """Grid runs that were skipped or failed, grouped by init (radiomics apart) and reason."""
    grid = runs[(runs["role"] == RunRole.GRID) & runs["status"].isin([RunStatus.SKIPPED, RunStatus.FAILED])]
    done = runs[(runs["role"] == RunRole.GRID) & (runs["status"] == RunStatus.DONE)]
    with_results = {(str(m), i) for m, i in zip(done["method"].astype(str), done["init"].fillna(""), strict=True)}
    out = []
    for (method, init, status, reason), g in grid.groupby(
            [grid["method"].astype(str), grid["init"].fillna(""), grid["status"].astype(str),
             grid["reason"].fillna("no reason recorded")], sort=True):
        label = RADIOMICS_LABEL if method == RADIOMICS else init_display_label(init, method, sites)
        out.append({"init": label, "status": status, "runs": int(len(g)), "reason": str(reason),
                    "has_results": (method, init) in with_results})
    return sorted(out, key=lambda item: (item["status"] != "skipped", -item["runs"], item["init"]))


def _per_init_rows(panel: pd.DataFrame, sites) -> dict[str, list[pd.Series]]:
    """init label -> its validation-best summary row at each N, smallest N first."""
    curves: dict[str, list[pd.Series]] = {}
    for nk in n_keys_in_order(panel):
        for label, row in best_per_init(panel[panel["n_train"] == nk], sites).items():
            curves.setdefault(label, []).append(row)
    return curves


def _curve(rows: list[pd.Series], intervals: Intervals):
    ns = np.array([r["N"] for r in rows], dtype=float)
    points = np.array([r["test_auroc_mean"] for r in rows], dtype=float)
    draws = [intervals.row_draws.get(r.name) for r in rows]
    matrix = np.stack(draws) if all(d is not None for d in draws) and len({len(d) for d in draws}) == 1 else None
    return ns, points, matrix


def _curve_answer(rows: list[pd.Series], intervals: Intervals, targets: list[float]) -> tuple[dict, lc.CurveModel]:
    """(the curve's answer, its model); a refused fit's model is still returned: as a baseline, its per-N
    values (``lc.crossover_n``) still give a crossover N for a CNN curve that was fitted."""
    ns, points, matrix = _curve(rows, intervals)
    ci = tuple(pd.to_numeric(pd.Series([r.get(k) for r in rows]), errors="coerce").to_numpy(float)
               for k in ("test_auroc_ci_low", "test_auroc_ci_high"))
    model = lc.gated_curve(ns, points, matrix, ci)   # fewer than 3 sizes: refused inside, its per-N values kept
    if len(np.unique(ns)) < 3:
        return {"fitted": False, "refused": f"{len(np.unique(ns))} training-set size(s): a curve needs 3 or more"}, model
    fit = model.fit
    if not fit.ok:
        return {"fitted": False, "refused": fit.reason}, model
    out = {"fitted": True, "a": _num(fit.a), "b": _num(fit.b), "c": _num(fit.c), "rmse": _num(fit.rmse, 5),
           "exact_fit": bool(fit.exact_fit), "refits": model.n_draws, "failed_refits": model.n_failed,
           "weighting": model.weighting,
           "extrapolation": {"allowed": model.blocked is None, "refused": model.blocked}}
    out["predicted"] = [{"factor": f, "N": _count(float(ns.max()) * f), **_estimate(e)}
                        for f, e in model.predict_beyond((2.0, 4.0)).items()]
    out["n_for_target"] = [{"auroc": t, **_estimate(model.n_for_target(t), count=True)} for t in targets]
    check = model.holdout or lc.holdout_check(ns, points, matrix)   # no gate run (3 sizes): the check says why
    out["holdout"] = ({"held_out_N": _count(check.held_out_n), "measured": _num(check.measured),
                       "predicted": _estimate(check.predicted), "error": _num(check.error),
                       "prediction_interval": [_num(v) for v in check.interval], "covered": check.covered}
                      if check.ok else {"refused": check.reason})
    return out, model


def _crossing(model_cnn: lc.CurveModel, model_base: lc.CurveModel) -> dict:
    """CNN curve vs radiomics: the baseline is its own curve, or its per-N values when its fit was refused
    (a flat radiomics curve is the usual case); only a refused CNN curve gives no answer."""
    if model_base is None:
        return {"refused": "no radiomics learning curve"}
    if not model_cnn.fit.ok:
        return {"refused": f"no learning-curve fit for the CNN: {model_cnn.fit.reason}"}
    try:
        got = lc.crossover_n(model_cnn, model_base, paired=True)
    except Exception as err:   # e.g. unequal draw counts: say why instead of failing the report
        return {"refused": f"{type(err).__name__}: {err}"}
    return {"matches_from_N": _count(got.match_n) if got.match_n is not None else None,
            "match_range": None if got.match_range is None else [_count(v) if v is not None else None
                                                                 for v in got.match_range],
            "match_extrapolated": got.match_extrapolated, "match_note": got.match_reason,
            "beats_from_N": _count(got.beat_n) if got.beat_n is not None else None,
            "beat_extrapolated": got.beat_extrapolated, "beat_note": got.beat_reason,
            "extrapolation_refused": got.blocked,
            "radiomics_side": ("its learning curve" if got.baseline == "curve" else
                               "its measured per-N values (no curve fitted; running maximum, held flat beyond "
                               "its largest N)")}


def _difference(d) -> dict | None:
    return None if d is None else {"estimate": _num(d.mean), "low": _num(d.low), "high": _num(d.high),
                                   "method": d.method, "seeds": int(d.n_seeds)}


def _selection_fields(choice: Choice | None, ranked: pd.DataFrame) -> dict:
    """answer.json's account of the choice: within_noise, pick_rule, runner_up with the paired test difference."""
    if choice is None:
        return {"pick_rule": "highest mean validation AUROC (no validation AUROC to compare)", "within_noise": None,
                "runner_up": None}
    runner = None if choice.runner_up is None else ranked.loc[choice.runner_up]
    return {"pick_rule": choice.rule, "tied": [display_recipe(ranked.loc[i]) for i in choice.tied],
            "best_on_validation": display_recipe(ranked.loc[choice.best]),
            "within_noise": within_names(choice, ranked),
            "within_noise_line": noise_line(choice), "within_noise_method": choice.methods,
            "best_val_se": _num(choice.se), "best_val_se_method": choice.se_method,
            "runner_up": None if runner is None else {
                "recipe": display_recipe(runner), "val_auroc": _num(runner["val_auroc_mean"]),
                "test_auroc": _num(runner["test_auroc_mean"]),
                "test_difference": _difference(choice.test_difference)}}


def _best_rows(panel: pd.DataFrame, intervals: Intervals) -> list[dict]:
    out = []
    for nk in n_keys_in_order(panel):
        ranked = ranked_recipes(panel[panel["n_train"] == nk])
        if ranked.empty:
            continue
        choice = choose(ranked, intervals)
        r = ranked.loc[choice.pick] if choice is not None else ranked.iloc[0]
        fields = {**selection_at(intervals.runs, ranked), **_selection_fields(choice, ranked)}
        suspect = _suspect(r, intervals, fields.get("selection"))
        out.append({**usefulness(r, _versus_baselines(ranked, r.name, intervals), suspect), "n_train": nk,
                    "N": _count(r["N"]), "n_patients": _count(r.get("n_patients")),
                    "recipe": display_recipe(r), "n_seeds": int(r["n_seeds"]),
                    "val_auroc": _num(r["val_auroc_mean"]), "test_auroc": _num(r["test_auroc_mean"]),
                    "ci_low": _num(r["test_auroc_ci_low"]), "ci_high": _num(r["test_auroc_ci_high"]),
                    "ci_method": r.get("ci_method"), "seed_variance": r.get("seed_variance"), **fields})
    return out


CHANCE = 0.5
Z95 = 1.959964


def _versus_baselines(ranked: pd.DataFrame, pick, intervals: Intervals) -> list[dict]:
    """The named recipe minus each simple baseline on the same test split: radiomics + LR at the same N (where the
    study ran it and the pick is not it), and the pixel baseline fitted beside each of the pick's runs (where
    they recorded it); paired on the test patients and the seeds."""
    out = []
    base = [i for i in ranked.index if ranked.loc[i, "method"] == RADIOMICS and ranked.loc[i, "n_seeds"] > 0]
    if base and pick != base[0]:
        out.append({"baseline": RADIOMICS_LABEL, "baseline_auroc": _num(ranked.loc[base[0], "test_auroc_mean"]),
                    **_difference(intervals.difference(pick, base[0]))})
    pixels = intervals.versus_pixels(pick)
    if pixels is not None:
        out.append({"baseline": PIXEL_BASELINE, "baseline_auroc": _num(pixels[1]), **_difference(pixels[0])})
    return out


def _suspect(row: pd.Series, intervals: Intervals, selection: str | None) -> list[str]:
    """What a reader should suspect of the named recipe's numbers: a test split with under 30 patients of a class
    (as its runs recorded it), and its validation (or cross-validated) AUROC and its test AUROC disagreeing beyond
    their uncertainty (``evaluate.per_run.split_disagreement``)."""
    runs = runs_behind(intervals.runs, row)
    small = [s for s in (runs["small_test"] if "small_test" in runs else []) if isinstance(s, str)]
    test_low, test_high = row["test_auroc_ci_low"], row["test_auroc_ci_high"]
    if pd.isna(row["val_auroc_mean"]) or pd.isna(row["test_auroc_mean"]) or pd.isna(test_low) or pd.isna(test_high):
        return small[:1]
    se, _ = intervals.val_se(row.name)
    val = float(row["val_auroc_mean"])
    what = "cross-validated AUROC" if selection == "cv" else "validation AUROC"
    got = split_disagreement(SplitEstimate(val, max(val - Z95 * se, 0.0), min(val + Z95 * se, 1.0), se, what),
                             SplitEstimate(float(row["test_auroc_mean"]), float(test_low), float(test_high),
                                           float(test_high - test_low) / (2 * Z95), "test AUROC"))
    return small[:1] + ([got] if got else [])


def usefulness(row: pd.Series, baselines: list[dict], suspect: list[str] | None = None) -> dict:
    """Whether the named recipe is worth using at all: above chance (its test CI above 0.5) and above each simple
    baseline on the same split (the paired difference's CI above 0). ``usable`` is False when either is not
    shown, and ``why_not`` says which, in words a reader acts on, then what to suspect (``suspect``).
    ``versus_baseline`` / ``beats_baseline`` are the radiomics comparison and "every baseline beaten", as before
    the pixel baseline; ``versus_baselines`` / ``beats_each_baseline`` hold every baseline."""
    low = row["test_auroc_ci_low"]
    chance = None if pd.isna(low) else bool(low > CHANCE)
    each = {b["baseline"]: None if b.get("low") is None else bool(b["low"] > 0) for b in baselines}
    decided = [v for v in each.values() if v is not None]
    beats = None if not decided else all(decided)
    why = []
    if chance is False:
        why.append("no better than chance (its test 95% CI contains 0.5)")
    elif chance is None:
        why.append("no test interval, so not shown better than chance")
    why += [f"not shown better than {name} on the same split" for name, ok in each.items() if ok is False]
    suspect = list(suspect or [])
    radiomics = [b for b in baselines if b["baseline"] == RADIOMICS_LABEL]
    return {"beats_chance": chance, "versus_baseline": radiomics[0] if radiomics else None,
            "versus_baselines": baselines, "beats_baseline": beats, "beats_each_baseline": each,
            "usable": not why, "reasons": why, "suspect": suspect,
            "why_not": "; ".join(why + [f"suspect: {s}" for s in suspect]) if why else None}


def _n_text(r: dict) -> str:
    """The requested N as the grid names it (the user's N), e.g. '50'."""
    return str(r.get("n_train"))


def _at(r: dict) -> str:
    """'N = 50 (58 images and patients in its cross-validated pool)', or 'N = 800 (800 patients)'."""
    images = r.get("N")
    patients = r.get("n_patients")
    who = (f"{images:,} images" if isinstance(images, int) else "") + (
        f", {patients:,} patients" if isinstance(patients, int) and patients != images else
        " and patients" if isinstance(patients, int) else "")
    where = " in its cross-validated pool" if r.get("selection") == "cv" else " trained on"
    return f"N = {_n_text(r)}" + (f" ({who}{where})" if who else "")


def _auroc_ci(r: dict) -> str:
    if r.get("test_auroc") is None:
        return "no test AUROC"
    ci = "" if r.get("ci_low") is None else f" (95% CI {r['ci_low']:.3f} to {r['ci_high']:.3f})"
    return f"test AUROC {r['test_auroc']:.3f}{ci}"


def _versus_text(b: dict) -> str:
    """'+0.031 over pixels + LR (its test AUROC 0.712; 95% CI -0.010 to +0.070, not shown better)'."""
    if b.get("estimate") is None:
        return f"no paired difference to {b['baseline']}"
    ci = "" if b.get("low") is None else f"; 95% CI {b['low']:+.3f} to {b['high']:+.3f}"
    said = "" if b.get("low") is None else ", better" if b["low"] > 0 else ", not shown better"
    base = "" if b.get("baseline_auroc") is None else f"its test AUROC {b['baseline_auroc']:.3f}"
    return f"{b['estimate']:+.3f} over {b['baseline']} ({base}{ci}{said})"


def _verdict_line(r: dict) -> str:
    """One N of the verdict: what to use there and the evidence against each baseline, or why nothing is
    recommended and what to suspect."""
    how = "cross-validation" if r.get("selection") == "cv" else "validation"
    bases = r.get("versus_baselines") or []
    evidence = "; ".join(_versus_text(b) for b in bases)
    suspect = "".join(f" Suspect: {s}." for s in r.get("suspect") or [])
    lost = [b["baseline"] for b in bases if b.get("low") is not None and b["low"] <= 0]
    if not r.get("usable") and r.get("beats_chance") and lost:
        return (f"{_at(r)}: no CNN recipe to recommend over {' and '.join(lost)}: the best recipe by {how}, "
                f"{r['recipe']}, has {_auroc_ci(r)}, {evidence}.{suspect}")
    if not r.get("usable"):   # the baselines' reasons are said by their evidence
        reasons = [w for w in r.get("reasons") or [] if not w.startswith("not shown better than ")]
        return (f"{_at(r)}: nothing to recommend. The best recipe by {how}, {r['recipe']}, has {_auroc_ci(r)}: "
                + "; ".join(reasons + ([evidence] if evidence else [])) + f".{suspect}")
    noise = r.get("within_noise") or []
    tie = "" if len(noise) <= 1 else f"; {r['within_noise_line']} in {how}, so any of them will do about as well"
    caution = "".join(f" Caution: {s}." for s in r.get("suspect") or [])
    return f"{_at(r)}: use {r['recipe']}, {_auroc_ci(r)}" + (f", {evidence}" if evidence else "") + f"{tie}.{caution}"


def build_verdict(panels_out: list[dict]) -> dict:
    """answer.json's ``verdict``: a headline a reader can act on, then one line per panel and N."""
    rows = [(p, r) for p in panels_out for r in p["best_recipe_per_n"]]
    lines = [(f"{p['task']} / {p['arch']}: " if len(panels_out) > 1 else "") + _verdict_line(r) for p, r in rows]
    usable = [r for _, r in rows if r.get("usable")]
    if not rows:
        headline, level = "No finished runs yet: nothing to conclude.", "warn"
    elif not usable:
        chance = all(r.get("beats_chance") is not True for _, r in rows)
        headline = ("Nothing here is shown better than chance: no recipe is recommended at any N studied." if chance
                    else "No recipe is shown better than both chance and the simple baselines on the same test split "
                         "at any N studied: no CNN recipe is recommended.")
        level = "warn"
    elif len(usable) == len(rows):
        headline, level = "A recipe is recommended at every N studied (lines below).", "ok"
    else:
        yes = ", ".join(_n_text(r) for _, r in rows if r.get("usable"))
        no = ", ".join(_n_text(r) for _, r in rows if not r.get("usable"))
        headline = (f"A CNN recipe is recommended at N = {yes}; at N = {no} none is shown better than both chance "
                    "and the simple baselines on the same split (each line says which it fails).")
        level = "mixed"
    tied = [r for _, r in rows if r.get("within_noise") and len(r["within_noise"]) > 1]
    if rows and len(tied) == len(rows):
        headline += " At every N several recipes are within noise of the best: the named one is the cheapest of them."
    return {"headline": headline, "level": level, "lines": lines}


def _gain_rows(gain: pd.DataFrame, task, arch) -> list[dict]:
    sel = (gain["task"] == task) & ((gain["arch"] == arch) | (gain["arch"].isna() & pd.isna(arch)))
    out = []
    for r in gain[sel].itertuples():
        within = None if pd.isna(r.gain_ci_low) else bool(r.gain_ci_low <= 0 <= r.gain_ci_high)
        out.append({"init": r.init, "versus": r.versus, "n_train": r.n_train, "N": _count(r.N),
                    "gain": _num(r.gain), "ci_low": _num(r.gain_ci_low), "ci_high": _num(r.gain_ci_high),
                    "within_noise": within, "ci_method": r.gain_ci_method})
    return out


def _measured_crossover(versus: list[dict], task, arch) -> list[dict]:
    out = []
    for block in versus:
        if block["task"] != task or block["arch"] != arch:
            continue
        for comp in block["comparisons"]:
            res = comp["result"]
            out.append({"init": comp["init"], "recipe": comp["recipe"], "method": res["method"],
                        "delong_tests": block.get("delong_tests") or None,
                        "equivalence_margin": block.get("margin"), "holm_adjusted": bool(block.get("holm")),
                        **_bracket_fields("comparable", res.get("comparable_bracket")),
                        **_bracket_fields("outperforms", res.get("outperform_bracket")),
                        "per_n": [{"n_train": r.n_train, "N": _count(r.N), "difference": _num(r.diff_mean),
                                   "ci_low": _num(r.diff_ci_low), "ci_high": _num(r.diff_ci_high),
                                   "ci90_low": _num(r.ci90_low), "ci90_high": _num(r.ci90_high),
                                   "p": _num(r.p_value), "p_holm": _num(getattr(r, "p_holm", None)),
                                   "claim": r.claim} for r in comp["per_n"].itertuples()]})
    return out


def _bracket_fields(key: str, bracket) -> dict:
    """'<key>_from_N': the studied N from which the claim holds at it and every larger studied N;
    '<key>_not_at_N': the studied N below it where it did not (None: already at the smallest); no interpolation."""
    first, before = bracket if bracket else (None, None)
    note = ("not within the studied N" if first is None else
            "already at the smallest N studied" if before is None else "between these two studied N: not studied")
    return {f"{key}_from_N": _count(first) if first is not None else None,
            f"{key}_not_at_N": _count(before) if before is not None else None, f"{key}_note": note}


def few_seed_items(summary: pd.DataFrame) -> list[dict]:
    """Cells with fewer than FEW_SEEDS seeds, each with where its interval's seed level came from (a one-seed
    cell borrows it or has none: the page must say which, not call every thin interval wide)."""
    thin = summary[(summary["n_seeds"] > 0) & (summary["n_seeds"] < FEW_SEEDS)]
    accounts = thin["seed_variance"] if "seed_variance" in thin else pd.Series(None, index=thin.index)
    return [{"task": r.task, "arch": None if pd.isna(r.arch) else r.arch, "recipe": r.recipe, "n_train": r.n_train,
             "n_seeds": int(r.n_seeds), "seed_variance": None if pd.isna(account) else str(account)}
            for r, account in zip(thin.itertuples(), accounts, strict=True)]


def build_answer(name: str | None, summary: pd.DataFrame, runs: pd.DataFrame, sites: dict[str, str],
                 intervals: Intervals, gain: pd.DataFrame, versus: list[dict], targets: list[float]) -> dict:
    """The decision in machine-readable form (see the module docstring); ``summary`` carries the combined CIs."""
    panels_out = []
    for task, arch in panels(summary):
        panel = panel_rows(summary, task, arch)
        kinds = panel["task_kind"].dropna()
        kind = str(kinds.iloc[0]) if len(kinds) else None
        curves = _per_init_rows(panel, sites)
        inits, models = [], {}
        for label, rows in curves.items():
            curve, model = _curve_answer(rows, intervals, targets)
            models[label] = model
            inits.append({"init": label, "per_n": [
                {"n_train": r["n_train"], "N": _count(r["N"]), "recipe": str(r["recipe"]), "n_seeds": int(r["n_seeds"]),
                 "val_auroc": _num(r["val_auroc_mean"]), "test_auroc": _num(r["test_auroc_mean"]),
                 "ci_low": _num(r["test_auroc_ci_low"]), "ci_high": _num(r["test_auroc_ci_high"]),
                 "seed_variance": r.get("seed_variance")} for r in rows],
                "learning_curve": curve})
        fitted_crossover = []
        if RADIOMICS_LABEL in models:
            for label, model in models.items():
                if label != RADIOMICS_LABEL:
                    fitted_crossover.append({"init": label, **_crossing(model, models[RADIOMICS_LABEL])})
        panels_out.append({
            "task": task, "arch": arch, "task_kind": kind,
            "metric": "test AUROC" if kind == TaskKind.BINARY else "test macro AUROC",
            "best_recipe_per_n": _best_rows(panel, intervals),
            "inits": inits,
            "gains": _gain_rows(gain, task, arch),
            "crossover_vs_radiomics": {"measured": _measured_crossover(versus, task, arch),
                                       "from_learning_curves": fitted_crossover},
        })
    verdict = build_verdict(panels_out)
    backbones = compare_backbones(summary, intervals)
    verdict["lines"] = list(verdict.get("lines", [])) + backbone_lines(backbones)
    margins = [b.get("margin") for b in versus if b.get("margin") is not None]
    claims = check_claims(gain, measured_crossovers(panels_out), recipe_spreads(summary, intervals),
                          margins[0] if margins else DEFAULT_MARGIN)
    return {
        "study": name,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verdict": verdict,
        "claims": [c.to_json() for c in claims],
        "methods": {"selection": SELECTION, "uncertainty": UNCERTAINTY_METHOD, "learning_curve": lc.METHOD},
        "skipped": skipped_items(runs, sites),
        "few_seeds": few_seed_items(summary),
        "targets": list(targets),
        "panels": panels_out,
        "backbones": backbones,
    }

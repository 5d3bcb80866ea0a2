"""CNN versus the radiomics baseline: crossover N and per-N paired comparisons, per (task, arch).

Each CNN initialisation is represented by ONE recipe across all N (a learning
curve must be one method): the recipe finished at the most N, then with the
highest mean over N of its mean validation AUROC. The radiomics curve is chosen the
same way among the baseline recipes (normally there is one). As everywhere in the
report, the choice is made on validation and the comparison on test.

A CNN run and a radiomics run are paired when they share task, requested N and
seed: same split, same nested training subset, same test images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..evaluate.crossover import crossover
from ..evaluate.equivalence import (ABOVE, ALPHA, BELOW, COMPARABLE, DEFAULT_MARGIN, NOT_SHOWN_COMPARABLE, TOST_LEVEL,
                                   bracket, claim, holm)
from ..evaluate.summary import t_interval
from ..kinds import RunMethod, RunRole, RunStatus
from .paired import paired_delong
from .tables import (RADIOMICS, best_per_init, init_display_label, n_keys_in_order, panel_rows, panels,
                     runs_behind)

SIGNIFICANCE = 0.05


def _curve_choice(rows: pd.DataFrame) -> pd.DataFrame:
    """Recipes of ``rows`` ranked: most N with a result, then highest mean over N of the mean validation AUROC
    (chosen on validation, compared on test)."""
    done = rows[rows["n_seeds"] > 0]
    if done.empty:
        return done
    per = done.groupby(["method", "recipe"], sort=False).agg(
        n_points=("n_train", "nunique"), score=("val_auroc_mean", "mean"), init=("init", "first")).reset_index()
    return per.sort_values(["n_points", "score", "recipe"], ascending=[False, False, True], ignore_index=True)


def _delong_pairs(pairs: pd.DataFrame, study_dir: Path | None, task_kind, cache: dict) -> list[dict]:
    out = []
    for r in pairs.itertuples():
        if study_dir is None:
            test = {"p_value": None, "note": "study folder unknown"}
        else:
            test = paired_delong(study_dir, r.run_dir_cnn, r.run_dir_base, task_kind, cache)
        out.append({"n_train": r.n_key, "seed": int(r.seed), **test})
    return out


def _verdict(row, tests: list[dict]) -> str:
    if not pd.isna(row.diff_ci_low):     # a paired bootstrap interval (any seeds), or a t-interval (2+ seeds)
        if row.diff_ci_high < 0:
            return "CNN significantly below"
        return "CNN significantly above" if row.diff_ci_low > 0 else "not significant"
    ps = [t for t in tests if t.get("p_value") is not None]
    if len(ps) == 1:
        if ps[0]["p_value"] >= SIGNIFICANCE:
            return "not significant (DeLong, 1 seed)"
        return f"CNN significantly {'above' if ps[0]['diff'] > 0 else 'below'} (DeLong, 1 seed)"
    return "no test (1 seed)"


def _recipe_runs(runs: pd.DataFrame, task: str, arch, method: str, recipe: str) -> pd.DataFrame:
    """The finished grid runs of one recipe at every N (a radiomics recipe has no arch)."""
    sel = ((runs["role"] == RunRole.GRID) & (runs["status"] == RunStatus.DONE) & (runs["task"] == task)
           & (runs["method"] == method) & (runs["recipe"] == recipe))
    sel &= runs["arch"].isna() if method == RADIOMICS or arch is None else (runs["arch"] == arch)
    return runs.loc[sel, ["n_key", "seed", "test_auroc", "run_dir"]]


def _init_picks(cnn: pd.DataFrame, sites: dict[str, str]) -> dict[str, dict[str, pd.Series]]:
    """init label -> {N key: the summary row of the recipe the selection rule names for that init at that N}
    (``tables.best_per_init``: the same recipe the gains, the learning curves and the verdict use), in the
    tables' init order."""
    picks: dict[str, dict[str, pd.Series]] = {}
    for nk in n_keys_in_order(cnn):
        for label, row in best_per_init(cnn[cnn["n_train"] == nk], sites).items():
            picks.setdefault(label, {})[nk] = row
    return picks


def _recipes_text(at_n: dict[str, pd.Series]) -> str:
    """The recipe an init's comparison used: one name, or which at which N where the choice changed with N."""
    names = {nk: str(row["recipe"]) for nk, row in at_n.items()}
    if len(set(names.values())) == 1:
        return next(iter(names.values()))
    return "; ".join(f"{name} at N = {nk}" for nk, name in names.items())


def _paired_intervals(intervals, cnn_at: dict, base_index, base_key: tuple, n_of: pd.Series) -> pd.DataFrame | None:
    """Per N: the paired bootstrap interval of CNN minus radiomics (None without ``intervals``). ``cnn_at``:
    N key -> the CNN's summary index there; ``base_index``: (radiomics key + N key) -> its summary index."""
    if intervals is None:
        return None
    rows = []
    for n_key, n in n_of.items():
        a, b = cnn_at.get(n_key), base_index(base_key + (n_key,))
        if a is None or b is None:
            continue
        d = intervals.difference(a, b)
        if d.method == "two-level bootstrap":
            rows.append({"N": n, "diff": d.mean, "ci_low": d.low, "ci_high": d.high, "ci90_low": d.low90,
                         "ci90_high": d.high90, "p_value": d.p_value})
    columns = ["N", "diff", "ci_low", "ci_high", "ci90_low", "ci90_high", "p_value"]
    return pd.DataFrame(rows, columns=columns) if rows else None


def _tests_per_n(per_n: pd.DataFrame, paired: pd.DataFrame | None) -> pd.DataFrame:
    """``per_n`` with the 90% interval (for TOST) and the p-value of d = 0 at each N: the paired bootstrap's
    where it was used, else the seeds' Student-t (NaN with one seed)."""
    low90, high90 = t_interval(per_n["diff_mean"], per_n["diff_sd"], per_n["n_pairs"], TOST_LEVEL)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = per_n["diff_mean"] / (per_n["diff_sd"] / np.sqrt(per_n["n_pairs"]))
        p = 2 * stats.t.sf(np.abs(t), np.where(per_n["n_pairs"] >= 2, per_n["n_pairs"] - 1, np.nan))
    out = per_n.assign(ci90_low=low90, ci90_high=high90, p_value=np.where(per_n["diff_sd"] == 0, np.nan, p))
    if paired is not None:
        boot = paired.groupby("N")[["ci90_low", "ci90_high", "p_value"]].mean()
        has = out["N"].isin(boot.index).to_numpy()
        for column in ("ci90_low", "ci90_high", "p_value"):
            out.loc[has, column] = boot.loc[out.loc[has, "N"], column].to_numpy()
    return out


def _claims(comparisons: list[dict], margin: float) -> None:
    """Per N, Holm-adjust the p-values of the initialisations compared with the baseline (one question: does
    any beat it at this N), then each comparison's claim per N and its bracketing studied N (in place)."""
    frames = [comp["per_n"] for comp in comparisons]
    for n in sorted({float(v) for f in frames for v in f["N"]}):
        at = [(f, f.index[f["N"] == n]) for f in frames if (f["N"] == n).any()]
        adjusted = holm([float(f.loc[i, "p_value"].iloc[0]) for f, i in at])
        for (f, i), p in zip(at, adjusted, strict=True):
            f.loc[i, "p_holm"] = p
    for comp in comparisons:
        f = comp["per_n"]
        f["claim"] = [_claim(r, margin) for r in f.itertuples()]
        f["verdict"] = [_words(c, margin, old) for c, old in zip(f["claim"], f["verdict"], strict=True)]
        n = f["N"].to_numpy(float)
        ok = f["claim"].isin([COMPARABLE, ABOVE]).to_numpy()
        comp["result"]["comparable_bracket"] = bracket(n, ok)
        comp["result"]["outperform_bracket"] = bracket(n, (f["claim"] == ABOVE).to_numpy())
        comp["result"]["margin"] = margin


def _words(got: str, margin: float, old: str) -> str:
    """A per-N claim as the table says it; a one-seed DeLong verdict stays where there is no interval."""
    return {ABOVE: "CNN significantly above", BELOW: "CNN significantly below",
            COMPARABLE: f"comparable (90% CI within ±{margin:g})",
            NOT_SHOWN_COMPARABLE: f"not shown comparable (90% CI not within ±{margin:g})"}.get(got, old)


def _claim(row, margin: float) -> str:
    """Above / below only where the Holm-adjusted p agrees with the interval; otherwise TOST within the margin."""
    got = claim(row.diff_ci_low, row.diff_ci_high, row.ci90_low, row.ci90_high, margin)
    p = getattr(row, "p_holm", np.nan)
    if got in (ABOVE, BELOW) and pd.notna(p) and p >= ALPHA:
        return claim(np.nan, np.nan, row.ci90_low, row.ci90_high, margin)
    return got


def _compare(cnn: pd.DataFrame, base: pd.DataFrame, task_kind, n_of: pd.Series, study_dir: Path | None,
             cache: dict, paired: pd.DataFrame | None = None) -> dict | None:
    pairs = cnn.merge(base, on=["n_key", "seed"], suffixes=("_cnn", "_base"))
    pairs = pairs[pairs["test_auroc_cnn"].notna() & pairs["test_auroc_base"].notna() & pairs["n_key"].isin(n_of.index)]
    if pairs.empty:
        return None
    pairs = pairs.assign(N=pairs["n_key"].map(n_of)).sort_values(["N", "seed"], ignore_index=True)
    tests = _delong_pairs(pairs, study_dir, task_kind, cache)
    delong = pd.DataFrame([{"N": n_of[t["n_train"]], "ci_low": t["ci_low"], "ci_high": t["ci_high"]}
                           for t in tests if t.get("p_value") is not None], columns=["N", "ci_low", "ci_high"])
    result = crossover(pairs.rename(columns={"test_auroc_cnn": "auroc"})[["N", "seed", "auroc"]],
                       pairs.rename(columns={"test_auroc_base": "auroc"})[["N", "seed", "auroc"]],
                       delong=delong if (pairs.groupby("N").size() < 2).all() else None, intervals=paired)
    key_of = {float(n): k for k, n in n_of.items()}
    per_n = _tests_per_n(result["per_n"], paired).assign(n_train=lambda f: [key_of[float(n)] for n in f["N"]])
    by_n = {k: [t for t in tests if t["n_train"] == k] for k in per_n["n_train"]}
    per_n["verdict"] = [_verdict(r, by_n[r.n_train]) for r in per_n.itertuples()]
    return {"result": result, "per_n": per_n, "tests": by_n, "n_seeds": int(pairs["seed"].nunique())}


def radiomics_comparisons(summary: pd.DataFrame, runs: pd.DataFrame, sites: dict[str, str],
                          study_dir: Path | None, intervals=None, margin: float = DEFAULT_MARGIN) -> list[dict]:
    """Per (task, arch) with CNN and radiomics results: one comparison per CNN initialisation.

    Each block: task, arch, task_kind, radiomics_recipe, comparisons (list of
    dicts: init, recipe, best_overall, result (``crossover``'s dict), per_n,
    tests (DeLong per N and seed), n_seeds), notes (why a DeLong test is
    missing, counted per reason), delong_tests (which DeLong: clustered by patient or not), margin (the
    equivalence margin) and holm (True where several inits at one N were Holm-adjusted). Each comparison's
    per_n has its claim per N (``evaluate.equivalence``) and its result the bracketing studied N
    (comparable_bracket, outperform_bracket: (from N, last failing N before it)).
    """
    blocks, cache = [], {}
    index_of = {(r.task, None if r.method == RADIOMICS else r.arch, str(r.method), r.recipe, r.n_train): i
                for i, r in zip(summary.index, summary.itertuples())}
    for task, arch in panels(summary):
        if arch is None:
            continue
        panel = panel_rows(summary, task, arch)
        base_rank = _curve_choice(panel[panel["method"] == RADIOMICS])
        cnn_rank = _curve_choice(panel[panel["method"] != RADIOMICS])
        if base_rank.empty or cnn_rank.empty:
            continue
        n_of = panel.groupby("n_train")["N"].max().dropna()
        n_of = n_of[~n_of.duplicated(keep="last")]     # two requested N that both trained on all images: keep one
        task_kind = panel["task_kind"].dropna().iloc[0] if panel["task_kind"].notna().any() else None
        base_recipe = str(base_rank.iloc[0]["recipe"])
        base = _recipe_runs(runs, task, None, RADIOMICS, base_recipe)
        picks = _init_picks(panel[panel["method"] != RADIOMICS], sites)
        top = init_display_label(cnn_rank.iloc[0]["init"], RunMethod.CNN, sites)
        comparisons = []
        for label, at_n in picks.items():
            cnn = pd.concat([runs_behind(runs, row)[["n_key", "seed", "test_auroc", "run_dir"]] for row in at_n.values()])
            paired = _paired_intervals(intervals, {nk: row.name for nk, row in at_n.items()},
                                       index_of.get, (task, None, str(RADIOMICS), base_recipe), n_of)
            got = _compare(cnn, base, task_kind, n_of, study_dir, cache, paired)
            if got is not None:
                comparisons.append({"init": label, "recipe": _recipes_text(at_n), "best_overall": label == top, **got})
        if comparisons:
            _claims(comparisons, margin)
            blocks.append({"task": task, "arch": arch, "task_kind": task_kind, "radiomics_recipe": base_recipe,
                           "margin": margin, "holm": len(comparisons) > 1,
                           "comparisons": comparisons, "notes": _missing_notes(comparisons),
                           "delong_tests": delong_tests(comparisons)})
    return blocks


def delong_tests(comparisons: list[dict]) -> list[str]:
    """Which DeLong tests the per-seed p-values come from (``paired``'s names), so the page can say whether
    images of one patient were one cluster; normally one."""
    return sorted({t["test"] for comp in comparisons for tests in comp["tests"].values() for t in tests
                   if t.get("test")})


def _missing_notes(comparisons: list[dict]) -> list[str]:
    reasons: dict[str, int] = {}
    for comp in comparisons:
        for tests in comp["tests"].values():
            for t in tests:
                if t.get("p_value") is None or t.get("note"):
                    reasons[t["note"]] = reasons.get(t["note"], 0) + 1
    return [f"DeLong test: {why} ({count} run pair{'s' if count > 1 else ''})"
            for why, count in sorted(reasons.items(), key=lambda kv: -kv[1])]


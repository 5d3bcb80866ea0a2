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

import pandas as pd

from ..evaluate.crossover import crossover
from ..kinds import RunMethod, RunRole, RunStatus
from .paired import paired_delong
from .tables import RADIOMICS, SITE_ORDER, init_display_label, init_site, panel_rows, panels

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


def _paired_intervals(intervals, index_of: dict, cnn_key: tuple, base_key: tuple, n_of: pd.Series) -> pd.DataFrame | None:
    """Per N: the paired bootstrap interval of CNN minus radiomics (None without ``intervals``)."""
    if intervals is None:
        return None
    rows = []
    for n_key, n in n_of.items():
        a, b = index_of.get(cnn_key + (n_key,)), index_of.get(base_key + (n_key,))
        if a is None or b is None:
            continue
        d = intervals.difference(a, b)
        if d.method == "two-level bootstrap":
            rows.append({"N": n, "diff": d.mean, "ci_low": d.low, "ci_high": d.high})
    return pd.DataFrame(rows, columns=["N", "diff", "ci_low", "ci_high"]) if rows else None


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
    per_n = result["per_n"].assign(n_train=lambda f: [key_of[float(n)] for n in f["N"]])
    by_n = {k: [t for t in tests if t["n_train"] == k] for k in per_n["n_train"]}
    per_n["verdict"] = [_verdict(r, by_n[r.n_train]) for r in per_n.itertuples()]
    return {"result": result, "per_n": per_n, "tests": by_n, "n_seeds": int(pairs["seed"].nunique())}


def radiomics_comparisons(summary: pd.DataFrame, runs: pd.DataFrame, sites: dict[str, str],
                          study_dir: Path | None, intervals=None) -> list[dict]:
    """Per (task, arch) with CNN and radiomics results: one comparison per CNN initialisation.

    Each block: task, arch, task_kind, radiomics_recipe, comparisons (list of
    dicts: init, recipe, best_overall, result (``crossover``'s dict), per_n,
    tests (DeLong per N and seed), n_seeds), notes (why a DeLong test is
    missing, counted per reason) and delong_tests (which DeLong: clustered by patient or not).
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
        chosen = {}
        for _, r in cnn_rank.iterrows():
            chosen.setdefault(init_display_label(r["init"], r["method"], sites), r)
        order = sorted(chosen, key=lambda label: (SITE_ORDER.index(init_site(chosen[label]["init"], RunMethod.CNN, sites)),
                                                  label))
        comparisons = []
        for label in order:
            r = chosen[label]
            cnn = _recipe_runs(runs, task, arch, r["method"], r["recipe"])
            paired = _paired_intervals(intervals, index_of, (task, arch, str(r["method"]), r["recipe"]),
                                       (task, None, str(RADIOMICS), base_recipe), n_of)
            got = _compare(cnn, base, task_kind, n_of, study_dir, cache, paired)
            if got is not None:
                comparisons.append({"init": label, "recipe": str(r["recipe"]),
                                    "best_overall": r["recipe"] == cnn_rank.iloc[0]["recipe"], **got})
        if comparisons:
            blocks.append({"task": task, "arch": arch, "task_kind": task_kind, "radiomics_recipe": base_recipe,
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


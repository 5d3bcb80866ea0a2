"""HTML of the "CNN vs radiomics" section: crossover table, per-N paired comparison, definitions.

Only numbers, redacted and escaped labels (``page.esc``) and the report's own escaped sentences (``page.prose``:
which test, why one is missing, how an interval is made) reach the page.
"""
from __future__ import annotations

import pandas as pd

from ..evaluate.equivalence import DEFAULT_MARGIN
from .page import esc, fmt_auroc, fmt_n, fmt_signed, panel_title, prose, table
from .tables import RADIOMICS_LABEL

HOW = (
    "<p><b>How the comparison is made.</b> A CNN run and a radiomics run are <i>paired</i> when they share the "
    "task, the requested N and the seed: same split, same training subset, same test images. Each CNN "
    "initialisation is represented by one recipe at every N (the recipe finished at the most N, then with the "
    "highest mean validation AUROC over N); it is chosen on the validation split, never on test. "
    "<i>Difference</i> = CNN minus radiomics test AUROC (macro over findings or classes where there are several), mean over the paired seeds, with its paired two-level "
    "bootstrap 95% CI (the same test-patient resamples and seeds on both sides; a Student-t CI of the per-seed "
    "differences where runs have no bootstrap draws). <i>DeLong p</i>: paired DeLong test (DeLong et al. 1988) of the two runs' "
    "macro AUROC on the test images both scored, one per seed (multi-label: mean over findings; multiclass: mean "
    "of the one-vs-rest AUROCs; the variance of the mean keeps the correlation between findings). Where the "
    "predictions carry patient IDs, images of one patient are one cluster, for every finding (Obuchowski 1997: "
    "per-patient structural components, averaged over findings), as the bootstrap resamples patients; without "
    "patient IDs each image counts as its own patient. Where the clustered DeLong cannot be computed, only the "
    "clustered bootstrap interval is shown. Each table says which test it used.</p>")


def fmt_p(p) -> str:
    if p is None or pd.isna(p):
        return "—"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_count(n) -> str:
    return f"{int(round(n)):,}"


def _init_cell(comp: dict) -> str:
    star = " <b>(best CNN recipe)</b>" if comp["best_overall"] else ""
    return f"{esc(comp['init'])}{star}<br><small>{esc(comp['recipe'])}</small>"


def fmt_bracket(bracket, n_min: float, n_max: float) -> str:
    """The studied N from which a claim holds, with the studied N below it where it did not: no interpolation."""
    first, before = bracket if bracket else (None, None)
    if first is None:
        return f"not within the studied N (up to {_fmt_count(n_max)})"
    if before is None:
        return f"already at N = {_fmt_count(first)} (smallest studied)"
    return f"N = {_fmt_count(first)} (not at N = {_fmt_count(before)}; no N between was studied)"


def _crossover_rows(block: dict) -> list[list[str]]:
    rows = []
    for comp in block["comparisons"]:
        res, per_n = comp["result"], comp["per_n"]
        n_min, n_max = float(per_n["N"].min()), float(per_n["N"].max())
        rows.append([_init_cell(comp), fmt_bracket(res.get("comparable_bracket"), n_min, n_max),
                     fmt_bracket(res.get("outperform_bracket"), n_min, n_max), str(comp["n_seeds"])])
    return rows


def _p_cell(tests: list[dict]) -> str:
    if not tests:
        return "—"
    return "; ".join(f"seed {t['seed']}: {fmt_p(t.get('p_value'))}"
                     f"{'*' if t.get('note') and t.get('p_value') is not None else ''}" for t in tests)


def _per_n_rows(block: dict) -> list[list[str]]:
    rows = []
    for comp in block["comparisons"]:
        for r in comp["per_n"].itertuples():
            ci = "—" if pd.isna(r.diff_ci_low) else f"{r.diff_ci_low:+.3f} to {r.diff_ci_high:+.3f}"
            ci90 = "—" if pd.isna(r.ci90_low) else f"{r.ci90_low:+.3f} to {r.ci90_high:+.3f}"
            rows.append([esc(comp["init"]), fmt_n(r.n_train, r.N), fmt_auroc(r.cnn_mean), fmt_auroc(r.base_mean),
                         fmt_signed(r.diff_mean), ci, ci90, fmt_p(r.p_value), fmt_p(getattr(r, "p_holm", None)),
                         str(int(r.n_pairs)), _p_cell(comp["tests"][r.n_train]), prose(r.verdict)])
    return rows


def versus_section(blocks: list[dict]) -> str:
    if not blocks:
        return ""
    parts = ["<h2>CNN vs radiomics</h2>",
             "<p>When does a CNN catch up with the radiomics + logistic-regression baseline? For each "
             "initialisation: the studied training-set size from which the CNN is <i>comparable</i> or better at "
             "that and every larger studied N, and from which it <i>outperforms</i> the baseline, each with the "
             "studied N below where it was not (no N between two studied sizes is interpolated: the learning-curve "
             "fit in Key results does that, where its fit passes), then the paired comparison at each N.</p>",
             HOW, _claims_how(blocks)]
    definitions = []
    for block in blocks:
        title = panel_title(block["task"], block["arch"])
        parts.append(f"<h3>{title}: crossover N against {esc(baseline_label(block))}</h3>" + table(
            ["CNN initialisation / recipe", "comparable or better from N", "outperforms from N", "seeds paired"],
            _crossover_rows(block), numeric={3}))
        parts.append(f"<h3>{title}: paired comparison at each N</h3>" + table(
            ["CNN initialisation", "N", "CNN AUROC", "radiomics AUROC", "difference", "95% CI", "90% CI (TOST)",
             "p", "p (Holm)", "seeds", "DeLong p (per seed)", "verdict"], _per_n_rows(block),
            numeric={2, 3, 4, 7, 8, 9}))
        parts.append(f'<p class="note">{prose(_tests_line(block))}</p>')
        if block["notes"]:   # why a DeLong test is missing: the report's own messages, naming no image or patient
            parts.append('<p class="note">' + "<br>".join(prose(n) for n in block["notes"])
                         + "<br><small>— = no DeLong test (reason above); * = on the test images both runs scored "
                         "only.</small></p>")
        for comp in block["comparisons"]:
            how = INTERVAL_OF.get(comp["result"]["method"], "no interval (one seed, no DeLong test)")
            if how not in definitions:
                definitions.append(how)
    parts.append("<p><b>How each difference's interval is made.</b> " + "; ".join(prose(d) for d in definitions)
                 + ".</p>")
    return "\n".join(parts)


INTERVAL_OF = {
    "paired bootstrap": "the paired two-level bootstrap (the same test-patient resamples and seeds on both sides); "
                        "an N whose runs lack draws keeps the Student-t interval of the per-seed differences",
    "seeds": "the Student-t interval of the per-seed paired differences (a seed-to-seed spread on a fixed test "
             "set, not the sampling of the test set)",
    "delong": "the paired DeLong interval, one seed per N"}


def _claims_how(blocks: list[dict]) -> str:
    """What 'comparable' and 'outperforms' mean here, with the margin, and whether Holm was applied."""
    margin = blocks[0].get("margin", DEFAULT_MARGIN)
    holm = any(b.get("holm") for b in blocks)
    return ("<p><b>What the claims mean.</b> <i>Comparable</i> = equivalent within a margin of "
            f"±{margin:g} AUROC points (study.yaml <code>report.equivalence_margin</code>) by two one-sided "
            "tests: the 90% interval of the paired difference lies inside the margin. An interval wider than "
            "the margin is <i>not shown comparable</i>, however close its centre is to 0: not being shown worse "
            "is not being shown comparable. <i>Outperforms</i> = the 95% interval's lower bound above 0"
            + ("; at each N the several initialisations compared with the one baseline answer one question "
               "(does any beat it?), so their p-values are adjusted by Holm's step-down method and a difference "
               "counts as significant only where its Holm-adjusted p is below 0.05 too" if holm else "")
            + ". <i>p</i>: two-sided, of a zero difference (the paired bootstrap's where it was used, else a "
            "paired t over seeds).</p>")


def _tests_line(block: dict) -> str:
    """Which paired test the DeLong p column used, in words (clustered by patient or not)."""
    tests = block.get("delong_tests") or []
    if not tests:
        return "DeLong p: no DeLong test was possible (reasons below); the bootstrap interval stands alone."
    return "DeLong p: " + "; ".join(tests) + "."


def baseline_label(block: dict) -> str:
    """The baseline as the rest of the report names it ('radiomics + LR'), with any setting the grid varied."""
    recipe = block["radiomics_recipe"]
    return recipe if recipe.startswith(RADIOMICS_LABEL) else RADIOMICS_LABEL

"""HTML of the "CNN vs radiomics" section: crossover table, per-N paired comparison, definitions.

Only numbers and redacted, escaped labels reach the page (see ``page.esc``).
"""
from __future__ import annotations

import pandas as pd

from ..evaluate.crossover import outcome_text
from ..kinds import CrossoverOutcome
from .page import esc, fmt_auroc, fmt_n, fmt_signed, panel_title, table
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


def fmt_crossing(value, reason, n_min: float, n_max: float) -> str:
    if value is not None:
        return f"≈ {_fmt_count(value)}"
    if reason == CrossoverOutcome.ALREADY:
        return f"already at N = {_fmt_count(n_min)} (smallest studied)"
    if reason == CrossoverOutcome.NEVER:
        return f"not within the studied N (up to {_fmt_count(n_max)})"
    return esc(outcome_text(reason) or "—")


def fmt_range(ci, note, n_min: float, n_max: float) -> str:
    if ci is None:
        return f"—<br><small>{esc(note)}</small>" if note else "—"
    low = f"&lt; {_fmt_count(n_min)}" if ci[0] is None else _fmt_count(ci[0])
    high = f"&gt; {_fmt_count(n_max)}" if ci[1] is None else _fmt_count(ci[1])
    return f"{low} – {high}"


def _init_cell(comp: dict) -> str:
    star = " <b>(best CNN recipe)</b>" if comp["best_overall"] else ""
    return f"{esc(comp['init'])}{star}<br><small>{esc(comp['recipe'])}</small>"


def _crossover_rows(block: dict) -> list[list[str]]:
    rows = []
    for comp in block["comparisons"]:
        res, per_n = comp["result"], comp["per_n"]
        n_min, n_max = float(per_n["N"].min()), float(per_n["N"].max())
        rows.append([_init_cell(comp),
                     fmt_crossing(res["comparable_n"], res["comparable_reason"], n_min, n_max),
                     fmt_range(res["comparable_n_ci"], res["ci_note"] if res["comparable_n"] is not None else None,
                               n_min, n_max),
                     fmt_crossing(res["outperform_n"], res["outperform_reason"], n_min, n_max),
                     fmt_range(res["outperform_n_ci"], res["ci_note"] if res["outperform_n"] is not None else None,
                               n_min, n_max),
                     str(comp["n_seeds"])])
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
            rows.append([esc(comp["init"]), fmt_n(r.n_train, r.N), fmt_auroc(r.cnn_mean), fmt_auroc(r.base_mean),
                         fmt_signed(r.diff_mean), ci, str(int(r.n_pairs)), _p_cell(comp["tests"][r.n_train]),
                         esc(r.verdict)])
    return rows


def versus_section(blocks: list[dict]) -> str:
    if not blocks:
        return ""
    parts = ["<h2>CNN vs radiomics</h2>",
             "<p>When does a CNN catch up with the radiomics + logistic-regression baseline? For each "
             "initialisation: the training-set size from which the CNN is <i>comparable</i> (no longer "
             "significantly below the baseline) and from which it <i>outperforms</i> it (significantly above), "
             "then the paired comparison at each N.</p>", HOW]
    definitions = []
    for block in blocks:
        title = panel_title(block["task"], block["arch"])
        parts.append(f"<h3>{title}: crossover N against {esc(baseline_label(block))}</h3>" + table(
            ["CNN initialisation / recipe", "comparable from N", "95% range", "outperforms from N", "95% range",
             "seeds paired"], _crossover_rows(block), numeric={5}))
        parts.append(f"<h3>{title}: paired comparison at each N</h3>" + table(
            ["CNN initialisation", "N", "CNN AUROC", "radiomics AUROC", "difference", "95% CI", "seeds",
             "DeLong p (per seed)", "verdict"], _per_n_rows(block), numeric={2, 3, 4, 6}))
        parts.append(f'<p class="note">{esc(_tests_line(block))}</p>')
        if block["notes"]:
            parts.append('<p class="note">' + "<br>".join(esc(n) for n in block["notes"])
                         + "<br><small>— = no DeLong test (reason above); * = on the test images both runs scored "
                         "only.</small></p>")
        for comp in block["comparisons"]:
            if comp["result"]["definition"] not in definitions:
                definitions.append(comp["result"]["definition"])
    parts.append("<p><b>How the crossover N is defined.</b></p>"
                 + "".join(f"<p>{esc(d)}</p>" for d in definitions))
    return "\n".join(parts)


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

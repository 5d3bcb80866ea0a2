"""HTML of "Key results", rendered from the answer object (``report.answer``) so the page and answer.json agree.

Order: what is missing from the answer (skipped inits, thin seeds), then per (task, arch) the best
recipe at the smallest and largest N, the gains with paired intervals, the crossover with
radiomics, and the learning-curve predictions, each extrapolation labelled as such.
"""
from __future__ import annotations

import html

from ..evaluate import learning_curve as lc
from ..evaluate.uncertainty import NOT_COVERED
from .page import esc, panel_title
from .backbones import versus_word
from .intervals import BOOTSTRAP

NOT_SHOWN = "—"


def _auroc(x) -> str:
    return NOT_SHOWN if x is None else f"{x:.3f}"


def _ci(low, high) -> str:
    return "no CI" if low is None or high is None else f"95% CI {low:.3f} to {high:.3f}"


def _signed_ci(low, high) -> str:
    return "no CI" if low is None or high is None else f"95% CI {low:+.3f} to {high:+.3f}"


def _n(value) -> str:
    return NOT_SHOWN if value is None else f"{value:,}"


def _patients(row: dict) -> str:
    """`` (41 patients)`` where a best recipe's N images came from fewer patients; nothing where they are as many
    (data without patient ids) or none were recorded."""
    p = row.get("n_patients")
    return "" if p is None or p == row["N"] else f" ({p:,} patients)"


def _lead(where: str) -> str:
    """'task — arch: ' before a key result where the study has several panels; nothing when it has one."""
    return f"{where}: " if where else ""


def _why(reason: str) -> str:
    """A skip or failure reason as one short phrase, the whole message (and its fix) folded in a details block."""
    text = str(reason or "no reason recorded")
    head = text.split(": ", 1)[0] if len(text) > 90 else text
    head = head if len(head) <= 90 else head[:89] + "…"
    if head == text:
        return esc(text)
    return f"{esc(head)} <details><summary>why, and the fix</summary><small>{esc(text)}</small></details>"


def _skipped(answer: dict) -> list[str]:
    items = []
    for s in answer["skipped"]:
        verb = "skipped" if s["status"] == "skipped" else "failed"
        if s.get("has_results"):
            items.append(f"<li class='missing'><b>Partly missing: {esc(s['init'])}</b> — {s['runs']} run(s) {verb}; "
                         f"its results below use the runs that finished: {_why(s['reason'])}</li>")
        else:
            items.append(f"<li class='missing'><b>Not in this answer: {esc(s['init'])}</b> — {s['runs']} run(s) "
                         f"{verb}, so every result below is among what ran: {_why(s['reason'])}</li>")
    if answer["few_seeds"]:
        items.append(_few_seeds(answer["few_seeds"]))
    return items


def _few_seeds(thin: list[dict]) -> str:
    """The thin-seed warning, honest per kind: two seeds are widened, one seed borrows a spread or has none."""
    two = sum(t["n_seeds"] >= 2 for t in thin)
    lent = sum(t["n_seeds"] == 1 and str(t.get("seed_variance") or "").startswith("borrowed") for t in thin)
    bare = len(thin) - two - lent
    parts = []
    if two:
        parts.append(f"{two} with 2 seeds: their intervals lean on the small-seed correction and are wide")
    if lent:
        parts.append(f"{lent} with 1 seed: the seed variance is borrowed from a neighbouring cell (named with "
                     "each result)")
    if bare:
        parts.append(f"{bare} with 1 seed and nothing to borrow from: {NOT_COVERED}")
    return (f"<li class='missing'><b>Few seeds</b>: {len(thin)} recipe/N cell(s) finished with fewer than 3 seeds "
            f"(3 or more advised); " + "; ".join(parts) + ".</li>")


def _seed_note(row: dict) -> str:
    """', seed variance borrowed from ...' or ', test set only; ...' for a one-seed cell; '' otherwise."""
    account = row.get("seed_variance")
    return "" if row["n_seeds"] != 1 or not account else f"; {esc(account)}"


def _best(panel: dict, where: str) -> list[str]:
    rows = panel["best_recipe_per_n"]
    ends = (rows[0], rows[-1]) if len(rows) > 1 else tuple(rows)
    return [f"<li><b>{where + ', ' if where else ''}N = {_n(r['N'])}{_patients(r)}</b>: best recipe <b>{esc(r['recipe'])}</b> ({_chosen_by(r)}), "
            f"{esc(panel['metric'])} {_auroc(r['test_auroc'])} ({_ci(r['ci_low'], r['ci_high'])}, {r['n_seeds']} "
            f"seed{'s' if r['n_seeds'] != 1 else ''}{_seed_note(r)}){_noise(r)}.</li>" for r in ends]


def _chosen_by(row: dict) -> str:
    """How the named recipe was chosen: on validation, or by the folds of a cross-validation (and how many)."""
    if row.get("selection") == "cv":
        return f"chosen by {row.get('cv_folds') or 'k'}-fold patient-grouped cross-validation over the N-pool"
    return "chosen on validation" if row.get("selection") != "mixed" else esc(row.get("selection_note", ""))


def _noise(row: dict) -> str:
    """'; 7 of 7 recipes within noise of the best (named by the one-standard-error rule)' where the choice
    was measured: a reader must not take the named recipe for a clear winner."""
    line = row.get("within_noise_line")
    where = "in cross-validation" if row.get("selection") == "cv" else "on validation"
    return "" if not line else f"; {esc(line)} {where} (named by the one-standard-error rule)"


def _gains(panel: dict, where: str) -> list[str]:
    by_pair: dict[tuple, list[dict]] = {}
    for g in panel["gains"]:
        by_pair.setdefault((g["init"], g["versus"]), []).append(g)
    items = []
    for (init, versus), rows in by_pair.items():
        ends = (rows[0], rows[-1]) if len(rows) > 1 else tuple(rows)
        parts = []
        for r in ends:
            paired = r.get("ci_method") == BOOTSTRAP
            noise = (f", within noise (the {'paired CI' if paired else 'unpaired t-interval over seeds'} contains 0)"
                     if r["within_noise"] else "")
            gain = NOT_SHOWN if r["gain"] is None else f"{r['gain']:+.3f}"
            parts.append(f"{gain} at N = {_n(r['N'])} ({_signed_ci(r['ci_low'], r['ci_high'])}{noise})")
        items.append(f"<li>{_lead(where)}<b>{esc(init)}</b> over <b>{esc(versus)}</b>: " + "; ".join(parts) + ".</li>")
    return items


def _measured(c: dict, key: str) -> str:
    """'from N = 800 (not at N = 200)': the bracketing studied N, never an interpolated one."""
    first, before = c[f"{key}_from_N"], c.get(f"{key}_not_at_N")
    if first is None:
        return esc(c[f"{key}_note"] or NOT_SHOWN)
    if before is None:
        return f"already at the smallest N studied (N = {_n(first)})"
    return f"from N = {_n(first)} (not at N = {_n(before)}; nothing studied between)"


FAR = int(lc.HORIZON)   # N beyond this multiple of the largest N studied is not shown (nor searched for crossings)
UNREACHED = "never (some bootstrap refits never reach it)"
NOT_EXTRAPOLATED = "beyond the studied N (not extrapolated)"


def _span(low, high, smallest=None, largest=None, open_end: str = f"beyond {FAR}x the largest N studied") -> str:
    """A range of N in words: an end beyond the studied sizes by more than FAR, or open, in words."""
    start = _n(low) if low else (f"below {_n(smallest)}" if smallest else "below the smallest N studied")
    if high and largest and high > FAR * largest:
        high, open_end = None, f"beyond {FAR}x the largest N studied ({_n(FAR * largest)})"
    return f"{start} to {_n(high) if high else open_end}"


def _crossover(panel: dict, where: str) -> list[str]:
    items = []
    for c in panel["crossover_vs_radiomics"]["measured"]:
        margin = c.get("equivalence_margin")
        within = "" if margin is None else f" (within ±{margin:g} AUROC, two one-sided tests)"
        holm = "; Holm-adjusted over the initialisations at each N" if c.get("holm_adjusted") else ""
        items.append(f"<li>{_lead(where)}<b>{esc(c['init'])}</b> vs radiomics on the studied N ({esc(c['method'] or 'no test')}{holm}): "
                     f"comparable or better{within} {_measured(c, 'comparable')}; significantly better "
                     f"{_measured(c, 'outperforms')}.</li>")
    for c in panel["crossover_vs_radiomics"]["from_learning_curves"]:
        if c.get("refused"):
            continue
        if c["matches_from_N"] is not None:
            kind = "extrapolated" if c["match_extrapolated"] else "within the studied N"
            rng = c.get("match_range")
            ends = (NOT_EXTRAPOLATED,) if c.get("extrapolation_refused") else ()
            span = "" if not rng else f"; 95% range {_span(rng[0], rng[1], None, None, *ends)}"
            match = f"matches radiomics from N ≈ {_n(c['matches_from_N'])} ({kind}{span})"
        else:
            match = f"match with radiomics: {esc(c['match_note'] or NOT_SHOWN)}"
        if c["beats_from_N"] is not None:
            kind = "extrapolated" if c["beat_extrapolated"] else "within the studied N"
            beat = f"beats it (CI above 0) from N ≈ {_n(c['beats_from_N'])} ({kind})"
        else:
            beat = f"beating it: {esc(c['beat_note'] or NOT_SHOWN)}"
        side = c.get("radiomics_side")
        against = "" if not side or side == "its learning curve" else f" (radiomics: {esc(side)})"
        items.append(f"<li>{_lead(where)}<b>{esc(c['init'])}</b> (learning-curve fit{against}) {match}; {beat}.</li>")
    return items


def _curves(panel: dict, where: str, targets: list[float]) -> list[str]:
    items = []
    for init in panel["inits"]:
        curve = init["learning_curve"]
        if not curve.get("fitted"):
            items.append(f"<li>{_lead(where)}<b>{esc(init['init'])}</b>: no learning-curve extrapolation "
                         f"({esc(curve.get('refused', 'not fitted'))}).</li>")
            continue
        sizes = [r["N"] for r in init["per_n"]]
        refused = (curve.get("extrapolation") or {}).get("refused")
        parts = ([f"nothing extrapolated beyond N = {_n(max(sizes))}: {esc(refused)}"] if refused else
                 [f"AUROC at N = {_n(p['N'])} ({p['factor']:g}x the largest, extrapolated): {_auroc(p['estimate'])} "
                  f"({_ci(p['ci_low'], p['ci_high'])})" for p in curve["predicted"]])
        for t in curve["n_for_target"]:
            if t.get("refused") and refused and t["refused"].startswith("not extrapolated"):
                parts.append(f"N for AUROC {t['auroc']:g}: not within the studied N (not extrapolated)")
            elif t.get("refused"):
                parts.append(f"AUROC {t['auroc']:g}: {esc(t['refused'])}")
            else:
                kind = "extrapolated" if t["extrapolated"] else "within the studied N"
                if t["estimate"] is None or t["estimate"] > FAR * max(sizes):   # that far out a power law guesses
                    parts.append(f"N for AUROC {t['auroc']:g}: beyond {FAR}x the largest N studied "
                                 f"({_n(FAR * max(sizes))}); not estimated")
                    continue
                low = t["ci_low"]
                if low is None and t["ci_high"] is None:   # no bootstrap refits, or nearly all never reach it
                    frac = t.get("reachable_in_fraction_of_refits")
                    span = "" if frac is None else f"; reached in only {frac:.0%} of the bootstrap refits"
                else:
                    low = None if low is None or low < min(sizes) else low
                    end = NOT_EXTRAPOLATED if refused else UNREACHED
                    span = f"; 95% range {_span(low, t['ci_high'], min(sizes), max(sizes), end)}"
                parts.append(f"N for AUROC {t['auroc']:g}: ≈ {_n(t['estimate'])} ({kind}{span})")
        hold = curve.get("holdout", {})
        if "error" in hold:
            pi = hold.get("prediction_interval") or [None, None]
            verdict = ("" if hold.get("covered") is None else
                       f"; 95% prediction interval {_ci(pi[0], pi[1])}, "
                       f"{'measured inside' if hold['covered'] else 'measured outside'}")
            parts.append(f"check: fitted without N = {_n(hold['held_out_N'])}, it predicts "
                         f"{_auroc(hold['predicted']['estimate'])} there against {_auroc(hold['measured'])} measured "
                         f"(error {hold['error']:+.3f}{verdict})")
        elif hold.get("refused"):
            parts.append(f"no held-out check ({esc(hold['refused'])})")
        items.append(f"<li>{_lead(where)}<b>{esc(init['init'])}</b>: " + "; ".join(parts) + ".</li>")
    return items


def key_results_html(answer: dict) -> str:
    items = _skipped(answer)
    single = len(answer["panels"]) == 1
    for panel in answer["panels"]:
        where = "" if single else panel_title(panel["task"], panel["arch"])
        items += _best(panel, where) + _gains(panel, where) + _crossover(panel, where)
        items += _curves(panel, where, answer["targets"])
    if not items:
        return ""
    methods = answer["methods"]
    return ("<h2>Key results</h2><p>Also in <code>answer.json</code>. Smallest and largest training-set size; details "
            "in the tables below.</p><ul>" + "".join(items) + "</ul>"
            f"<p class='method'><small>{html.escape(methods['selection'])} {html.escape(methods['uncertainty'])} "
            f"{html.escape(methods['learning_curve'])}</small></p>")


VERDICT_STYLE = {"supported": "good", "contradicted": "bad", "within noise": "noise", "not tested here": "untested"}


def verdict_html(answer: dict) -> str:
    """The verdict first (answer.json ``verdict``): a headline, then one line per N; red when nothing is usable."""
    verdict = answer.get("verdict")
    if not verdict:
        return ""
    warn = " warn" if verdict.get("level") == "warn" else ""
    lines = "".join(f"<li>{esc(line)}</li>" for line in verdict.get("lines", []))
    return (f"<div class='verdict-box{warn}'><p><b>Verdict.</b> {esc(verdict['headline'])}</p>"
            f"<ul>{lines}</ul></div>")


def claims_html(answer: dict) -> str:
    """The seed paper's claims with this study's verdicts (answer.json ``claims``), as a table."""
    claims = answer.get("claims") or []
    if not claims:
        return ""
    rows = "".join(f"<tr><td>{esc(c['claim'])}</td><td class='verdict {VERDICT_STYLE.get(c['verdict'], '')}'>"
                   f"<b>{esc(c['verdict'])}</b></td><td><small>{esc(c['evidence'])}</small></td></tr>"
                   for c in claims)
    return ("<h2>The paper's claims, checked on this study</h2>"
            "<p><small>Romero et al. (Med Phys 2020) on NIH ChestX-ray14. <i>supported</i> / <i>contradicted</i>: "
            "shown by this study's paired test-set differences (Holm-adjusted over the N a claim covers; 'about "
            "equal' by two one-sided tests within the equivalence margin); <i>within noise</i>: measured but not "
            "shown either way; <i>not tested here</i>: this study has no runs that answer it. About this study's "
            "data and N, not a re-judgement of the paper.</small></p>"
            f"<table class='claims'><thead><tr><th>claim</th><th>verdict</th><th>this study's numbers (95% CI)"
            f"</th></tr></thead><tbody>{rows}</tbody></table>")


def backbones_html(answer: dict) -> str:
    """Backbones compared head to head at each N (answer.json ``backbones``): each backbone's named recipe, and its
    paired test difference from the reference backbone (``report.backbones``)."""
    compared = answer.get("backbones") or []
    if not compared:
        return ""
    parts = []
    for c in compared:
        rows = []
        for b in c["backbones"]:
            v = b["versus_reference"]
            word = None if v is None else versus_word(v)
            if v is None:
                versus = "reference"
            elif word is None:
                versus = "no paired difference" if v["estimate"] is None else \
                    f"{v['estimate']:+.3f} (no CI: not compared)"
            else:
                how = "" if v["method"] == BOOTSTRAP else f"; {v['method']}"
                versus = f"{v['estimate']:+.3f} ({_signed_ci(v['low'], v['high'])}{how}): {word}"
            rows.append(f"<tr><td>{esc(b['arch'])}</td><td>{esc(b['shown'])}</td><td>{_auroc(b['val_auroc'])}</td>"
                        f"<td>{_auroc(b['test_auroc'])} ({_ci(b['ci_low'], b['ci_high'])})</td><td>{esc(versus)}</td></tr>")
        parts.append(f"<h3>{esc(c['task'])}, N = {_n(c['N'])}</h3><table><thead><tr><th>backbone</th>"
                     "<th>its named CNN recipe</th><th>validation AUROC</th><th>test AUROC</th>"
                     "<th>test difference from the reference</th></tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table>")
    return ("<h2>Backbones compared</h2><p>Each backbone's recipes are ranked in their own panel; here each "
            f"backbone's named recipe meets the others on the same test split. <small>{esc(compared[0]['rule'])}."
            "</small></p>" + "".join(parts))

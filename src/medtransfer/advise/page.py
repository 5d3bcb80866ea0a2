"""advice.html: the advice object as one self-contained page in the study report's look (its CSS and tables).

Rendered from the same ``advice.Advice`` that is written to advice.json, so the page and the file agree (a
number the file records rounded is shown from the same rounding). Text from the data or the configs (names,
recipes, labels, error messages, notes quoting a source) goes through the report's ``esc`` (escaped and
redacted); the train command and the tool's own sentences (the methods' descriptions, why no learning curve
was fitted, what the interval resampled) only through ``html.escape`` / ``prose`` (the command must stay exact
to be copied, and redaction would eat the word after "patient" in the tool's text).
"""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone

from ..durations import format_duration
from ..report.page import CSS, esc, fmt_auroc, fmt_signed, prose, table
from .advice import Advice, Gain, Recommendation
from .candidates import Candidate
from .rank import CandidateScore
from .plan import SearchPlan
from .search import HalvingResult

FOOTER = """<footer><h2>How to read this</h2><dl>
<dt>Transferability</dt><dd>How well a candidate's frozen features (before any fine-tuning) separate your labels:
LogME, the evidence of a Bayesian linear model on the features (higher is better; only comparable between candidates
on the same images), the AUROC of a patient-grouped cross-validated logistic probe, a k-NN AUROC (each image scored by
its nearest images of other patients), and SFDA (the mean probability of the true class under a Fisher discriminant
challenged with harder, mixed versions of the images; 0-1, higher is better). The candidates are ranked by the score
that agreed best with fine-tuning in medtransfer's benchmark (named under the table). It orders the search; it does
not decide the recipe.</dd>
<dt>Search</dt><dd>Successive halving: every recipe trains a short step budget, the better half by validation AUROC
trains again with twice the steps, until the last rung; there the pick is named by the one-standard-error rule (the
cheapest recipe within 1 SE of the best: probe &lt; frozen &lt; gradual &lt; full fine-tuning), as a study's report
names its pick, and trained once more with the full budget. A probe (a logistic regression on a pretrained
source's frozen features, C chosen by patient-grouped cross-validation) takes no steps: it is fitted once, tried
first, and its score carried through the rungs. When the validation split is too small to rank on (fewer than 50
images, or fewer than 10 of a class), every trial is scored by patient-grouped cross-validation over the N-pool (the
training images and the validation share), the same folds for every recipe and for the final run. The test split
plays no part in any choice.</dd>
<dt>Test AUROC</dt><dd>The one evaluation of the pick on the test split; its 95% interval resamples test patients
(images where the data has no patient IDs).</dd>
<dt>pixels + LR</dt><dd>The near-free yardstick: a logistic regression on the images shrunk to 16 x 16 pixels, fitted
on the final run's training images (C by patient-grouped cross-validation among them) and tested on the same test
images; the difference to it is paired on the same test patient resamples. A pick that does not beat it is not
recommended.</dd>
<dt>Expected gain</dt><dd>The pick's validation AUROC minus the best recipe of scratch (or ImageNet) at the highest
rung both reached (equal step budgets, the same validation images); the interval is a paired bootstrap over
validation patients. Small validation sets make it wide.</dd>
<dt>Learning curve</dt><dd>The pick trained at N/4, N/2 and N (same steps), an inverse power law fitted to the
validation AUROCs; 2x and 4x N are extrapolations of that model.</dd>
</dl><p><small>Only aggregate numbers appear on this page; no image or patient identifiers.</small></p></footer>"""


def _num(x, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _ci(low, high) -> str:
    return "—" if low is None or high is None else f"{low:.3f} – {high:.3f}"


def _recommendation(rec: Recommendation, search: HalvingResult | None = None) -> str:
    ci = rec.test_auroc_ci or {}
    interval = (f" (95% CI {ci['low']:.3f} – {ci['high']:.3f}, bootstrap over test {prose(ci.get('resampled', 'patients'))})"
                if ci else " (no interval: AUROC undefined)")
    items = [("Recipe", f"<b>{esc(rec.recipe)}</b> ({esc(rec.pick.arch)}, {esc(rec.pick.effort(rec.steps))})"),
             ("Test AUROC", f"<b>{fmt_auroc(rec.test_auroc)}</b>{interval}"),
             _validation_item(rec, search)]
    point = rec.test_operating_point
    if point:
        items.append(("At the validation threshold", f"sensitivity {_num(point.get('sensitivity'))}, specificity "
                                                     f"{_num(point.get('specificity'))} on test"))
    for b in rec.verdict.baselines if rec.verdict else ():
        items.append((f"Against {esc(b.baseline)}",
                      f"{fmt_signed(b.difference)} (95% CI {_ci(b.diff_low, b.diff_high)}, paired on the test patients; "
                      f"its test AUROC {fmt_auroc(b.auroc)}, fitted on the same training images): "
                      f"<b>{'better' if b.beats else 'not shown better'}</b>"))
    for suspect in rec.verdict.suspect if rec.verdict else ():
        items.append(("Suspect", prose(suspect)))
    if rec.note:
        items.append(("Note", esc(rec.note)))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    if not rec.recommended:
        return ("<div class='verdict-box warn'><p><b>No recommendation at this N.</b> The best recipe the search "
                f"found, {esc(rec.recipe)}, was trained and tested, and {prose(rec.why_not)}. More labelled "
                "patients, or a check of the data (labels, a shortcut such as a marker or border the model can "
                "read), come before choosing a recipe.</p></div>"
                "<h2>The best recipe found (not recommended)</h2>" f"<dl>{body}</dl>"
                "<p>Its model is kept only so it can be inspected (e.g. with <code>predict --cam</code>):</p>"
                f"<pre><code>{html.escape(rec.predict)}</code></pre>")
    return ("<h2>Recommendation</h2>" f"<dl>{body}</dl>"
            "<p>Train it again (same data, same seed, same steps):</p>"
            f"<pre><code>{html.escape(rec.command)}</code></pre>"
            "<p>Score new images with the kept model:</p>"
            f"<pre><code>{html.escape(rec.predict)}</code></pre>")


def _validation_item(rec: Recommendation, search: HalvingResult | None) -> tuple[str, str]:
    """The final run's and the search's validation numbers, named for what they are (a held-out split, or the
    out-of-fold scores of the N-pool's folds)."""
    if search is not None and search.selection == "cv":
        return ("Cross-validated AUROC", f"{fmt_auroc(rec.val_auroc)} out of fold over the final run's {search.folds} "
                f"folds; mean fold AUROC {fmt_auroc(rec.search_val_auroc)} in the search at {rec.search_steps} steps")
    return ("Validation AUROC", f"{fmt_auroc(rec.val_auroc)} (final run); {fmt_auroc(rec.search_val_auroc)} "
                                f"in the search at {rec.search_steps} steps")


def _gains(gains: list[Gain]) -> str:
    rows = []
    for g in gains:
        if g.reason:
            rows.append([esc(g.versus), "—", "—", "—", "—", "—", "—", esc(g.reason)])
            continue
        rows.append([esc(g.versus), f"{esc(g.versus_recipe)}<br><small>rung {g.rung}, {g.steps} steps</small>",
                     fmt_auroc(g.pick_val), fmt_auroc(g.versus_val), fmt_signed(g.gain),
                     _ci(g.low, g.high), fmt_auroc(g.expected_test_versus), ""])
    return ("<h2>Expected gain over scratch and ImageNet</h2>"
            "<p>From the search's validation AUROCs at equal step budgets; the expected test AUROC of the reference "
            "is the pick's test AUROC minus that gain (an estimate, not a measurement).</p>"
            + table(["compared with", "its best recipe in the search", "the pick's validation AUROC",
                     "its validation AUROC", "gain (validation AUROC points)", "95% CI of gain",
                     "its expected test AUROC", "note"], rows, numeric={2, 3, 4, 6}))


def _curve(a: dict) -> str:
    """The learning-curve section from ``a["learning_curve"]``: that block is JSON as ``workflow.learning_curve``
    builds it, so the section reads it from a JSON-shaped holder (``{"learning_curve": block}``)."""
    c = a["learning_curve"]
    parts = ["<h2>Is it worth labelling more images?</h2>"]
    # a measured size has no interval here (one run per size); only the fitted curve's predictions have one
    rows = [[f"{s['n_train']:,}", fmt_auroc(s["val_auroc"]), "—", "measured"] for s in c["sizes"]]
    for p in c["predictions"]:
        rows.append([f"{p['n_train']:,} ({p['factor']:g}x)", fmt_auroc(p["val_auroc"]), _ci(p["low"], p["high"]),
                     "<b>extrapolation</b>" if p["extrapolation"] else "interpolation"])
    parts.append(table(["N", "validation AUROC", "95% CI (predictions only)", "measured or predicted"], rows,
                       numeric={1}))
    fit = c.get("fit") or {}
    if not fit.get("ok"):
        parts.append(f'<p class="note">No learning-curve prediction: {prose(fit.get("reason") or "no fit")}.</p>')
    else:
        gains = "; ".join(f"{p['factor']:g}x N: {fmt_signed(p['gain_over_n'])} → expected test AUROC "
                          f"{fmt_auroc(p['expected_test_auroc'])}" for p in c["predictions"])
        exact = " With three sizes the curve passes through the points, so only the bootstrap says how far it moves." \
            if fit.get("exact_fit") else ""
        parts.append(f"<p>Predicted gain over the current N (extrapolated): {gains}.{exact}</p>")
    parts.append(f"<p><small>{html.escape(c['method'])} Scale: {html.escape(c['scale'])}.</small></p>")
    return "\n".join(parts)


def _ranking(candidates: list[Candidate], scores: list[CandidateScore], method: str) -> str:
    cands = {c.name: c for c in candidates}
    rows = []
    for s in scores:
        c = cands.get(s.name)
        note = f"unusable: {s.unusable}" if s.unusable else "; ".join(
            n for n in (c.note if c else None, s.probe_note) if n)   # the candidate's own note first
        rows.append([str(s.rank or "—"), esc(s.name), esc(c.arch if c else ""), esc(c.origin if c else ""),
                     _num(s.logme, 4), fmt_auroc(s.probe_auroc), fmt_auroc(s.knn_auroc), _num(s.sfda), esc(note)])
    for c in candidates:
        if not c.available:
            rows.append(["—", esc(c.name), esc(c.arch), esc(c.origin), "—", "—", "—", "—", f"unavailable: {esc(c.reason)}"])
    return ("<h2>Transferability ranking (no fine-tuning)</h2>" + table(
        ["rank", "candidate", "arch", "from", "LogME", "probe AUROC", "k-NN AUROC", "SFDA", "note"], rows,
        numeric={0, 4, 5, 6, 7})
        + f"<p><small>{html.escape(method)}</small></p>")


def _search(search: HalvingResult, plan: SearchPlan) -> str:
    parts = ["<h2>What was tried</h2>",
             f"<p>{len(plan.arms)} recipes; rungs of {', '.join(map(str, plan.rung_counts()))} recipes at "
             f"{', '.join(map(str, plan.rung_steps))} steps, then the pick at {plan.final_steps} steps "
             f"(plan estimated {format_duration(plan.estimated_seconds_rounded)}; the search took "
             f"{format_duration(search.seconds_rounded)}). {_scored_by(search)}</p>"]
    if search.choice is not None:
        within = ", ".join(esc(t.arm.label) for t in search.choice.within_noise)
        parts.append(f"<p>The pick, {esc(search.pick.label)}: {prose(search.choice.rule)}. "
                     f"{esc(search.choice.noise_line)} at the last rung ({within}).</p>")
    for r, rung in enumerate(search.rungs, 1):
        ordered = sorted(rung, key=lambda t: -(t.val_auroc_or_none if t.val_auroc_or_none is not None else -1))
        rows = [[esc(t.arm.label), _num(t.val_auroc_or_none), "kept" if t.kept else "dropped",
                 f"{t.seconds_rounded:.1f}", esc(t.error or "")] for t in ordered]
        parts.append(f"<h3>Rung {r}: {rung[0].steps if rung else None} steps</h3>"
                     + table(["recipe", "mean fold AUROC" if search.selection == "cv" else "val AUROC", "", "seconds",
                              "error"], rows, numeric={1, 3}))
    return "\n".join(parts)


def _scored_by(search: HalvingResult) -> str:
    """How the trials were scored, in one sentence (the test split is never among it)."""
    if search.selection == "cv":
        return (f"Every trial was scored by {search.folds}-fold patient-grouped cross-validation over the N-pool "
                f"(mean fold AUROC), because {prose(search.selection_reason.removeprefix('auto: '))}; the test "
                "split was not used.")
    return "Chosen on the validation split only."


def render_advice(advice: Advice) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if advice.search.selection == "cv":   # the final run's patients are the whole N-pool's
        images = (f"{advice.n_train:,} training and {advice.n_val:,} validation images, cross-validated as one N-pool "
                  f"of {advice.n_train_patients:,} patients; {advice.n_test:,} test images")
    else:
        images = (f"{advice.n_train:,} training images ({advice.n_train_patients:,} patients), {advice.n_val:,} "
                  f"validation and {advice.n_test:,} test images")
    head = [f"<h1>Advice for {esc(str(advice.config))}</h1>",
            f'<p class="meta">Generated {when}: {images}; '
            f"task {esc(advice.task_kind)} ({esc(', '.join(advice.labels))}); budget "
            f"{format_duration(advice.budget_seconds)}, took {format_duration(advice.seconds)}.</p>"]
    notes = [f'<p class="note">{esc(n)}</p>' for n in advice.notes]
    sections = [_recommendation(advice.recommendation, advice.search), _gains(advice.gains),
                _curve({"learning_curve": advice.learning_curve}),
                _ranking(advice.candidates, advice.scores, advice.ranking_method), _search(advice.search, advice.plan)]
    body = "\n".join(head + sections[:1] + notes + sections[1:])   # the verdict first; how the budget shaped it after
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>medtransfer advice</title>'
            f"<style>{CSS}pre{{background:#f4f4f4;padding:.6em;overflow-x:auto;white-space:pre-wrap}}</style>"
            f"</head><body>\n{body}\n{FOOTER}\n</body></html>\n")

"""The self-contained report.html: inline CSS, the figure as base64, tables of aggregates only.

Text that came from the data or the user's configs (task, recipe, label, a failure reason, a source's
description) goes through ``esc``: ``redact``, then ``html.escape``. The report's own sentences (definitions,
which test was used, why a number is missing) go through ``prose``: escaped only, because redaction reads
"patient" as the start of an ID and would eat the next word of "the same patient resamples". Numbers are the
only other content, so no image or patient ID can reach the page.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd

from ..durations import format_duration
from ..kinds import Site
from .redact import redact
from .tables import InitName

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{margin-bottom:.3em}.meta{color:#666}.note{background:#f6f6f0;border-left:4px solid #c9c28a;padding:.5em .8em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f0f3f7}tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pos{color:#1b6e1b}td.neg{color:#a12020}
td.verdict.good{color:#1b6e1b}td.verdict.bad{color:#a12020}td.verdict.noise{color:#8a6d00}td.verdict.untested{color:#777}
.verdict-box{background:#eef3fa;border-left:5px solid #3a6ea5;padding:.6em 1em;font-size:1.05em}
.verdict-box.warn{background:#fbeeee;border-left-color:#a12020}img{max-width:100%}dl{display:grid;grid-template-columns:max-content auto;
gap:.2em 1em}dt{font-weight:600}dd{margin:0}small{color:#666}footer{margin-top:2.5em;font-size:.9em;color:#444}
"""


def esc(text) -> str:
    """Data-derived text for the page (a name, label, recipe, failure reason): redacted, then escaped, so an
    image name or patient ID quoted in it never reaches the page."""
    return html.escape(redact(text))


def prose(text) -> str:
    """The tool's own sentence for the page: escaped only. It quotes no data, and redaction would blank the
    word after "patient" in it (see the module docstring)."""
    return html.escape(" ".join(str(text).split()))


def fmt_auroc(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{x:.3f}"


def fmt_ci(lo, hi, missing: str = "— (1 seed)") -> str:
    return missing if pd.isna(lo) or pd.isna(hi) else f"{lo:.3f} – {hi:.3f}"


@dataclass(frozen=True)
class SignedCell:
    """A formatted signed number that keeps its sign as data, so a table can colour it without parsing text."""
    text: str
    sign: int     # +1, -1, or 0 (zero at the shown precision, or missing)

    def __str__(self) -> str:
        return self.text


def fmt_signed(x, digits=3, unit="") -> SignedCell:
    if pd.isna(x):
        return SignedCell("—", 0)
    shown = round(float(x), digits)
    return SignedCell(f"{x:+.{digits}f}{unit}", (shown > 0) - (shown < 0))


def fmt_n(nk, n, patients=None) -> str:
    """The N cell; with ``patients`` (the median recorded), ``50 · 41 patients`` where the images came from fewer
    patients (data with patient ids), so a reader sees how many independent people N stands for."""
    count = "?" if pd.isna(n) else f"{int(round(n)):,}"
    shown = f"all ({count})" if nk == "all" else count
    if patients is None or pd.isna(patients) or pd.isna(n) or round(patients) == round(n):
        return shown
    return f"{shown} · {int(round(patients)):,} patients"


def table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """Cells are pre-escaped HTML strings; ``numeric`` column indices are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = []
            if i in numeric:
                cls.append("num")
                if isinstance(cell, SignedCell) and cell.sign:
                    cls.append("pos" if cell.sign > 0 else "neg")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def panel_title(task, arch) -> str:
    """A panel's heading as escaped HTML: 'task — arch', or the task alone for an arch-less (radiomics) panel."""
    return esc(task) + (f" — {esc(arch)}" if arch is not None and not pd.isna(arch) else "")


def _question(tasks: str, inits: list[InitName]) -> str:
    """The study's question, naming only the comparisons its grid can answer."""
    same = [i for i in inits if i.site == Site.SAME]
    others = [i for i in inits if i.site in ("scratch", "imagenet", "xrv", Site.OTHER)]
    unsited = [i for i in inits if i.site == "unlabelled"]
    text = (f"On <b>{tasks}</b>: which way of starting and fine-tuning a CNN gives the best test AUROC as the "
            "number of training images grows")
    refs = same or unsited
    comps = others if same else [i for i in others if i.site != Site.OTHER]
    if refs and comps:
        what = ("pretraining on images from the same site (" + ", ".join(esc(r.name) for r in refs)
                + ")") if same else "pretraining on " + ", ".join(esc(r.name) for r in refs)
        named = [{"scratch": "training from scratch", "imagenet": "ImageNet weights",
                  "xrv": f"torchxrayvision's chest X-ray weights ({esc(c.label)})"}.get(c.site,
                                                                                      f"pretraining on {esc(c.label)}")
                 for c in comps]
        listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        text += f", and how much does {what} buy over {listed}"
    return f"<p>{text}?</p>"


def title_section(name, lead: str = "") -> str:
    """The title, then ``lead``: what a reader must see first (the verdict and the paper's claims)."""
    return f"<h1>{esc(name) if name else 'Transfer-learning study'}</h1>\n{lead}"


def header_section(n_runs: int, status_counts: dict, total_seconds: float, axes: dict, sources: dict,
                   sites: dict, notes: list[str]) -> str:
    """When and from what the report was made, then what the study asked, its sources, grid and design notes."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    counts = ", ".join(f"{v} {esc(k)}" for k, v in sorted(status_counts.items()))
    tasks = ", ".join(esc(t) for t in axes.get("task", [])) or "—"
    parts = [
        f'<p class="meta">Report generated {when} from {n_runs} runs in results.sqlite ({counts}); '
        f"total compute time {format_duration(total_seconds)}.</p>",
        "<h2>What this study asked</h2>",
        _question(tasks, axes.get("initialisation", [])),
    ]
    if sources:
        rows = [[esc(s), esc({Site.SAME: "same-site", Site.OTHER: "other-site"}.get(sites.get(s), "not given")),
                 esc(desc)] for s, desc in sources.items()]
        parts.append("<h3>Pretraining sources</h3>" + table(["source", "site", "data"], rows))
    items = "".join(f"<dt>{esc(k)}</dt><dd>{', '.join(esc(v) for v in vals)}</dd>"
                    for k, vals in axes.items() if vals)
    parts.append(f"<h3>Grid (values found in the results)</h3><dl>{items}</dl>")
    parts += [f'<p class="note">{prose(n)}</p>' for n in notes]   # the tool's notes: names in them are redacted where made
    return "\n".join(parts)


def curves_section(curves_png: bytes, recipes_png: bytes | None = None) -> str:
    curves = base64.b64encode(curves_png).decode("ascii")
    out = ("<h2>Learning curves</h2>"
           f'<img alt="test AUROC of each initialisation versus number of training images" '
           f'src="data:image/png;base64,{curves}">'
           "<p><small>One line per initialisation: at each N the recipe the selection rule names for it (one-standard-error "
           "rule on validation AUROC, or on the mean fold AUROC where the runs cross-validated; the "
           "recipes differ between N; the tables below name them); points are the mean test AUROC over seeds, the "
           "band its 95% CI over seeds and test patients. Dashed: the radiomics baseline. Colours are fixed per "
           "initialisation in every figure.</small></p>")
    if recipes_png:
        recipes = base64.b64encode(recipes_png).decode("ascii")
        out += ("<h3>Every recipe</h3>"
                f'<img alt="test AUROC of every recipe, one panel per strategy and LR policy" '
                f'src="data:image/png;base64,{recipes}">'
                "<p><small>One panel per fine-tuning strategy x LR policy; colour = initialisation, line style = "
                "the remaining recipe axes. Also saved as recipes.png.</small></p>")
    return out


BEST_HOW = ("<p>At each training-set size (N = images actually trained on, median over seeds) the recipes are "
            "ranked by mean <i>validation</i> AUROC over seeds; where the validation split is too small to choose "
            "on (fewer than 50 images or 10 of a class) the runs cross-validated over their N-pool instead, and "
            "<i>validation</i> below means the mean fold AUROC, compared fold-paired with the Nadeau-Bengio "
            "corrected t-interval (the key results and answer.json's selection say which). With a few validation images "
            "many recipes tie or "
            "cannot be told apart, so the table says how many are <i>within noise of the best</i>: the best "
            "itself and every recipe whose paired 95% interval of the validation AUROC difference to the best "
            "contains 0 (paired over seeds and validation images: a seed-paired bootstrap over the validation "
            "predictions where the runs kept them, else a paired t-interval over the seeds' validation AUROCs; "
            "the table names which; a recipe without an interval counts as not separable). The recipe named "
            "follows the <i>one-standard-error rule</i>: the cheapest recipe whose mean validation AUROC is "
            "within one standard error of the best's (cost: radiomics + LR &lt; frozen &lt; gradual &lt; full, "
            "then fewer optimiser steps; at equal cost the higher mean validation AUROC; an exact tie is said "
            "as a tie). A tie is never broken by the recipe's name. The AUROC, its CI and the runner-up (the "
            "next recipe by mean validation AUROC) are on the test split, which plays no part in the choice; "
            "<i>pick − runner-up</i> is their paired test difference with its 95% CI. Binary tasks also show "
            "the test sensitivity, specificity and accuracy (mean over seeds) at each run's threshold chosen on "
            "validation (Youden's J), as a yes / no would be used.</p>")


def _difference_cell(d) -> str:
    if d is None or pd.isna(d.mean):
        return "—"
    ci = "no CI" if pd.isna(d.low) or pd.isna(d.high) else f"95% CI {d.low:+.3f} to {d.high:+.3f}"
    return f"{d.mean:+.3f} ({ci})"


def _noise_cell(r) -> str:
    if r.within_noise is None:
        return "—"
    names = "; ".join(esc(n) for n in r.within_noise)
    how = f"<br><small>{prose(r.selection_method)}</small>" if r.selection_method else ""
    return f"{r.n_within_noise} of {r.n_recipes} recipes within noise of the best<br><small>{names}</small>{how}"


def best_section(best: pd.DataFrame) -> str:
    parts = ["<h2>Best recipe at each N</h2>", BEST_HOW]
    if best.empty:
        return "\n".join(parts + ["<p>No finished runs yet.</p>"])
    for (task, arch), g in best.groupby(["task", "arch"], dropna=False, sort=False):
        operating = g["sensitivity"].notna().any()   # binary tasks: what the yes / no does at the val threshold
        rows = [[fmt_n(r.n_train, r.N, r.n_patients), esc(r.shown), fmt_auroc(r.val_auroc), fmt_auroc(r.auroc), fmt_ci(r.ci_low, r.ci_high)]
                + ([fmt_auroc(r.sensitivity), fmt_auroc(r.specificity), fmt_auroc(r.accuracy)] if operating else [])
                + [str(int(r.n_seeds)), _noise_cell(r), esc(r.runner_up_shown) if r.runner_up else "—",
                   fmt_auroc(r.runner_up_auroc), _difference_cell(r.test_difference), str(int(r.n_recipes)),
                   f"<small>{esc(r.pick_rule)}</small>"]
                for r in g.itertuples()]
        headers = (["N", "best recipe (on validation)", "val AUROC", "test AUROC", "95% CI"]
                   + (["sensitivity", "specificity", "accuracy"] if operating else [])
                   + ["seeds", "within noise of the best (validation)", "runner-up", "its test AUROC",
                      "pick − runner-up (test, paired)", "recipes compared", "why this one"])
        numeric = {i for i, h in enumerate(headers) if h not in ("N", "best recipe (on validation)", "why this one",
                                                                  "95% CI", "runner-up",
                                                                  "within noise of the best (validation)",
                                                                  "pick − runner-up (test, paired)")}
        parts.append(f"<h3>{panel_title(task, arch)}</h3>" + table(headers, rows, numeric=numeric))
    return "\n".join(parts)


def gains_section(gain: pd.DataFrame, has_same_site: bool) -> str:
    title = "Gain of same-site transfer" if has_same_site else "Gain of transfer from each pretraining source"
    parts = [f"<h2>{title}</h2>",
             "<p><b>How the gain is defined.</b> At each N, every initialisation is represented by its own best "
             "recipe (the strategy / LR policy / dropout with the highest mean validation AUROC over seeds); the gain is "
             "the same-site AUROC minus the other initialisation's AUROC, in AUROC points (the difference on the "
             "0–1 AUROC scale: 0.80 → 0.85 is +0.050) and in percent of the other initialisation's AUROC. "
             "Every initialisation gets the "
             "same benefit of choosing its best recipe, so the comparison is even-handed; the choice is made on "
             "the validation split and the AUROCs are on the test split. The 95% CI of the gain is paired: "
             "the seeds both recipes finished, each drawn with the same test-patient resamples on both sides "
             "(a two-level bootstrap); where runs have no bootstrap draws, a Welch t-interval over seeds. The "
             "gain is the mean over those shared seeds, so it can differ slightly from the difference of the "
             "two AUROC columns (all seeds) when a seed is missing on one side. If the CI includes 0 the data "
             "do not show a difference.</p>"]
    if not has_same_site:
        parts.append('<p class="note">No source is marked same-site, so each pretraining source is compared '
                     "with scratch and ImageNet on its own. Add <code>site: same</code> or <code>site: other</code> "
                     "to each source in study.yaml to compare same-site with other-site transfer.</p>")
    if gain.empty:
        return "\n".join(parts + ["<p>No pair of initialisations finished at the same N yet.</p>"])
    for (task, arch), g in gain.groupby(["task", "arch"], dropna=False, sort=False):
        rows = [[fmt_n(r.n_train, r.N), f"{esc(r.init)}<br><small>{esc(r.recipe)}</small>", fmt_auroc(r.auroc),
                 f"{esc(r.versus)}<br><small>{esc(r.versus_recipe)}</small>", fmt_auroc(r.versus_auroc),
                 fmt_signed(r.gain), fmt_ci(r.gain_ci_low, r.gain_ci_high, missing="—"),
                 fmt_signed(r.gain_percent, 1, " %")] for r in g.itertuples()]
        parts.append(f"<h3>{panel_title(task, arch)}</h3>" + table(
            ["N", "transfer from", "AUROC", "compared with", "AUROC", "gain (AUROC points)", "95% CI of gain",
             "gain (%)"], rows, numeric={2, 4, 5, 7}))
    return "\n".join(parts)


def per_class_section(blocks: list[dict]) -> str:
    if not blocks:
        return ""
    parts = ["<h2>Per-finding AUROC at the largest N</h2>",
             "<p>Multi-label tasks: test AUROC of each finding, mean over seeds, for the best recipe of each "
             "initialisation at the largest training-set size. “—” = undefined in every seed (no positive or no "
             "negative case of that finding in the test split); a count in brackets = seeds where it was defined, "
             "when fewer than all.</p>"]
    for b in blocks:
        inits = list(b["table"].columns)
        headers = ["finding"] + [f"{esc(i)}<br><small>{esc(b['recipes'][i])}</small>" for i in inits]
        rows = []
        for label, vals in b["table"].iterrows():
            cells = [esc(label)]
            for i in inits:
                n = b["counts"].loc[label, i]
                full = b["counts"][i].max()
                cell = fmt_auroc(vals[i])
                if cell != "—" and not pd.isna(n) and n < full:
                    cell += f" ({int(n)})"
                cells.append(cell)
            rows.append(cells)
        parts.append(f"<h3>{panel_title(b['task'], b['arch'])}, N = {fmt_n(b['n_train'], b['N'])}</h3>"
                     + table(headers, rows, numeric=set(range(1, len(inits) + 1))))
    return "\n".join(parts)


def failures_section(status_table: pd.DataFrame, fails: pd.DataFrame) -> str:
    parts = ["<h2>Failed and skipped runs</h2>"]
    rows = [[esc(r.role), esc(r.status), str(int(r.runs)), format_duration(r.seconds)] for r in status_table.itertuples()]
    parts.append(table(["role", "status", "runs", "compute time"], rows, numeric={2, 3}))
    if fails.empty:
        parts.append("<p>Every run finished.</p>")
    else:
        rows = [[esc(r.status), esc(r.role), esc(r.reason), str(int(r.runs)), esc(r.recipes), esc(r.n_train)]
                for r in fails.itertuples()]
        parts.append(table(["status", "role", "reason", "runs", "recipes", "N"], rows, numeric={3}))
    return "\n".join(parts)


DEFINITIONS = """<footer><h2>Definitions</h2><dl>
<dt>AUROC</dt><dd>Area under the ROC curve on the held-out test split: the probability that a randomly chosen
positive image scores higher than a randomly chosen negative one (0.5 = chance, 1 = perfect). <i>Macro</i> AUROC is
the mean over findings (multi-label) or classes (one-vs-rest), skipping any finding with no positive or no negative
test case.</dd>
<dt>N</dt><dd>The number of training images the model actually saw (median over seeds): a subset of the
training split, nested in N for a seed. Where the data has patient IDs it is drawn from as many distinct patients
as possible (<code>data.subset_by: patients</code>), and the patients it came from are given beside N where fewer
(“pts” on the plots' N axis, <code>n_patients</code> in summary.csv and answer.json); without IDs each image is its
own patient. The validation and test splits stay the same at every N. “all (n)” = the whole training split.</dd>
<dt>Seeds</dt><dd>Repeats of a recipe with a different random training subset and initialisation of the new
layers.</dd>
<dt>95% CI</dt><dd>A two-level bootstrap: seeds are resampled, and every run of a draw is scored on the
same resample of test patients, so the interval holds both seed-to-seed variation and the uncertainty of a
test set of this size (with few seeds it is widened by Student's t). One seed cannot measure seed variation:
such a cell borrows the seed variance of the nearest N of the same recipe with 2 or more seeds (else of the
other recipes at its N, pooled), as the result says; with nothing to borrow it is that run's test-set interval,
labelled “test set only; seed variation not covered”. Where runs have no bootstrap draws: mean ± t<sub>0.975, n−1</sub> × SD / √n over the n seeds (seed
variation only; none with one seed). Cut to the 0–1 range of AUROC.</dd>
<dt>Recipe</dt><dd>Initialisation (scratch, ImageNet, or a source pretrained by this study) / fine-tuning strategy
(frozen = head only, full, gradual unfreezing) / learning-rate policy [/ dropout].</dd>
<dt>Same-site / other-site</dt><dd>As declared per source in study.yaml (<code>site: same</code> or
<code>site: other</code>).</dd>
</dl><p><small>Only aggregate numbers appear in this report; no image or patient identifiers.</small></p></footer>"""


def render(sections: list[str], title: str) -> str:
    body = "\n".join(s for s in sections if s)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n{DEFINITIONS}\n</body></html>\n")

"""Learning curves: test macro AUROC vs N, one panel per (task, arch), one line per recipe.

Colour says the init (where the weights came from), line style the fine-tuning
strategy, marker the LR policy, hollow markers a larger dropout: a reader can tell
same-site from other-site, scratch and ImageNet at a glance. The band is the 95%
t-interval over seeds; a point from one seed has no band.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the OO API renders with Agg and leaves pyplot's global state alone
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, NullLocator

from .tables import RADIOMICS, RADIOMICS_LABEL, SITE_ORDER, init_label, init_site, marked_recipe, panel_rows, panels

SITE_COLOURS = {
    "scratch": ["#505050"], "imagenet": ["#1f77b4"], "xrv": ["#6a3d9a", "#cab2d6"],
    "same": ["#d62728", "#ff7f0e", "#e377c2"], "other": ["#2ca02c", "#17becf", "#8c564b"],
    RADIOMICS: ["#9a9a1a"],
}
EXTRA_COLOURS = ["#9467bd", "#bcbd22", "#7f7f7f", "#aec7e8"]
STRATEGY_STYLES = {"full": "-", "gradual": "--", "frozen": ":"}
RADIOMICS_STYLE = (0, (5, 1.5, 1, 1.5, 1, 1.5))
POLICY_MARKERS = {"one_cycle": "o", "constant": "s", "cosine": "^", "step": "D", "cyclic": "v"}
EXTRA_MARKERS = ["P", "h", "<", ">"]
MAX_RECIPE_LEGEND = 12


def _palette(summary: pd.DataFrame, sites: dict[str, str]) -> dict[str, str]:
    """init label -> colour, stable over the whole figure."""
    used: dict[str, int] = {}
    colours, extra = {}, iter(EXTRA_COLOURS * 4)
    inits = summary.drop_duplicates(["method", "init"])
    pairs = list(zip(inits["init"], inits["method"], strict=True))
    found = sorted((SITE_ORDER.index(init_site(i, m, sites)), init_site(i, m, sites), init_label(i, m, sites))
                   for i, m in pairs)
    for _, site, label in found:
        if label in colours:
            continue
        choices = SITE_COLOURS.get(site, [])
        i = used.get(site, 0)
        colours[label] = choices[i] if i < len(choices) else next(extra)
        used[site] = i + 1
    return colours


def _style_maps(summary: pd.DataFrame) -> tuple[dict, dict, list]:
    strategies = sorted(summary["strategy"].dropna().unique())
    policies = sorted(summary["lr_policy"].dropna().unique())
    extra_styles = iter(["-.", (0, (1, 3)), (0, (8, 2))] * 4)
    extra_markers = iter(EXTRA_MARKERS * 4)
    styles = {s: STRATEGY_STYLES.get(s) or next(extra_styles) for s in strategies}
    markers = {p: POLICY_MARKERS.get(p) or next(extra_markers) for p in policies}
    dropouts = sorted(float(d) for d in summary["dropout"].dropna().unique())
    return styles, markers, dropouts


def _line_label(row, n_radiomics: int) -> str:
    if row["method"] == RADIOMICS and n_radiomics > 1:
        return f"{RADIOMICS_LABEL} ({row['recipe']})"
    return marked_recipe(row)


def _legend_label(row, label: str, sites: dict[str, str]) -> str:
    """The line's label plus the site of a pretraining source, which the recipe name does not say."""
    site = init_site(row["init"], row["method"], sites)
    suffix = {"same": "same-site", "other": "other-site", "unlabelled": "site not given"}.get(site)
    return f"{label}  [{suffix}]" if suffix else label


def _format_n(n: float) -> str:
    return f"{int(round(n)):,}"


def learning_curve_figure(summary: pd.DataFrame, sites: dict[str, str]) -> Figure:
    """The figure (not saved); artists carry gid 'line:<label>' / 'band:<label>' per panel."""
    summary = summary[summary["n_seeds"] > 0]
    keys = panels(summary)
    if not keys:
        fig = Figure(figsize=(6.4, 2.5))
        ax = fig.subplots()
        ax.text(0.5, 0.5, "No finished runs yet", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        return fig
    ncols = 1 if len(keys) == 1 else 2
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(6.6 * ncols, 4.6 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colours = _palette(summary, sites)
    styles, markers, dropouts = _style_maps(summary)
    legend: dict[tuple, Line2D] = {}
    dense = summary.groupby(["method", "recipe"]).ngroups > MAX_RECIPE_LEGEND
    band_alpha, marker_size = (0.05, 4) if dense else (0.13, 6)
    for ax, (task, arch) in zip(axes.flat, keys, strict=False):
        rows = panel_rows(summary, task, arch)
        n_radiomics = rows.loc[rows["method"] == RADIOMICS, "recipe"].nunique()
        for _, g in rows.groupby(["method", "recipe"], sort=True):
            g = g.sort_values("N")
            first = g.iloc[0]
            label = _line_label(first, n_radiomics)
            colour = colours[init_label(first["init"], first["method"], sites)]
            if first["method"] == RADIOMICS:
                style, marker, hollow = RADIOMICS_STYLE, "X", False
            else:
                style = styles.get(first["strategy"], "-")
                marker = markers.get(first["lr_policy"], "o")
                hollow = bool(dropouts) and not pd.isna(first["dropout"]) and float(first["dropout"]) > dropouts[0]
            x, y = g["N"].to_numpy(float), g["test_auroc_mean"].to_numpy(float)
            lo, hi = g["test_auroc_ci_low"].to_numpy(float), g["test_auroc_ci_high"].to_numpy(float)
            kw = dict(linestyle=style, marker=marker, color=colour, linewidth=1.8, markersize=marker_size,
                      markerfacecolor="white" if hollow else colour, markeredgewidth=1.4)
            ax.plot(x, y, label=label, gid=f"line:{label}", **kw)
            has_ci = np.isfinite(lo) & np.isfinite(hi)
            if has_ci.any():
                ax.fill_between(x, lo, hi, where=has_ci, color=colour, alpha=band_alpha, linewidth=0,
                                gid=f"band:{label}")
            rank = (SITE_ORDER.index(init_site(first["init"], first["method"], sites)), label)
            legend.setdefault(rank, Line2D([], [], label=_legend_label(first, label, sites), **kw))
        ns = sorted(rows["N"].dropna().unique())
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(ns, [_format_n(n) for n in ns], rotation=45 if len(ns) > 6 else 0)
        ax.set_title(f"{task} — {arch}" if arch else str(task), fontsize=12)
        ax.set_xlabel("N training images (log scale)")
        ax.set_ylabel("test macro AUROC")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_axis_off()
    handles = ([legend[k] for k in sorted(legend)] if not dense
               else _factorised_legend(summary, sites, colours, styles, markers, dropouts))
    fig.legend(handles=handles, labels=[h.get_label() for h in handles], loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=10,
               title=None if dense else "recipe: init / strategy / LR policy")
    fig.suptitle("Test macro AUROC vs training-set size (mean over seeds, band = 95% CI)", fontsize=13)
    fig.tight_layout()
    return fig


def _factorised_legend(summary, sites, colours, styles, markers, dropouts) -> list[Line2D]:
    """Too many recipes for one entry each: explain colour, style, marker and fill separately."""
    def entry(label, **kw):
        kw.setdefault("color", "black")
        return Line2D([], [], label=label, **kw)

    out = [entry("Colour = init", linestyle="none")]
    out += [entry(f"  {label}", color=c, linewidth=6) for label, c in colours.items() if label != RADIOMICS_LABEL]
    if styles:
        out.append(entry("Line = strategy", linestyle="none"))
        out += [entry(f"  {s}", linestyle=st, linewidth=1.8) for s, st in styles.items()]
    if markers:
        out.append(entry("Marker = LR policy", linestyle="none"))
        out += [entry(f"  {p}", linestyle="none", marker=m, markersize=7) for p, m in markers.items()]
    if len(dropouts) > 1:
        out.append(entry("Fill = dropout", linestyle="none"))
        out.append(entry(f"  {dropouts[0]:g} (filled)", linestyle="none", marker="o", markersize=7))
        others = ", ".join(f"{d:g}" for d in dropouts[1:])
        out.append(entry(f"  {others} (hollow)", linestyle="none", marker="o", markersize=7,
                         markerfacecolor="white"))
    if (summary["method"] == RADIOMICS).any():
        out.append(entry(RADIOMICS_LABEL, color=colours.get(RADIOMICS_LABEL, "black"), linestyle=RADIOMICS_STYLE,
                         marker="X"))
    return out


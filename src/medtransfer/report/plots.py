"""Learning-curve figures: which initialisation wins at each N, and every recipe behind that choice.

``learning_curve_figure`` draws the decision the report's tables make: one line per init, at each N
that init's best recipe chosen on mean VALIDATION AUROC (``tables.best_per_init``), plotted with its
TEST AUROC. Choosing on test and plotting on test would flatter every line; choosing per init gives
each init the same benefit of the choice, so the gaps between lines are fair. ``recipes_figure`` shows
every recipe as small multiples (one panel per strategy x LR policy) so a reader can see how much that
choice mattered and whether one recipe carried an init.

Colours are fixed per init by ``init_colours`` (same-site sources warm, other-site green, ImageNet blue,
scratch gold, radiomics black and dashed) so an init reads the same in both figures. Both functions
are pure: they return a Figure (Agg, object API, pyplot's global state untouched) and write nothing.
Lines carry gid 'line:<init label>' (recipes: 'line:<init label>|<variant>'), bands 'band:...'.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure, FigureBase  # the OO API renders with Agg and leaves pyplot alone
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, NullLocator

from ..errors import DataError
from ..kinds import Site, TaskKind
from .tables import RADIOMICS, SITE_ORDER, best_per_init, init_display_label, init_site, panel_rows, panels

WIDTH_IN = 11.0
MAX_COLUMNS = 4
CAPTION = ("each line: the recipe the selection rule names for the init at each N (on validation, or cross-validated "
           "at small N); band: 95% CI (seeds and test set)")
RECIPES_CAPTION = ("every recipe: one panel per strategy · LR policy, colour = init; band: 95% CI (y zoomed to the "
                   "lines: a wider band is cut at the panel edge); radiomics dashed")
REQUIRED = ["task", "task_kind", "arch", "method", "recipe", "init", "strategy", "lr_policy", "n_train", "N",
            "n_seeds", "test_auroc_mean", "test_auroc_ci_low", "test_auroc_ci_high", "val_auroc_mean"]

# site kind -> (fixed colours in order, colormap sampled when a family has more members than fixed colours)
FAMILIES: dict[str, tuple[list[str], str | None]] = {
    "scratch": (["#b8860b"], None),
    "imagenet": (["#1f77b4"], None),
    "xrv": (["#6a3d9a", "#9467bd", "#c5b0d5"], "Purples"),
    "pretrained": (["#ff7f0e"], None),   # a published backbone's own weights (its arch is the panel's)
    Site.SAME: (["#d62728", "#e7298a", "#a50f15", "#fc8d59"], "Reds"),
    Site.OTHER: (["#2ca02c", "#17becf", "#006d2c", "#74c476"], "Greens"),
    RADIOMICS: (["#000000"], None),
}
EXTRA_COLOURS = ["#7f7f7f", "#bcbd22", "#8c564b", "#aec7e8", "#ff9896", "#9edae5"]
RADIOMICS_STYLE = dict(linestyle="--", marker="X", linewidth=1.6, markersize=6.5)
INIT_STYLE = dict(linestyle="-", marker="o", linewidth=2.0, markersize=5.5)
VARIANT_STYLES = [("-", "o"), (":", "s"), ("-.", "^"), ((0, (5, 1, 1, 1, 1, 1)), "D"), ((0, (1, 1)), "v"),
                  ((0, (8, 2)), "P")]


class Curve(NamedTuple):
    """One drawn line: an init (or the radiomics baseline) across N, with the recipe behind each point."""
    label: str              # the init as the report names it ('scratch', 'chest (same-site)', 'radiomics + LR')
    site: str               # one of tables.SITE_ORDER: picks the colour family and the legend order
    n: np.ndarray           # images trained on (x)
    auroc: np.ndarray       # mean test AUROC over seeds (y)
    low: np.ndarray         # 95% CI, NaN where there is none
    high: np.ndarray
    recipes: tuple[str, ...]   # the recipe drawn at each N
    variant: str = ""       # recipes figure: the recipe axes beyond init / strategy / LR policy ('dropout 0.5')


def _check(summary: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in summary.columns]
    if missing:
        raise DataError(f"summary: missing columns {missing} (expected report.tables.study_table's output)")


def _drawable(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows with a point to draw: some seed finished and N is a positive number (a log axis needs it)."""
    n = pd.to_numeric(summary["N"], errors="coerce")
    auroc = pd.to_numeric(summary["test_auroc_mean"], errors="coerce")
    return summary[(summary["n_seeds"] > 0) & (n > 0) & np.isfinite(n) & np.isfinite(auroc)]


def init_colours(summary: pd.DataFrame, sites: dict[str, str]) -> dict[str, str]:
    """init label -> colour, the same for the init in every figure of a study.

    scratch, ImageNet and radiomics have one colour each whatever else the study holds; same-site
    sources share a warm family and other-site sources a green one (in name order within a family),
    so a reader sees which side of the site question a line is on before reading the legend.
    """
    found = {}
    for init, method in summary[["init", "method"]].drop_duplicates().itertuples(index=False):
        site = init_site(init, method, sites)
        found.setdefault(init_display_label(init, method, sites), site)
    by_site: dict[str, list[str]] = {}
    for label, site in sorted(found.items(), key=lambda item: (SITE_ORDER.index(item[1]), item[0])):
        by_site.setdefault(site, []).append(label)
    colours, extra = {}, 0
    for site, labels in by_site.items():
        fixed, cmap = FAMILIES.get(site, ([], None))
        if len(labels) <= len(fixed):
            chosen = fixed[:len(labels)]
        elif cmap is not None:
            chosen = [to_hex(c) for c in colormaps[cmap](np.linspace(0.45, 0.95, len(labels)))]
        else:
            chosen = [EXTRA_COLOURS[(extra + i) % len(EXTRA_COLOURS)] for i in range(len(labels))]
            extra += len(labels)
        colours.update(zip(labels, chosen, strict=True))
    return colours


def _order(curve: Curve) -> tuple:
    return SITE_ORDER.index(curve.site), curve.label, curve.variant


def _curve(label: str, site: str, rows: pd.DataFrame, variant: str = "") -> Curve:
    rows = rows.sort_values("N", kind="stable")
    num = {c: pd.to_numeric(rows[c], errors="coerce").to_numpy(float)
           for c in ("N", "test_auroc_mean", "test_auroc_ci_low", "test_auroc_ci_high")}
    return Curve(label, site, num["N"], num["test_auroc_mean"], num["test_auroc_ci_low"], num["test_auroc_ci_high"],
                 tuple(str(r) for r in rows["recipe"]), variant)


def best_init_curves(rows: pd.DataFrame, sites: dict[str, str]) -> list[Curve]:
    """Per init (radiomics counts as one): at each requested N its best recipe by mean validation AUROC.

    The rows of one panel (``tables.panel_rows``); the test split is read only for the y values.
    """
    rows = _drawable(rows)
    chosen: dict[str, list[pd.Series]] = {}
    for _, at_n in rows.groupby("n_train", sort=False):
        for label, row in best_per_init(at_n, sites).items():
            chosen.setdefault(label, []).append(row)
    curves = [_curve(label, init_site(best[0]["init"], best[0]["method"], sites), pd.DataFrame(best))
              for label, best in chosen.items()]
    return sorted(curves, key=_order)


def _variant(recipe: str) -> str:
    """The recipe axes beyond 'init / strategy / LR policy' (dropout, discriminative LR, ...), as named."""
    return " / ".join(str(recipe).split(" / ")[3:])


def recipe_curves(rows: pd.DataFrame, sites: dict[str, str]) -> list[Curve]:
    """One curve per CNN recipe of the rows (one strategy x LR policy panel), ordered by init then variant."""
    rows = _drawable(rows)
    rows = rows[rows["method"] != RADIOMICS]
    curves = [_curve(init_display_label(g["init"].iloc[0], g["method"].iloc[0], sites),
                     init_site(g["init"].iloc[0], g["method"].iloc[0], sites), g, _variant(recipe))
              for recipe, g in rows.groupby("recipe", sort=True)]
    return sorted(curves, key=_order)


def _n_ticks(rows: pd.DataFrame) -> list[tuple[float, float]]:
    """One tick per requested N: (the median images trained on, the median patients they came from; NaN where
    not recorded), dropping one that would touch the last."""
    drawable = _drawable(rows)
    patients = drawable["n_patients"] if "n_patients" in drawable else pd.Series(np.nan, index=drawable.index)
    medians = drawable.assign(_p=pd.to_numeric(patients, errors="coerce")).groupby("n_train")[["N", "_p"]].median()
    ticks: list[tuple[float, float]] = []
    for n, p in sorted(medians.itertuples(index=False)):
        if not ticks or n / ticks[-1][0] >= 1.15:
            ticks.append((float(n), float(p)))
    return ticks


def _fewer_patients(n: float, patients: float) -> bool:
    return bool(np.isfinite(patients)) and round(patients) != round(n)


def _x_label(text: str, ticks: list[tuple[float, float]]) -> str:
    """The N axis title, saying what the second tick line is where a tick has one."""
    return text + ("; pts: the patients they came from" if any(_fewer_patients(n, p) for n, p in ticks) else "")


def _tick_label(n: float, patients: float) -> str:
    """``800`` where the images are as many patients (or none were recorded), else ``800`` over ``412 pts``:
    the patients a subset of follow-up images came from."""
    if not _fewer_patients(n, patients):
        return f"{int(round(n)):,}"
    return f"{int(round(n)):,}\n{int(round(patients)):,} pts"


def _y_limits(values: list[np.ndarray]) -> tuple[float, float]:
    """Zoomed to the data (lows, means, highs) with a small margin, inside [0, 1]."""
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = max(0.08 * (high - low), 0.01)
    return max(0.0, low - pad), min(1.0, high + pad)


def _line_limits(curves: list[Curve]) -> tuple[float, float]:
    """Zoomed to the lines (the means) only, at least 0.1 tall: with a dozen recipes per panel one wide
    band (a recipe that failed on one seed) would otherwise squash every line into a strip."""
    means = np.concatenate([c.auroc[np.isfinite(c.auroc)] for c in curves]) if curves else np.array([])
    if means.size == 0:
        return 0.0, 1.0
    middle = (float(means.min()) + float(means.max())) / 2
    half = max((float(means.max()) - float(means.min())) / 2 * 1.25, 0.05)
    low, high = middle - half, middle + half
    if low < 0.0:
        low, high = 0.0, min(1.0, high - low)
    elif high > 1.0:
        low, high = max(0.0, low - (high - 1.0)), 1.0
    return low, high


def _curve_values(curves: list[Curve]) -> list[np.ndarray]:
    """Means, and interval ends only where the interval has both ends (a band is drawn only there)."""
    out = []
    for c in curves:
        has_ci = np.isfinite(c.low) & np.isfinite(c.high)
        out += [c.auroc, c.low[has_ci], c.high[has_ci]]
    return out


def _y_label(rows: pd.DataFrame) -> str:
    kinds = set(rows["task_kind"].dropna().astype(str))
    return "test AUROC" if kinds == {TaskKind.BINARY} else "test macro AUROC"


def _panel_title(task, arch) -> str:
    return f"{task} — {arch}" if arch else str(task)


def _format_axes(ax: Axes, ticks: list[tuple[float, float]], ylim: tuple[float, float], *,
                 fontsize: float = 9.5) -> None:
    """Log x with the studied N as plain-number ticks (their patients below where fewer) and no minor ticks;
    zoomed y; a light grid."""
    if ticks:
        ax.set_xscale("log")
        ax.set_xlim(ticks[0][0] / 1.35, ticks[-1][0] * 1.35)
        ax.set_xticks([n for n, _ in ticks], [_tick_label(n, p) for n, p in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(*ylim)
    ax.tick_params(labelsize=fontsize)
    ax.grid(True, alpha=0.3)


def _draw(ax: Axes, curve: Curve, colour: str, style: dict, gid: str, band_alpha: float) -> None:
    """The line, and its CI as a band (a bar when the curve has one point: a band needs two)."""
    ax.plot(curve.n, curve.auroc, color=colour, gid=f"line:{gid}", label=gid, **style)
    has_ci = np.isfinite(curve.low) & np.isfinite(curve.high)
    if not has_ci.any():
        return
    if len(curve.n) == 1:
        ax.vlines(curve.n, curve.low, curve.high, color=colour, alpha=max(band_alpha, 0.35), linewidth=6,
                  gid=f"band:{gid}")
    else:
        ax.fill_between(curve.n, curve.low, curve.high, where=has_ci, color=colour, alpha=band_alpha, linewidth=0,
                        gid=f"band:{gid}")


def _radiomics_curve(rows: pd.DataFrame, sites: dict[str, str]) -> Curve | None:
    """The baseline's line: its best recipe by validation AUROC at each N (usually there is one)."""
    found = [c for c in best_init_curves(rows[rows["method"] == RADIOMICS], sites) if c.site == RADIOMICS]
    return found[0] if found else None


def _handle(label: str, colour: str, style: dict) -> Line2D:
    return Line2D([], [], label=label, color=colour, **style)


def _empty_figure() -> Figure:
    fig = Figure(figsize=(6.4, 2.5))
    ax = fig.subplots()
    ax.text(0.5, 0.5, "No finished runs yet", ha="center", va="center", fontsize=14)
    ax.set_axis_off()
    return fig


def _legend(fig: Figure, groups: list[list[Line2D]], ncol: int) -> None:
    """Below the panels, outside them, so it never covers a line; read row by row, each group on new rows.

    matplotlib fills a legend column by column, so the row-major grid is handed over transposed,
    with blank entries ending a group's last row.
    """
    groups = [g for g in groups if g]
    ncol = max(1, min(ncol, max(len(g) for g in groups)))
    grid: list[list[Line2D]] = []
    for group in groups:
        for start in range(0, len(group), ncol):
            row = group[start:start + ncol]
            grid.append(row + [Line2D([], [], linestyle="none", label=" ")] * (ncol - len(row)))
    handles = [grid[r][c] for c in range(ncol) for r in range(len(grid))]
    fig.legend(handles=handles, labels=[h.get_label() for h in handles], loc="outside lower center", ncol=ncol,
               frameon=False, fontsize=10, handlelength=3.0, columnspacing=1.6)


def _titles(fig: Figure, title: str, caption: str) -> None:
    fig.suptitle(f"{title}\n{caption}", fontsize=11.5)


def _prepared(summary: pd.DataFrame, sites: dict[str, str]) -> tuple[pd.DataFrame, list, dict[str, str]]:
    """(drawable rows, (task, arch) panels, colour per init): what both figures start from."""
    _check(summary)
    summary = _drawable(summary)
    keys = panels(summary)
    return summary, keys, (init_colours(summary, sites) if keys else {})


def learning_curve_figure(summary: pd.DataFrame, sites: dict[str, str]) -> Figure:
    """One panel per (task, arch); one line per init at its validation-chosen recipe; radiomics dashed."""
    summary, keys, colours = _prepared(summary, sites)
    if not keys:
        return _empty_figure()
    ncols = 1 if len(keys) == 1 else 2
    nrows = math.ceil(len(keys) / ncols)
    drawn: dict[str, Curve] = {}
    curves_by_panel = []
    for task, arch in keys:
        curves = best_init_curves(panel_rows(summary, task, arch), sites)
        curves_by_panel.append(curves)
        for c in curves:
            drawn.setdefault(c.label, c)
    legend_rows = math.ceil(len(drawn) / 4)
    fig = Figure(figsize=(WIDTH_IN, (4.4 if ncols == 1 else 3.9) * nrows + 0.9 + 0.3 * legend_rows),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (task, arch), curves in zip(axes.flat, keys, curves_by_panel, strict=False):
        rows = panel_rows(summary, task, arch)
        for curve in curves:
            style = RADIOMICS_STYLE if curve.site == RADIOMICS else INIT_STYLE
            _draw(ax, curve, colours[curve.label], style, curve.label, 0.10 if curve.site == RADIOMICS else 0.12)
        ticks = _n_ticks(rows)
        _format_axes(ax, ticks, _y_limits(_curve_values(curves)))
        ax.set_title(_panel_title(task, arch), fontsize=11)
        ax.set_xlabel(_x_label("N training images (log scale)", ticks), fontsize=10)
        ax.set_ylabel(_y_label(rows), fontsize=10)
    for ax in list(axes.flat)[len(keys):]:
        fig.delaxes(ax)
    handles = [_handle(c.label, colours[c.label], RADIOMICS_STYLE if c.site == RADIOMICS else INIT_STYLE)
               for c in sorted(drawn.values(), key=_order)]
    _legend(fig, [handles], 4)
    _titles(fig, "Test AUROC vs number of training images", CAPTION)
    return fig


def _combos(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(strategy, LR policy) pairs present among the CNN rows, in name order."""
    cnn = rows[rows["method"] != RADIOMICS]
    pairs = {(str(s), str(p)) for s, p in zip(cnn["strategy"], cnn["lr_policy"], strict=True)}
    return sorted(pairs)


def _in_combo(rows: pd.DataFrame, strategy: str, policy: str) -> pd.DataFrame:
    return rows[(rows["method"] != RADIOMICS) & (rows["strategy"].astype(str) == strategy)
                & (rows["lr_policy"].astype(str) == policy)]


def recipes_figure(summary: pd.DataFrame, sites: dict[str, str]) -> Figure:
    """Every recipe: per (task, arch) one panel per strategy x LR policy, one line per init (and variant).

    Variants (dropout, discriminative LR, any other recipe axis after the policy) are told apart by line
    style and marker, explained once in the legend; y is shared across a (task, arch) so panels compare.
    """
    summary, keys, colours = _prepared(summary, sites)
    if not keys:
        return _empty_figure()
    cnn = summary[summary["method"] != RADIOMICS]
    variants = sorted({_variant(r) for r in cnn["recipe"]})
    variant_style = {v: VARIANT_STYLES[i % len(VARIANT_STYLES)] for i, v in enumerate(variants)}
    blocks = [(task, arch, panel_rows(summary, task, arch)) for task, arch in keys]
    combos = [_combos(rows) or [None] for _, _, rows in blocks]
    widest = max(len(c) for c in combos)
    ncols = math.ceil(widest / math.ceil(widest / MAX_COLUMNS))   # balanced rows: 6 panels as 3 + 3, not 4 + 2
    block_rows = [math.ceil(len(c) / ncols) for c in combos]
    panel_h = {1: 4.2, 2: 3.4, 3: 2.8}.get(ncols, 2.6)
    inits = {c.label: c for _, _, rows in blocks for c in best_init_curves(rows, sites)}
    legend_rows = math.ceil(len(inits) / 4) + (math.ceil(len(variants) / 4) if len(variants) > 1 else 0)
    fig = Figure(figsize=(WIDTH_IN, panel_h * sum(block_rows) + 0.45 * len(blocks) + 0.9 + 0.3 * legend_rows),
                 layout="constrained")
    subfigs = fig.subfigures(len(blocks), 1, height_ratios=[panel_h * r + 0.45 for r in block_rows], squeeze=False)
    shared = _BlockStyle(ncols, colours, variant_style, sites)
    for sub, (task, arch, rows), combo_list, nrows in zip(subfigs.flat, blocks, combos, block_rows, strict=True):
        _recipe_block(sub, task, arch, rows, combo_list, nrows, shared)
    handles = [_handle(c.label, colours[c.label], RADIOMICS_STYLE if c.site == RADIOMICS else INIT_STYLE)
               for c in sorted(inits.values(), key=_order)]
    variant_handles = []
    if len(variants) > 1:
        variant_handles = [_handle(v or "(base)", "#444444", dict(linestyle=ls, marker=m, linewidth=1.6, markersize=5.5))
                    for v, (ls, m) in variant_style.items()]
    _legend(fig, [handles, variant_handles], 4)
    _titles(fig, "All recipes: test AUROC vs number of training images", RECIPES_CAPTION)
    return fig


class _BlockStyle(NamedTuple):
    """What every (task, arch) block of the recipes figure shares: panel columns, init colours, variant styles."""
    ncols: int
    colours: dict[str, str]        # init label -> colour (``init_colours``)
    variant_style: dict            # recipe variant -> (linestyle, marker)
    sites: dict[str, str]


def _recipe_block(sub: FigureBase, task, arch, rows: pd.DataFrame, combo_list: list, nrows: int,
                  shared: _BlockStyle) -> None:
    """One (task, arch): its panels on a shared y, the radiomics reference in each."""
    ncols, colours, variant_style, sites = shared
    axes = sub.subplots(nrows, ncols, squeeze=False)
    radiomics = _radiomics_curve(rows, sites)
    per_panel = [recipe_curves(_in_combo(rows, *combo), sites) if combo else [] for combo in combo_list]
    ylim = _line_limits([c for curves in per_panel for c in curves] + ([radiomics] if radiomics else []))
    ticks, ylabel = _n_ticks(rows), _y_label(rows)
    for i, (ax, combo, curves) in enumerate(zip(axes.flat, combo_list, per_panel, strict=False)):
        for curve in curves:
            ls, marker = variant_style.get(curve.variant, VARIANT_STYLES[0])
            style = dict(linestyle=ls, marker=marker, linewidth=1.6, markersize=4.5)
            gid = f"{curve.label}|{curve.variant}" if curve.variant else curve.label
            _draw(ax, curve, colours[curve.label], style, gid, 0.07)
        if radiomics is not None:
            _draw(ax, radiomics, colours[radiomics.label], {**RADIOMICS_STYLE, "markersize": 5}, radiomics.label,
                  0.07)
        _format_axes(ax, ticks, ylim, fontsize=8.5)
        ax.set_title(" · ".join(combo) if combo else "radiomics only", fontsize=10)
        if i % ncols == 0:
            ax.set_ylabel(ylabel, fontsize=9.5)
        else:
            ax.tick_params(labelleft=False)
        if i >= len(combo_list) - ncols:
            ax.set_xlabel(_x_label("N training images", ticks), fontsize=9.5)
    for ax in list(axes.flat)[len(combo_list):]:
        sub.delaxes(ax)
    sub.suptitle(_panel_title(task, arch), fontsize=11, fontweight="bold")

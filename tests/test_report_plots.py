"""The learning-curve figures on synthetic study summaries: what each line is, and how it is drawn."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import FillBetweenPolyCollection, LineCollection, PolyCollection

from medtransfer.errors import DataError
from medtransfer.report.plots import (best_init_curves, init_colours, learning_curve_figure, recipe_curves,
                                      recipes_figure)
from medtransfer.report.tables import SUMMARY_COLUMNS

BINARY, MULTILABEL = "pneumoniamnist:binary", "nih14-mini:multilabel"
SITES = {"chest": "same", "pedchest": "same", "knee": "other"}
NS = {"50": 50.0, "200": 200.0, "1000": 1000.0}


def row(task=BINARY, arch="resnet18", init="scratch", strategy="full", policy="one_cycle", variant="",
        n_train="50", test=0.8, val=None, half=0.02, n_seeds=3, method="cnn", recipe=None):
    """One summary row as report.tables.study_table makes it."""
    if recipe is None:
        parts = [init.removeprefix("source:"), strategy, policy] + ([variant] if variant else [])
        recipe = " / ".join(parts)
    return {c: np.nan for c in SUMMARY_COLUMNS} | dict(
        task=task, task_kind=task.split(":")[1], arch=arch, method=method, recipe=recipe, init=init,
        strategy=strategy, lr_policy=policy, dropout=0.5 if "0.5" in variant else 0.0, n_train=n_train,
        N=NS.get(n_train, float(n_train) if n_train.isdigit() else 4708.0), n_seeds=n_seeds, test_auroc_mean=test,
        test_auroc_ci_low=test - half, test_auroc_ci_high=min(1.0, test + half),
        val_auroc_mean=test if val is None else val)


def radiomics(task=BINARY, tests=(0.70, 0.74, 0.78), **kw):
    return [row(task=task, arch=None, init=None, strategy=None, policy=None, method="radiomics",
                recipe="radiomics / logistic", n_train=n, test=t, **kw) for n, t in zip(NS, tests, strict=False)]


def grid(task=BINARY, inits=("scratch", "imagenet", "source:chest", "source:knee"), strategies=("full",),
         policies=("one_cycle",), variants=("",), arch="resnet18", base=0.80):
    """A full grid with a smooth, distinct test AUROC per recipe and a validation AUROC that agrees."""
    rows = []
    for k, (init, s, p, v) in enumerate(itertools.product(inits, strategies, policies, variants)):
        for j, n in enumerate(NS):
            rows.append(row(task=task, arch=arch, init=init, strategy=s, policy=p, variant=v, n_train=n,
                            test=base + 0.004 * k + 0.03 * j))
    return rows


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def lines(ax) -> dict[str, object]:
    return {line.get_gid()[len("line:"):]: line for line in ax.get_lines() if str(line.get_gid()).startswith("line:")}


def bands(ax) -> set[str]:
    return {str(a.get_gid())[len("band:"):] for a in ax.get_children()
            if isinstance(a, (PolyCollection, FillBetweenPolyCollection, LineCollection))
            and str(a.get_gid()).startswith("band:")}


def val_versus_test_case() -> pd.DataFrame:
    """Per init two recipes; at every N the one with the higher VALIDATION AUROC has the LOWER test AUROC."""
    rows = []
    for init in ("scratch", "source:chest"):
        for j, n in enumerate(NS):
            rows.append(row(init=init, strategy="full", n_train=n, test=0.80 + 0.02 * j, val=0.90))
            rows.append(row(init=init, strategy="gradual", n_train=n, test=0.88 + 0.02 * j, val=0.85))
    return frame(rows + radiomics())


def test_each_init_line_is_its_validation_best_recipe_not_the_test_best():
    summary = val_versus_test_case()
    (ax,) = learning_curve_figure(summary, SITES).axes
    drawn = lines(ax)
    for label in ("scratch", "chest (same-site)"):
        np.testing.assert_allclose(drawn[label].get_xdata(), [50, 200, 1000])
        np.testing.assert_allclose(drawn[label].get_ydata(), [0.80, 0.82, 0.84])   # 'full', never 'gradual'
    (scratch,) = [c for c in best_init_curves(summary, SITES) if c.label == "scratch"]
    assert scratch.recipes == ("scratch / full / one_cycle",) * 3


def test_the_chosen_recipe_may_change_with_n():
    rows = [row(init="imagenet", strategy="full", n_train="50", test=0.70, val=0.80),
            row(init="imagenet", strategy="frozen", n_train="50", test=0.75, val=0.70),
            row(init="imagenet", strategy="full", n_train="200", test=0.80, val=0.70),
            row(init="imagenet", strategy="frozen", n_train="200", test=0.78, val=0.80)]
    (curve,) = best_init_curves(frame(rows), SITES)
    assert curve.recipes == ("imagenet / full / one_cycle", "imagenet / frozen / one_cycle")
    np.testing.assert_allclose(curve.auroc, [0.70, 0.78])


def test_one_line_per_init_and_one_dashed_radiomics_line_with_bands():
    summary = frame(grid(strategies=("full", "gradual"), variants=("dropout 0", "dropout 0.5")) + radiomics())
    fig = learning_curve_figure(summary, SITES)
    (ax,) = fig.axes
    drawn = lines(ax)
    assert sorted(drawn) == sorted(["scratch", "ImageNet", "chest (same-site)", "knee (other-site)", "radiomics + LR"])
    assert drawn["radiomics + LR"].get_linestyle() == "--"
    assert {drawn[k].get_linestyle() for k in drawn if k != "radiomics + LR"} == {"-"}
    assert bands(ax) == set(drawn)
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts() if t.get_text().strip()]
    assert sorted(legend) == sorted(drawn)   # inits named as the report does, no recipe text
    caption = fig.get_suptitle()
    assert "the recipe the selection rule names for the init at each N" in caption and "95% CI" in caption


def test_y_is_zoomed_to_the_data_and_labelled_by_task_kind():
    rows = grid(base=0.80)            # 0.80 .. 0.872, CIs 0.78 .. 0.892
    rows += grid(task=MULTILABEL, base=0.40)
    rows += [row(init="scratch", n_train="1000", test=0.95, half=0.0, strategy="frozen")]
    summary = frame(rows)
    axes = {ax.get_title(): ax for ax in learning_curve_figure(summary, SITES).axes}
    binary, multilabel = axes[f"{BINARY} — resnet18"], axes[f"{MULTILABEL} — resnet18"]
    low, high = binary.get_ylim()
    assert 0.74 <= low < 0.78 and 0.95 < high <= 1.0
    assert multilabel.get_ylim()[1] < 0.6                      # each task its own zoom
    assert binary.get_ylabel() == "test AUROC" and multilabel.get_ylabel() == "test macro AUROC"


def test_x_is_log_with_the_studied_n_as_plain_ticks():
    rows = grid() + [row(init="scratch", n_train="all", test=0.9)]
    (ax,) = learning_curve_figure(frame(rows), SITES).axes
    assert ax.get_xscale() == "log"
    np.testing.assert_allclose(ax.get_xticks(), [50, 200, 1000, 4708])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50", "200", "1,000", "4,708"]
    assert len(ax.xaxis.get_minorticklocs()) == 0


def test_n_ticks_give_the_patients_where_fewer_than_the_images():
    """Issue 23: data with patient ids shows both counts; data without (images = patients) just N."""
    rows = grid(task=MULTILABEL)
    for r in rows:
        r["n_patients"] = {"50": 50.0, "200": 180.0, "1000": 700.0}[r["n_train"]]
    (ax,) = learning_curve_figure(frame(rows), SITES).axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50", "200\n180 pts", "1,000\n700 pts"]
    assert "pts: the patients they came from" in ax.get_xlabel()
    (plain,) = learning_curve_figure(frame(grid()), SITES).axes
    assert "pts" not in plain.get_xlabel()


def test_colours_are_fixed_per_init_and_shared_by_both_figures():
    summary = frame(grid(inits=("scratch", "imagenet", "source:chest", "source:pedchest", "source:knee"),
                         strategies=("full", "frozen")) + radiomics())
    colours = init_colours(summary, SITES)
    curve_lines = lines(learning_curve_figure(summary, SITES).axes[0])
    recipe_fig = recipes_figure(summary, SITES)
    for label, line in curve_lines.items():
        assert line.get_color() == colours[label]
        for ax in recipe_fig.axes:
            assert {ln.get_color() for key, ln in lines(ax).items() if key.split("|")[0] == label} == {colours[label]}
    assert len(set(colours.values())) == len(colours)
    # scratch, ImageNet and radiomics keep their colour whatever else the study holds
    fewer = init_colours(frame(grid(inits=("scratch", "imagenet")) + radiomics()), {})
    for label in ("scratch", "ImageNet", "radiomics + LR"):
        assert fewer[label] == colours[label]
    assert colours["radiomics + LR"] in ("#000000", "black")


def test_same_site_and_other_site_sources_get_separate_hue_families():
    from matplotlib.colors import rgb_to_hsv, to_rgb
    inits = ["source:s1", "source:s2", "source:s3", "source:s4", "source:s5", "source:o1", "source:o2"]
    sites = {f"s{i}": "same" for i in range(1, 6)} | {"o1": "other", "o2": "other"}
    colours = init_colours(frame(grid(inits=inits)), sites)
    same = [rgb_to_hsv(to_rgb(colours[f"s{i} (same-site)"]))[0] for i in range(1, 6)]
    other = [rgb_to_hsv(to_rgb(colours[f"o{i} (other-site)"]))[0] for i in (1, 2)]
    warm = [min(h, 1 - h) for h in same]           # distance from red on the hue circle
    assert max(warm) < 0.15 and all(0.2 < h < 0.55 for h in other)
    assert len(set(colours.values())) == len(colours)


def test_recipes_figure_has_one_panel_per_strategy_and_policy_with_shared_y():
    summary = frame(grid(strategies=("frozen", "full", "gradual"), policies=("constant", "one_cycle"),
                         variants=("dropout 0", "dropout 0.5")) + radiomics())
    fig = recipes_figure(summary, SITES)
    titles = [ax.get_title() for ax in fig.axes]
    assert sorted(titles) == sorted(f"{s} · {p}" for s in ("frozen", "full", "gradual")
                                    for p in ("constant", "one_cycle"))
    assert len({ax.get_ylim() for ax in fig.axes}) == 1
    assert len({round(ax.get_position().x0, 3) for ax in fig.axes}) <= 4
    full = next(ax for ax in fig.axes if ax.get_title() == "full · one_cycle")
    drawn = lines(full)
    assert drawn["radiomics + LR"].get_linestyle() == "--"
    # one line per init and variant; the variants told apart by line style and marker
    assert len(drawn) == 4 * 2 + 1
    a, b = drawn["chest (same-site)|dropout 0"], drawn["chest (same-site)|dropout 0.5"]
    assert (a.get_linestyle(), a.get_marker()) != (b.get_linestyle(), b.get_marker())
    assert a.get_color() == b.get_color()
    np.testing.assert_allclose(full.get_xticks(), [50, 200, 1000])
    expected = summary[summary["recipe"] == "chest / full / one_cycle / dropout 0.5"]["test_auroc_mean"]
    np.testing.assert_allclose(b.get_ydata(), expected)
    legend = {t.get_text() for lg in fig.legends for t in lg.get_texts()}
    assert {"dropout 0", "dropout 0.5", "radiomics + LR", "scratch"} <= legend


def test_many_panels_wrap_to_at_most_four_columns():
    summary = frame(grid(inits=("scratch",), strategies=("a", "b", "c"), policies=("p", "q", "r")))
    fig = recipes_figure(summary, SITES)
    assert len(fig.axes) == 9
    assert len({round(ax.get_position().x0, 3) for ax in fig.axes}) <= 4


def test_single_panel_radiomics_only_nan_ci_and_single_n():
    single = recipes_figure(frame(grid(inits=("scratch", "imagenet")) + radiomics()), SITES)
    assert [ax.get_title() for ax in single.axes] == ["full · one_cycle"]

    only = recipes_figure(frame(radiomics()), SITES)
    (ax,) = only.axes
    assert ax.get_title() == "radiomics only" and list(lines(ax)) == ["radiomics + LR"]
    (curve_ax,) = learning_curve_figure(frame(radiomics()), SITES).axes
    assert curve_ax.get_title() == BINARY and list(lines(curve_ax)) == ["radiomics + LR"]

    no_ci = frame(grid(inits=("scratch",))).assign(test_auroc_ci_low=np.nan, test_auroc_ci_high=np.nan)
    for fig in (learning_curve_figure(no_ci, SITES), recipes_figure(no_ci, SITES)):
        (ax,) = fig.axes
        assert list(lines(ax)) == ["scratch"] and not bands(ax)

    one_n = frame([row(init="scratch", test=0.8), row(init="imagenet", test=0.85)])
    for fig in (learning_curve_figure(one_n, SITES), recipes_figure(one_n, SITES)):
        (ax,) = fig.axes
        np.testing.assert_allclose(ax.get_xticks(), [50])
        low, high = ax.get_xlim()
        assert low < 50 < high
        fig.canvas.draw()           # renders: no log-axis trouble with a single x
        assert bands(ax) == {"scratch", "ImageNet"}


def test_empty_and_malformed_summaries():
    unfinished = frame(grid(inits=("scratch",))).assign(n_seeds=0)
    for fig in (learning_curve_figure(unfinished, {}), recipes_figure(unfinished, {})):
        assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["No finished runs yet"]
    with pytest.raises(DataError, match="summary: missing columns.*val_auroc_mean"):
        learning_curve_figure(frame(grid()).drop(columns="val_auroc_mean"), SITES)


def test_recipe_curves_are_per_recipe_in_init_order():
    summary = frame(grid(inits=("source:knee", "scratch"), variants=("dropout 0", "dropout 0.5")))
    curves = recipe_curves(summary, SITES)
    assert [(c.label, c.variant) for c in curves] == [("scratch", "dropout 0"), ("scratch", "dropout 0.5"),
                                                      ("knee (other-site)", "dropout 0"),
                                                      ("knee (other-site)", "dropout 0.5")]


def test_realistic_study_renders_at_report_resolution(tmp_path):
    """Both figures save as PNG the way report.py does, about 11 inches wide."""
    summary = frame(grid(inits=("scratch", "imagenet", "source:chest", "source:knee"),
                         strategies=("full", "gradual"), policies=("constant", "one_cycle"))
                    + grid(task=MULTILABEL, base=0.65) + radiomics() + radiomics(task=MULTILABEL))
    for name, fig in (("curves", learning_curve_figure(summary, SITES)), ("recipes", recipes_figure(summary, SITES))):
        assert fig.get_figwidth() == pytest.approx(11, abs=0.5)
        fig.savefig(tmp_path / f"{name}.png", dpi=110, bbox_inches="tight")
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_recipes_panels_zoom_to_the_lines_so_one_wide_band_cannot_squash_them():
    rows = grid(inits=("scratch", "imagenet"))
    wide = next(r for r in rows if r["init"] == "scratch" and r["n_train"] == "50")
    wide["test_auroc_ci_low"], wide["test_auroc_ci_high"] = 0.30, 1.0    # one recipe whose seeds disagree
    fig = recipes_figure(frame(rows), SITES)
    (ax,) = fig.axes
    means = frame(rows)["test_auroc_mean"]
    low, high = ax.get_ylim()
    assert low <= means.min() and means.max() <= high          # every line stays visible
    assert high - low < 0.3                                    # the 0.3-1.0 band does not set the zoom
    # the headline figure still shows every band whole (it has one line per init)
    (curve_ax,) = learning_curve_figure(frame(rows), SITES).axes
    assert curve_ax.get_ylim()[0] <= 0.30

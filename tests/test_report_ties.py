"""Ties said as ties (issue 23 item 3): when every N = 50 run scores validation AUROC 1.000 the recipe named
follows the stated cost rule (one-SE rule: frozen < gradual < full, then fewer optimiser steps), never the
recipe's name; within_noise lists every tied recipe; answer.json carries within_noise, pick_rule and the
runner-up's paired test difference."""
import json

import pytest

from test_report_study import _row, make_study, tables_under
from medtransfer.report import write_report

TASK = "pneumoniamnist:binary"
# (init, strategy, optimiser steps, seconds) -> test AUROC at N = 50 (every validation AUROC is 1.000 there)
RECIPES = {("scratch", "full", 40, 10.0): 0.70, ("imagenet", "gradual", 40, 12.0): 0.74,
           ("source:chest", "frozen", 40, 11.0): 0.66, ("source:knee", "full", 60, 9.0): 0.78}


def _metrics(test, steps):
    return json.dumps({"task_kind": "binary", "test": {"auroc_macro": test}, "budget": {"total_steps": steps}})


def _rows(names, recipes=RECIPES, val_at_200=None):
    rows = []
    for (init, strategy, steps, seconds), test in recipes.items():
        for n in (50, 200):
            for seed in (0, 1, 2):
                auroc = test + 0.01 * seed + (0.1 if n == 200 else 0.0)
                val = 1.0 if n == 50 else (val_at_200 or {}).get(init, 0.9) + 0.01 * seed
                rows.append(_row(task=TASK, arch="resnet18", init=init, strategy=strategy, lr_policy="one_cycle",
                                 dropout=0.2, recipe=names[(init, strategy)], n_train=n, seed=seed, n_train_images=n,
                                 test_auroc=auroc, val_auroc=val, seconds=seconds,
                                 metrics_json=_metrics(auroc, steps)))
    return rows


def _names(prefix):
    return {(i, s): f"{prefix}{i.removeprefix('source:')} / {s} / one_cycle" for i, s, _, _ in RECIPES}


def _answer(path, names, **kw):
    write_report(make_study(path, rows=_rows(names, **kw), per_class=[]))
    return json.loads((path / "answer.json").read_text()), (path / "report.html").read_text()


def _at(answer, n):
    (panel,) = [p for p in answer["panels"] if p["arch"] == "resnet18"]
    return {r["n_train"]: r for r in panel["best_recipe_per_n"]}[n]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("ties")
    forward, backward = _names("a "), _names("")
    # rename so that the alphabetical order of the recipes is reversed
    backward = {k: f"{chr(ord('z') - i)} {v}" for i, (k, v) in enumerate(backward.items())}
    return _answer(root / "one", forward), _answer(root / "two", backward)


def test_the_pick_at_a_full_tie_is_the_cheapest_strategy_and_survives_renaming(two):
    (first, html), (second, _) = two
    a, b = _at(first, "50"), _at(second, "50")
    assert a["recipe"].endswith("chest / frozen / one_cycle") and b["recipe"].endswith("chest / frozen / one_cycle")
    assert a["val_auroc"] == 1.0 and "one-standard-error rule" in a["pick_rule"]
    assert "never the name" in a["pick_rule"]


def test_within_noise_lists_every_tied_recipe_and_answer_json_has_the_fields(two):
    (first, html), _ = two
    row = _at(first, "50")
    assert sorted(row["within_noise"]) == sorted(_names("a ").values())
    assert row["within_noise_line"] == "4 of 4 recipes within noise of the best"
    runner = row["runner_up"]
    assert runner["recipe"] != row["recipe"]
    diff = runner["test_difference"]
    assert set(diff) >= {"estimate", "low", "high"} and diff["low"] <= diff["estimate"] <= diff["high"]
    [table] = tables_under(html, "Best recipe at each N")
    assert "4 of 4 recipes within noise of the best" in " ".join(table[1])
    assert "one-standard-error rule" in html and "never broken by the recipe" in html


def test_equal_cost_ties_are_said_as_ties_and_not_broken_by_name(tmp_path):
    recipes = {("scratch", "full", 40, 10.0): 0.70, ("imagenet", "full", 40, 12.0): 0.74,
               ("source:knee", "full", 40, 9.0): 0.78}
    names = {(i, s): f"{i} / {s}" for i, s, _, _ in recipes}
    renamed = {k: f"{chr(ord('z') - i)} {v}" for i, (k, v) in enumerate(names.items())}
    got = [_at(_answer(tmp_path / d, n, recipes=recipes)[0], "50") for d, n in (("x", names), ("y", renamed))]
    for row in got:
        assert "tied: 3 recipes" in row["pick_rule"] and len(row["tied"]) == 3
        assert row["recipe"].endswith("source:knee / full")      # the fewest training seconds, a cost
    # not tied: at N = 200 the higher mean validation AUROC wins among equal costs
    row = _at(_answer(tmp_path / "z", names, recipes=recipes, val_at_200={"imagenet": 0.95})[0], "200")
    assert row["recipe"] == "imagenet / full" and "tied" not in row["pick_rule"]

"""Issue 24, item 1 in a study: the verdict says per N whether the pick beats the pixel baseline fitted beside
each of its runs (paired on the test patients and the seeds), on real data (the shipped PneumoniaMNIST, sliced)
and on a label-shuffled copy, which must lead with "no better than chance"."""
import json

import numpy as np
import pytest

from medtransfer.report import write_report
from medtransfer.run_folder import RunFolder
from medtransfer.study import StudyOptions, run_study
from test_pixel_baseline import SIZES, write_slice

SPEC = """
name: {name}
base:
  data: {{source: medmnist, name: pneumoniamnist, split: given}}
  task: {{kind: binary}}
  image_size: 28
  model: {{arch: resnet18, init: scratch}}
  train: {{epochs: 2, min_steps: 6, batch_size: 32, lr_policy: constant, lr: 0.002, augment: false, threads: 1,
          selection: holdout}}
grid:
  train.n_train: [60]
  train.seed: [0, 1]
"""


def study(tmp_path, shuffle: bool, sizes: dict = SIZES):
    root = write_slice(tmp_path / "data", shuffle=shuffle, sizes=sizes)
    spec = tmp_path / "study.yaml"
    spec.write_text(SPEC.format(name="shuffled" if shuffle else "pixels"))
    out = tmp_path / "out"
    run_study(spec, out, StudyOptions(data_root=root, probe=False))
    write_report(out)
    return out, json.loads((out / "answer.json").read_text())


def test_the_pick_is_compared_with_the_pixel_baseline_of_its_own_runs(tmp_path):
    out, answer = study(tmp_path, shuffle=False)
    (row,) = answer["panels"][0]["best_recipe_per_n"]
    (pixels,) = [b for b in row["versus_baselines"] if b["baseline"] == "pixels + LR"]
    metrics = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/metrics.json"))]
    assert len(metrics) == 2
    own = [m["test"]["auroc_macro"] - m["baselines"][0]["test_auroc"] for m in metrics]
    assert pixels["estimate"] == pytest.approx(np.mean(own), abs=1e-4) and pixels["seeds"] == 2
    assert pixels["baseline_auroc"] == pytest.approx(np.mean([m["baselines"][0]["test_auroc"] for m in metrics]), abs=1e-4)
    assert pixels["low"] < pixels["estimate"] < pixels["high"]
    assert row["beats_each_baseline"] == {"pixels + LR": pixels["low"] > 0}
    assert row["usable"] == (row["beats_chance"] and pixels["low"] > 0)
    line = answer["verdict"]["lines"][0]
    assert "over pixels + LR (its test AUROC" in line
    if not row["usable"] and row["beats_chance"]:
        assert "no CNN recipe to recommend over pixels + LR" in line and "not shown better" in line
        assert answer["verdict"]["headline"].startswith("No recipe is shown better than both chance and the simple baselines")
    html = (out / "report.html").read_text()
    assert html.index("<h1>") < html.index("Verdict.") < html.index("pixels + LR") < html.index("What this study asked")

    # runs recorded before the pixel baseline existed: no draws beside them, so no comparison (and no guess)
    for run in (out / "runs").iterdir():
        RunFolder(run).baseline_bootstrap_path.unlink()
    write_report(out, force=True)
    (row,) = json.loads((out / "answer.json").read_text())["panels"][0]["best_recipe_per_n"]
    assert row["versus_baselines"] == [] and row["beats_each_baseline"] == {}


def test_a_study_on_shuffled_real_labels_leads_with_no_better_than_chance(tmp_path):
    out, answer = study(tmp_path, shuffle=True, sizes={**SIZES, "test": 60})   # 60 test images: a small split
    (row,) = answer["panels"][0]["best_recipe_per_n"]
    assert row["beats_chance"] is False and row["usable"] is False
    assert row["why_not"].startswith("no better than chance")
    # what to suspect, as the runs recorded it: fewer than 30 test patients of a class
    assert row["suspect"][0].startswith("the test split holds only") and "suspect: the test split" in row["why_not"]
    assert "Suspect: the test split holds only" in answer["verdict"]["lines"][0]
    assert answer["verdict"]["headline"].startswith("Nothing here is shown better than chance")
    html = (out / "report.html").read_text()
    assert html.index("<h1>") < html.index("Nothing here is shown better than chance") < html.index("What this study asked")

"""Backbones compared head to head (issue 25): a study over two backbones names a recipe in each backbone's own
panel, then compares the named recipes across backbones at each N on the same test split, paired; answer.json
and report.html both carry it."""
import json

import pytest

from medtransfer.report import write_report
from medtransfer.study import StudyOptions, run_study
from test_pixel_baseline import write_slice

pytest.importorskip("timm")

SPEC = """
name: backbones
base:
  data: {source: medmnist, name: pneumoniamnist, split: given}
  task: {kind: binary}
  image_size: 28
  model: {arch: resnet18, init: scratch}
  train: {epochs: 2, min_steps: 6, batch_size: 32, lr_policy: constant, lr: 0.002, augment: false, threads: 1,
          selection: holdout}
grid:
  model.arch: [resnet18, "timm:resnet10t"]
  train.n_train: [60]
  train.seed: [0, 1]
"""


def test_two_backbones_are_compared_at_each_n_on_the_same_test_split(tmp_path):
    root = write_slice(tmp_path / "data", shuffle=False)
    spec = tmp_path / "study.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    run_study(spec, out, StudyOptions(data_root=root, probe=False))
    write_report(out)
    answer = json.loads((out / "answer.json").read_text())
    (compared,) = answer["backbones"]
    assert compared["n_train"] == "60" and {b["arch"] for b in compared["backbones"]} == {"resnet18", "timm:resnet10t"}
    panels = {p["arch"]: p["best_recipe_per_n"][0] for p in answer["panels"]}
    by_arch = {b["arch"]: b for b in compared["backbones"]}
    for arch, b in by_arch.items():   # each backbone's entry is the recipe its own panel names
        assert b["recipe"] == panels[arch]["recipe"] and b["test_auroc"] == panels[arch]["test_auroc"]
    reference = by_arch[compared["reference_arch"]]
    other = next(b for a, b in by_arch.items() if a != compared["reference_arch"])
    assert reference["versus_reference"] is None
    assert reference["val_auroc"] >= other["val_auroc"]      # validation picks the reference, not test
    v = other["versus_reference"]
    assert v["seeds"] == 2 and v["low"] <= v["estimate"] <= v["high"]
    assert v["estimate"] == pytest.approx(other["test_auroc"] - reference["test_auroc"], abs=2e-3)
    assert v["within_noise"] == (v["low"] <= 0 <= v["high"])
    (line,) = [x for x in answer["verdict"]["lines"] if x.startswith("Backbones on")]
    assert f"{compared['reference_arch']} leads on validation" in line and ("within noise" in line) == v["within_noise"]
    html = (out / "report.html").read_text()
    assert "<h2>Backbones compared</h2>" in html and "timm:resnet10t" in html
    assert html.index("Verdict.") < html.index("Backbones compared")

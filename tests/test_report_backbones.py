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


def test_a_difference_without_an_interval_is_not_called_worse():
    """One seed a side and no bootstrap draws: no interval, so no verdict (found by review: it read 'worse')."""
    from medtransfer.report.answer_page import backbones_html
    from medtransfer.report.backbones import backbone_lines

    entry = {"arch": "b", "recipe": "pretrained / probe", "shown": "pretrained / probe", "n_seeds": 1,
             "val_auroc": 0.8, "test_auroc": 0.9, "ci_low": None, "ci_high": None,
             "versus_reference": {"estimate": 0.1, "low": None, "high": None, "method": "t over seeds", "seeds": 1,
                                  "within_noise": None}}
    ref = {**entry, "arch": "a", "versus_reference": None, "val_auroc": 0.85, "test_auroc": 0.8}
    compared = [{"task": "t", "n_train": "50", "N": 50, "reference_arch": "a", "rule": "rule", "backbones": [ref, entry]}]
    page = backbones_html({"backbones": compared})
    assert "+0.100 (no CI: not compared)" in page and "worse" not in page and "better" not in page
    (line,) = backbone_lines(compared)
    assert "b: no paired difference" in line


def test_a_repository_id_that_is_none_is_one_line_before_any_library_sees_it():
    from medtransfer.advise.candidates import parse_backbones
    from medtransfer.config import config_from_dict
    from medtransfer.errors import ConfigError, MedtransferError

    for bad in ("hf:a b", "hf:a/b@rev", "openclip:hf-hub:a/b/c", "timm:hf-hub:../x", "hf:a/.."):
        with pytest.raises(MedtransferError, match="is not a Hugging Face repository id ORG/NAME"):
            parse_backbones([bad])
        with pytest.raises(ConfigError, match="is not a Hugging Face repository id ORG/NAME"):
            config_from_dict({"data": {"source": "medmnist", "name": "pneumoniamnist"}, "task": {"kind": "binary"},
                              "model": {"arch": bad, "init": "pretrained"}})
    assert parse_backbones(["hf:microsoft/rad-dino", "timm:hf-hub:timm/vit_small_patch14_dinov2.lvd142m"]) == [
        "hf:microsoft/rad-dino", "timm:hf-hub:timm/vit_small_patch14_dinov2.lvd142m"]

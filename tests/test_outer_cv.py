"""Small test sets (issue 24, item 2): ``train.test_estimate: auto | split | outer_cv``.

A test split with fewer than 30 patients of a class is no estimate; the run is then also estimated by
patient-grouped outer cross-validation over the whole labelled set, each fold at the run's N with the run's own
selection nested inside it, while the kept model stays the one trained on the split.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from medtransfer.cli import main
from medtransfer.config import ConfigError, config_from_dict, hashed_view
from medtransfer.data import prepare_data
from medtransfer.evaluate.metrics import macro_auroc
from medtransfer.kinds import TaskKind, TestEstimateKind
from medtransfer.report.store import small_test_notes
from medtransfer.run_folder import RunMetrics
from medtransfer.runs.cnn import train_run
from medtransfer.runs.outer_cv import TestEstimate, fold_indices, plan_test_estimate
from medtransfer.tracking import run_metrics
from synthetic import write_labelled_pngs


def config(**train):
    data = {"source": "csv", "path": "labels.csv", "image_column": "path", "patient_column": "patient"}
    data.update(train.pop("data", {}))
    return config_from_dict({
        "data": data, "task": {"kind": "binary", "label_column": "finding"}, "image_size": 24,
        "model": {"arch": "resnet18", "init": "scratch"},
        "train": {"epochs": 2, "min_steps": 4, "batch_size": 16, "lr_policy": "constant", "lr": 0.001,
                  "augment": False, "threads": 1, "cv_folds": 2, "outer_folds": 3, **train}})


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """120 synthetic 24-px PNGs from 60 patients (2 each, one label per patient): a 20% test split holds 6
    patients of each class. The signal is weak, so the folds' AUROCs differ."""
    root = tmp_path_factory.mktemp("outer-small")
    write_labelled_pngs(root, n_images=120, label_of=lambda i: (i // 2) % 2, signal=3)
    return root


def prepared(cfg, root):
    data = prepare_data(cfg.data, cfg.task, cfg.image_size, root, cfg.train.n_train, cfg.train.seed, progress=False)
    return data, {"train": data.train_subset, "val": data.splits["val"], "test": data.splits["test"]}


def run_train(root, out, capsys, *sets):
    code = main(["train", str(root / "cfg.yaml"), "--out", str(out), "--data-root", str(root), "--quiet",
                 *[a for s in sets for a in ("--set", s)]])
    printed = capsys.readouterr().out
    assert code == 0, printed
    return json.loads((out / "metrics.json").read_text()), printed


@pytest.fixture(scope="module")
def trained(small_root, tmp_path_factory):
    """The same tiny recipe trained twice: auto (-> outer_cv) and split."""
    out = tmp_path_factory.mktemp("outer-runs")
    (small_root / "cfg.yaml").write_text(yaml.safe_dump(config().model_dump(mode="json")))
    for name, cfg in (("auto", config()), ("split", config(test_estimate="split"))):
        train_run(cfg, out / name, small_root, echo=False, progress=False)
    return out, *(json.loads((out / name / "metrics.json").read_text()) for name in ("auto", "split"))


def test_auto_estimates_a_small_test_split_by_outer_cv_over_every_labelled_image(trained):
    out, auto, _ = trained
    block = auto["test_estimate"]
    assert block["kind"] == "outer_cv" and "6 patients" in block["reason"] and "fewer than 30" in block["reason"]
    assert block["statement"].startswith("test estimated by 3-fold patient-grouped outer cross-validation "
                                         "(the split held 6 patients of")
    assert block["n_images"] == 120 and block["n_patients"] == 60 and block["folds"] == 3
    frame = pd.read_csv(out / "auto" / "predictions_outer_cv.csv")
    assert len(frame) == 120 and frame["image_id"].is_unique
    assert frame.groupby("patient_id")["outer_fold"].nunique().max() == 1      # a patient is in one fold only
    assert sorted(frame["outer_fold"].value_counts()) == sorted(f["test_images"] for f in block["per_fold"])
    y, s = frame[["true_finding"]].to_numpy(), frame[["score_finding"]].to_numpy()
    assert block["auroc"] == pytest.approx(macro_auroc(y, s, TaskKind.BINARY), abs=1e-6)
    per_fold = [macro_auroc(y[frame["outer_fold"] == k], s[frame["outer_fold"] == k], TaskKind.BINARY)
                for k in (1, 2, 3)]
    assert block["fold_auroc"] == pytest.approx(per_fold, abs=1e-6)
    assert block["fold_auroc_mean"] == pytest.approx(np.mean(per_fold), abs=1e-6)
    # Nadeau-Bengio corrected (3 folds sharing training images): sd x sqrt(1/3 + 1/2), not sd / sqrt(3)
    assert block["fold_auroc_se"] == pytest.approx(np.std(per_fold, ddof=1) * math.sqrt(1 / 3 + 1 / 2), abs=1e-6)
    ci = block["auroc_ci"]
    assert ci["resampled"] == "patients" and ci["low"] <= block["auroc"] <= ci["high"]
    logged = {name: value for name, value, _ in run_metrics(RunMetrics.from_json(auto))}   # what MLflow gets
    assert logged["outer_cv_auroc"] == block["auroc"] and logged["outer_cv_auroc_low"] == ci["low"]


def test_each_fold_nests_the_runs_own_selection_and_trains_at_its_n(trained):
    out, auto, _ = trained
    for fold in auto["test_estimate"]["per_fold"]:
        # a fold's validation share is a dozen images: auto selection cross-validates inside the outer fold
        assert fold["selection"] == "cv" and fold["val_images"] < 50
        assert fold["train_images"] + fold["val_images"] + fold["test_images"] == 120
    log = (out / "auto" / "train.log").read_text()
    assert "outer fold 1/3" in log and "outer fold 3: cv fold 2/2" in log
    assert "test estimated by 3-fold patient-grouped outer cross-validation" in log


def test_the_kept_model_and_the_split_results_do_not_depend_on_the_estimate(trained):
    out, auto, split = trained
    assert split["test_estimate"] == {"kind": "split", "reason": "train.test_estimate=split"}
    assert not (out / "split" / "predictions_outer_cv.csv").exists()
    assert auto["test"] == split["test"] and auto["val"] == split["val"]
    kept = [load_file(out / name / "model.safetensors") for name in ("auto", "split")]
    assert kept[0].keys() == kept[1].keys() and all(torch.equal(kept[0][k], kept[1][k]) for k in kept[0])
    assert auto["test"]["patients_per_class"] == {"not finding": 6, "finding": 6}


def test_the_cli_says_which_estimate_to_read(small_root, trained, tmp_path, capsys):
    _, printed = run_train(small_root, tmp_path / "run", capsys, "train.n_train=30", "train.outer_folds=2")
    lines = printed.strip().splitlines()
    # the estimate a reader should use comes first, with its own verdict; the small split's lines after, marked
    assert lines[0].startswith("verdict (outer cross-validation): ") and "chance" in lines[0]
    assert lines[1].startswith("test estimated by 2-fold patient-grouped outer cross-validation (the split held 6 "
                               "patients of")
    assert lines[2].startswith("outer cross-validation: test AUROC ") and "over all 120 labelled images" in lines[2]
    assert "kept model" in lines[3]
    assert all(line.endswith("[on its own test split]") for line in lines[4:-1] if line.startswith("verdict"))
    assert lines[-1].endswith("on its own test split")
    block = json.loads((tmp_path / "run" / "metrics.json").read_text())["test_estimate"]
    assert [f["train_images"] for f in block["per_fold"]] == [30, 30]        # each fold trains at the run's N


def test_fold_indices_split_the_training_part_by_patient_and_draw_n(small_root):
    cfg = config(n_train=20)
    data, idx = prepared(cfg, small_root)
    rows = np.arange(120)
    held_out = rows[data.patient_ids.astype(str) < "p2"]          # p0, p1, p10..p19: 12 patients
    got, note = fold_indices(cfg, data, np.setdiff1d(rows, held_out), held_out)
    assert note == "" and len(got["train"]) == 20
    patients = {k: set(data.patient_ids[v]) for k, v in got.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] | patients["val"]) & patients["test"]
    assert np.array_equal(got["test"], np.sort(held_out))
    assert len(got["val"]) == pytest.approx((120 - len(held_out)) * 0.1 / 0.8, abs=4)   # 70:10 of the rest
    big = config(n_train=100)
    _, note = fold_indices(big, data, np.setdiff1d(rows, held_out), held_out)
    assert "N = 100 exceeds the fold's" in note


def test_auto_keeps_the_split_when_every_class_has_30_test_patients(tmp_path):
    write_labelled_pngs(tmp_path, n_images=400, per_patient=1, label_of=lambda i: i % 2)
    cfg = config()
    data, idx = prepared(cfg, tmp_path)
    lines = []
    plan = plan_test_estimate(cfg, data, idx, model=None, log=lines.append)
    assert plan.kind is TestEstimateKind.SPLIT and "40 patients" in plan.reason
    assert lines == [f"test estimate: the run's own test split ({plan.reason})"]   # train.log says why, too
    lines.clear()
    forced = config(test_estimate="outer_cv", outer_folds=4)
    plan = plan_test_estimate(forced, data, idx, torch.nn.Linear(1, 1), lines.append)
    assert plan.kind is TestEstimateKind.OUTER_CV and len(plan.folds) == 4 and plan.untrained is not None
    tested = np.concatenate([te for _, te in plan.folds])
    assert sorted(tested) == list(range(400))                      # the whole labelled set, each image once
    assert "4-fold patient-grouped outer cross-validation over all 400 labelled images" in lines[0]


def test_without_patient_ids_the_folds_are_image_level_and_say_so(tmp_path):
    write_labelled_pngs(tmp_path, n_images=60, per_patient=1, label_of=lambda i: i % 2)
    cfg = config(data={"patient_column": "none"}, outer_folds=2)
    data, idx = prepared(cfg, tmp_path)
    plan = plan_test_estimate(cfg, data, idx, None, lambda _: None)
    assert plan.kind is TestEstimateKind.OUTER_CV and "6 patients" in plan.reason


def test_the_keys_change_no_run_id_and_a_study_keeps_one_shared_split():
    from pathlib import Path

    from medtransfer.study.runner import plan_study

    base = config()
    for variant in (config(test_estimate="outer_cv", outer_folds=7), config(test_estimate="split")):
        assert hashed_view(variant) == hashed_view(base)
    spec = Path(__file__).resolve().parent / "data" / "offline-chest-pinned.yaml"
    plan = plan_study(spec)
    assert {r.config.train.test_estimate for r in plan.all_runs if not r.is_baseline} == {"split"}
    with pytest.raises(ConfigError, match="one shared test split"):
        plan_study(spec, overrides=["train.test_estimate=outer_cv"])


def test_the_recorded_block_reads_back_typed():
    block = {"kind": "outer_cv", "reason": "r", "statement": "s", "auroc": 0.7, "auroc_ci": {"low": 0.6, "high": 0.8,
             "n_boot": 1000, "resampled": "patients"}, "n_images": 10, "n_patients": 5, "seconds": 1.0,
             "per_fold": [{"fold": 1, "train_images": 4, "train_patients": 2, "val_images": 1, "test_images": 5,
                           "test_patients": 3, "selection": "holdout", "auroc": 0.6},
                          {"fold": 2, "train_images": 4, "train_patients": 2, "val_images": 1, "test_images": 5,
                           "test_patients": 2, "selection": "cv", "auroc": None}]}
    estimate = TestEstimate.from_json(block)
    assert estimate.kind is TestEstimateKind.OUTER_CV and math.isnan(estimate.fold_auroc[1])
    assert estimate.mean == pytest.approx(0.6) and math.isnan(estimate.se)
    assert "0.6000 to 0.8000" in estimate.lines()[2] and "undefined" in estimate.lines()[2]
    assert estimate.lines()[0].startswith("verdict (outer cross-validation): better than chance")
    assert TestEstimate.from_json({"kind": "split", "reason": "x"}).lines() == []
    assert TestEstimate.from_json(None) is None and TestEstimate.from_json({"kind": "other"}) is None


def test_the_study_report_says_when_its_shared_test_split_is_small():
    runs = pd.DataFrame({"role": ["grid", "grid", "source"], "status": ["done"] * 3, "task": ["t", "t", "s"],
                         "test_patients": [{"not x": 40, "x": 12}, {"not x": 40, "x": 12}, {"a": 1}]})
    (note,) = small_test_notes(runs)
    assert note.startswith("test split: only 12 patients of 'x' (fewer than 30)") and "outer cross-validation" in note
    runs["test_patients"] = [{"not x": 40, "x": 30}] * 2 + [{"a": 1}]
    assert small_test_notes(runs) == []

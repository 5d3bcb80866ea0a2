"""Cross-validated selection (issue 23, item 2): ``train.selection: auto | holdout | cv``.

At small N the validation split is a handful of images; ``auto`` then cross-validates over the N-pool (the
training subset plus its proportional validation share) with patient-grouped, stratified folds that are the
same for every recipe, scores recipes by their mean fold AUROC, and trains the final model on the whole pool
for the folds' chosen length.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest

from medtransfer.config import config_from_dict
from medtransfer.data import prepare_data
from medtransfer.evaluate.summary import cv_corrected_ci, mean_ci
from medtransfer.kinds import SelectionKind
from medtransfer.runs.cnn import train_run
from medtransfer.runs.cv import MIN_VAL_IMAGES, plan_selection, validation_share
from synthetic import write_labelled_pngs


def config(**train):
    return config_from_dict({
        "data": {"source": "csv", "path": "labels.csv", "image_column": "path", "patient_column": "patient",
                 "split_fractions": [0.5, 0.3, 0.2], "val_size": train.pop("val_size", "proportional")},
        "task": {"kind": "binary", "label_column": "finding"},
        "image_size": 24,
        "model": {"arch": "resnet18", "init": train.pop("init", "scratch")},
        "train": {"epochs": 3, "min_steps": 6, "batch_size": 8, "lr_policy": "constant", "lr": 0.001,
                  "augment": False, **train}})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """400 synthetic 24-px PNGs from 200 patients (2 each); label 1 images are brighter."""
    root = tmp_path_factory.mktemp("cv")
    write_labelled_pngs(root, n_images=400, label_of=lambda i: (i // 2) % 2)
    return root


def prepared(cfg, root):
    data = prepare_data(cfg.data, cfg.task, cfg.image_size, root, cfg.train.n_train, cfg.train.seed, progress=False)
    return data, {"train": data.train_subset, "val": data.splits["val"], "test": data.splits["test"]}


def test_auto_cross_validates_a_small_validation_split_and_not_a_large_one(data_root):
    small = config(n_train=40)
    data, idx = prepared(small, data_root)
    plan = plan_selection(small, data, idx)
    assert len(idx["val"]) < MIN_VAL_IMAGES
    assert plan.kind is SelectionKind.CV and "fewer than 50" in plan.reason and len(plan.folds) == 5

    large = config(n_train=40, val_size="fixed")      # the whole validation split: 120 images, 60 per class
    data, idx = prepared(large, data_root)
    assert len(idx["val"]) >= MIN_VAL_IMAGES
    assert plan_selection(large, data, idx).kind is SelectionKind.HOLDOUT
    forced = config(n_train=40, selection="holdout")
    data, idx = prepared(forced, data_root)
    assert plan_selection(forced, data, idx).kind is SelectionKind.HOLDOUT
    forced_cv = config(n_train=40, val_size="fixed", selection="cv", cv_folds=3)
    data, idx = prepared(forced_cv, data_root)
    plan = plan_selection(forced_cv, data, idx)
    assert plan.kind is SelectionKind.CV and len(plan.folds) == 3
    # the pool is N + the proportional share (N x 0.3/0.5 = 24), never the whole fixed validation split
    assert len(plan.pool) == 40 + 24 == len(idx["train"]) + len(validation_share(forced_cv, data, idx))


def test_folds_are_patient_grouped_stratified_and_the_same_for_every_recipe(data_root):
    plans = []
    for init, strategy in (("scratch", "full"), ("imagenet", "gradual")):
        cfg = config(n_train=40, init=init, strategy=strategy)
        data, idx = prepared(cfg, data_root)
        plans.append(plan_selection(cfg, data, idx))
    a, b = plans
    assert np.array_equal(a.pool, b.pool)
    for (tr_a, te_a), (tr_b, te_b) in zip(a.folds, b.folds, strict=True):
        assert np.array_equal(te_a, te_b) and np.array_equal(tr_a, tr_b)
    patients = data.patient_ids[a.pool]
    labels = np.asarray(data.labels).reshape(len(data.labels), -1)[a.pool, 0]
    held = np.concatenate([te for _, te in a.folds])
    assert sorted(held) == list(range(len(a.pool)))               # every pool image held out exactly once
    for tr, te in a.folds:
        assert not set(patients[tr]) & set(patients[te])          # no patient on both sides
        assert 0 < labels[te].mean() < 1                          # each fold holds both classes


def test_a_cross_validated_run_trains_its_pool_for_the_folds_length(data_root, tmp_path):
    cfg = config(n_train=40, seed=1)
    metrics = train_run(cfg, tmp_path / "run", data_root, echo=False, progress=False).to_json()
    chosen = metrics["selected_by"]
    assert chosen["kind"] == "cv" and chosen["folds"] == 5 and len(chosen["fold_auroc"]) == 5
    assert chosen["pool_images"] == metrics["n_train_images"] == 40 + 24
    assert math.isclose(chosen["cv_auroc_mean"], np.nanmean([v for v in chosen["fold_auroc"] if v is not None]),
                        abs_tol=1e-5)
    curve = chosen["mean_curve"]
    assert len(curve) == 3 and chosen["chosen_round"] == 1 + int(np.nanargmax(np.array(curve, dtype=float)))
    # the final fit is as long as the chosen round of the folds, and it trained on the whole pool
    assert metrics["budget"]["total_steps"] == chosen["chosen_steps"] == chosen["chosen_round"] * chosen["round_steps"]
    assert metrics["epochs_run"] == chosen["chosen_round"]
    # the validation predictions are the out-of-fold scores of every pool image
    val = pd.read_csv(tmp_path / "run" / "predictions_val.csv")
    data, idx = prepared(cfg, data_root)
    plan = plan_selection(cfg, data, idx)
    assert sorted(val["image_id"]) == sorted(data.image_ids[i] for i in plan.pool)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "selection: cv (auto: the validation split holds" in log and "cv fold 5/5" in log
    assert "training on the whole N-pool (64 images" in log
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["selected_by"] == chosen


def test_a_holdout_run_says_so_and_keeps_its_old_shape(data_root, tmp_path):
    cfg = config(n_train=40, selection="holdout")
    metrics = train_run(cfg, tmp_path / "run", data_root, echo=False, progress=False).to_json()
    assert metrics["selected_by"] == {"kind": "holdout", "reason": "train.selection=holdout"}
    assert metrics["n_train_images"] == 40


def test_the_corrected_cv_interval_is_wider_than_the_naive_one():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.8, 0.05, 15)                 # 3 seeds x 5 folds
    naive, corrected = mean_ci(scores), cv_corrected_ci(scores, folds=5)
    assert corrected.mean == pytest.approx(naive.mean)
    # Nadeau & Bengio: var x (1/J + 1/(K-1)) instead of var / J
    assert corrected.sd == pytest.approx(scores.std(ddof=1) * math.sqrt(1 / 15 + 1 / 4))
    assert corrected.high - corrected.low > 2 * (naive.high - naive.low)
    assert math.isnan(cv_corrected_ci([0.7], folds=5).low)


STUDY = """
name: tiny-cv
base:
  data: {source: csv, path: labels.csv, image_column: path, patient_column: patient, val_size: proportional,
         split_fractions: [0.5, 0.3, 0.2]}
  task: {kind: binary, label_column: finding}
  image_size: 24
  model: {arch: resnet18, init: scratch}
  train: {epochs: 2, min_steps: 4, batch_size: 16, lr_policy: constant, lr: 0.002, augment: false}
grid:
  train.strategy: [full, gradual]
  train.n_train: [30]
  train.seed: [0, 1]
baselines: [radiomics]
"""


def test_a_small_n_study_answers_by_cross_validation_with_ties_said_and_claims_checked(data_root, tmp_path):
    from medtransfer.report import write_report
    from medtransfer.study import StudyOptions, run_study

    spec = tmp_path / "study.yaml"
    spec.write_text(STUDY)
    run_study(spec, tmp_path / "out", StudyOptions(data_root=data_root, probe=False))
    write_report(tmp_path / "out")
    answer = json.loads((tmp_path / "out" / "answer.json").read_text())
    (row,) = answer["panels"][0]["best_recipe_per_n"]
    assert row["selection"] == "cv" and row["cv_folds"] == 5 and "cross-validation" in row["selection_note"]
    assert row["within_noise"][0] == row["best_on_validation"]            # the list starts with the best
    assert "one-standard-error rule" in row["pick_rule"] and "name" not in row["pick_rule"].replace("never the name", "")
    assert row["best_val_se_method"] == "corrected SE over the seeds' cv folds"
    assert {"usable", "beats_chance", "beats_baseline", "versus_baseline"} <= set(row)
    assert answer["verdict"]["headline"] and len(answer["verdict"]["lines"]) == 1
    claims = {c["key"]: c for c in answer["claims"]}
    assert len(claims) == 6 and {c["verdict"] for c in claims.values()} <= {
        "supported", "contradicted", "within noise", "not tested here"}
    assert claims["same_site_beats_imagenet"]["verdict"] == "not tested here"     # no ImageNet, no source here
    html = (tmp_path / "out" / "report.html").read_text()
    # the verdict comes first under the title, then the claims table
    assert html.index("<h1>") < html.index("Verdict.") < html.index("The paper's claims") < html.index("What this study asked")


def test_a_study_on_shuffled_labels_leads_with_no_better_than_chance(tmp_path):
    """Issue 24, acceptance 2: labels that carry nothing give a report that says so first."""
    from medtransfer.report import write_report
    from medtransfer.study import StudyOptions, run_study

    rng = np.random.default_rng(3)
    write_labelled_pngs(tmp_path, n_images=240, signal=0, label_of=lambda i: int(rng.integers(0, 2)))
    spec = tmp_path / "study.yaml"
    spec.write_text(STUDY.replace("name: tiny-cv", "name: shuffled").replace("train.n_train: [30]", "train.n_train: [60]")
                    .replace("baselines: [radiomics]", "baselines: []"))
    run_study(spec, tmp_path / "out", StudyOptions(data_root=tmp_path, probe=False))
    write_report(tmp_path / "out")
    answer = json.loads((tmp_path / "out" / "answer.json").read_text())
    (row,) = answer["panels"][0]["best_recipe_per_n"]
    assert row["usable"] is False and row["beats_chance"] is False and "no better than chance" in row["why_not"]
    assert answer["verdict"]["level"] == "warn" and answer["verdict"]["headline"].startswith("Nothing here is shown better than chance")
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.index("<h1>") < html.index("Nothing here is shown better than chance") < html.index("What this study asked")

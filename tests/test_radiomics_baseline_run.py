"""radiomics_run: the CNN run-folder contract, paired on the CNN runs' test images.

Most checks use a stand-in feature function (intensity histogram statistics, milliseconds per
dataset); one uses the real pyradiomics extraction on 40 tiny images.
"""
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from medtransfer.config import config_from_dict, load_config
from synthetic import write_labelled_pngs
from medtransfer.data import prepare_data
from medtransfer.errors import MedtransferError
from medtransfer.radiomics.baseline_run import radiomics_run
from medtransfer.runs.cnn import train_run

CNN_METRIC_KEYS = {"task_kind", "label_names", "val", "test", "n_train_images", "n_train_patients", "n_val_images",
                   "n_test_images", "epochs_run", "best_epoch", "stopped_reason", "seconds", "device", "history"}


@dataclass
class StandInTable:
    image_ids: list
    features: pd.DataFrame
    failed: dict = field(default_factory=dict)
    settings: dict = field(default_factory=lambda: {"stand_in": "intensity histogram"})


def histogram_features(data, task, rcfg, data_root, progress=True, log=print, fail=()):
    """Stands in for extract_features: 7 intensity statistics + one constant column per image."""
    prepared = prepare_data(data, task, 24, data_root, "all", 0, progress=False)
    x = np.asarray(prepared.images, dtype=np.float64).reshape(len(prepared.images), -1)
    q = np.percentile(x, [5, 25, 50, 75, 95], axis=1).T
    table = pd.DataFrame(np.column_stack([x.mean(1), x.std(1), q, np.ones(len(x))]),
                         index=pd.Index(prepared.image_ids, name="image_id"),
                         columns=["mean", "std", "p5", "p25", "p50", "p75", "p95", "flat"])
    failed = {i: "pyradiomics: the mask is empty" for i in fail}
    return StandInTable(prepared.image_ids, table.drop(index=list(fail)), failed)


@pytest.fixture
def tiny_csv(tmp_path):
    return make_tiny_csv(tmp_path)


def make_tiny_csv(tmp_path, n_images: int = 60, fractions: str = "[0.5, 0.2, 0.3]"):
    """``n_images`` synthetic 24-px PNGs from half as many patients (2 images each); label 1 images are brighter."""
    write_labelled_pngs(tmp_path, n_images=n_images, noise=150, signal=60, label_of=lambda i: (i // 2) % 2)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"data: {{source: csv, path: labels.csv, image_column: path, patient_column: patient, split_fractions: {fractions}}}\n"
        "task: {kind: binary, label_column: finding}\n"
        "image_size: 24\n"
        "model: {arch: resnet18, init: scratch}\n"
        "train: {epochs: 1, min_steps: 0, batch_size: 8, lr_policy: constant, lr: 0.001, n_train: 20, seed: 1}\n")
    return tmp_path, config


def test_writes_the_cnn_run_folder_paired_on_the_same_test_images(tiny_csv):
    root, config = tiny_csv
    cfg = load_config(config)
    metrics = radiomics_run(cfg, root / "rad", root, echo=False, progress=False, feature_fn=histogram_features).to_json()
    train_run(cfg, root / "cnn", root, echo=False, progress=False)
    rad, cnn = root / "rad", root / "cnn"
    for name in ("config.yaml", "metrics.json", "predictions_test.csv", "train.log", "coefficients.csv"):
        assert (rad / name).is_file(), name
    written = json.loads((rad / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert CNN_METRIC_KEYS <= set(written) and CNN_METRIC_KEYS - {"torch_threads"} <= set(json.loads((cnn / "metrics.json").read_text()))
    assert written["method"] == "radiomics" and written["chosen_C"] in cfg.radiomics.c_grid
    assert written["n_features"] == 8 and written["n_features_used"] == 7   # the constant column is dropped
    # 20 training + 8 validation images: too few to select on, so both select by cross-validation over the
    # N-pool and fit their final model on all 28 (runs.cv): paired on the same pool and the same folds
    cnn_written = json.loads((cnn / "metrics.json").read_text())
    assert written["n_train_images"] == 28 == cnn_written["n_train_images"]
    assert written["selected_by"]["kind"] == cnn_written["selected_by"]["kind"] == "cv"
    assert written["selected_by"]["folds"] == cnn_written["selected_by"]["folds"] >= 2
    # both methods report the yes / no at a validation-chosen threshold, so the report compares like with like
    for folder in (rad, cnn):
        point = json.loads((folder / "metrics.json").read_text())["test"]["operating_point"]
        assert point["criterion"] == "youden on val" and 0 <= point["sensitivity"] <= 1
    assert (rad / "threshold.json").is_file()
    rad_pred, cnn_pred = pd.read_csv(rad / "predictions_test.csv"), pd.read_csv(cnn / "predictions_test.csv")
    assert list(rad_pred.columns) == list(cnn_pred.columns) == ["image_id", "patient_id", "true_finding", "score_finding"]
    assert list(rad_pred["image_id"]) == list(cnn_pred["image_id"])
    assert (rad_pred["true_finding"] == cnn_pred["true_finding"]).all()
    assert written["test"]["auroc_macro"] > 0.8   # brighter = positive: the histogram separates them
    assert "C=" in (rad / "train.log").read_text()
    with pytest.raises(MedtransferError, match="--overwrite"):
        radiomics_run(cfg, rad, root, echo=False, progress=False, feature_fn=histogram_features)


def test_failed_images_leave_training_and_are_imputed_in_test(tiny_csv):
    root, config = tiny_csv
    cfg = load_config(config, ["train.selection=holdout"])   # fitted on the training subset alone
    data = prepare_data(cfg.data, cfg.task, 24, root, cfg.train.n_train, cfg.train.seed, progress=False)
    bad_train, bad_test = data.image_ids[data.train_subset[0]], data.image_ids[data.splits["test"][0]]

    def failing(*args, **kw):
        return histogram_features(*args, fail=(bad_train, bad_test), **kw)

    metrics = radiomics_run(cfg, root / "rad", root, echo=False, progress=False, feature_fn=failing).to_json()
    assert metrics["n_train_images"] == 19
    assert metrics["images_without_features"] == {"train": 1, "val": 0, "test": 1}
    predicted = pd.read_csv(root / "rad" / "predictions_test.csv")
    assert list(predicted["image_id"]) == [data.image_ids[i] for i in data.splits["test"]]
    log = (root / "rad" / "train.log").read_text()
    assert f"{bad_train} (pyradiomics: the mask is empty)" in log and "left out of training" in log
    assert bad_test in log and "median-imputed" in log


def test_a_failure_leaves_failed_json(tiny_csv):
    root, config = tiny_csv
    cfg = load_config(config)

    def broken(*args, **kw):
        raise MedtransferError("radiomics: no image could be measured")

    with pytest.raises(MedtransferError):
        radiomics_run(cfg, root / "rad", root, echo=False, progress=False, feature_fn=broken)
    assert json.loads((root / "rad" / "failed.json").read_text())["error"] == "radiomics: no image could be measured"
    assert not (root / "rad" / "metrics.json").exists()


def test_real_pyradiomics_features_end_to_end(tiny_csv):
    pytest.importorskip("radiomics")
    root, config = tiny_csv
    cfg = load_config(config)
    metrics = radiomics_run(cfg, root / "rad", root, echo=False, progress=False).to_json()
    assert metrics["n_features"] >= 90 and metrics["n_features_used"] > 10
    assert metrics["feature_settings"]["pyradiomics"]["setting"]["force2D"] is True
    assert metrics["test"]["auroc_macro"] is not None


def test_pneumoniamnist_n50_same_test_images_as_the_cnn(shared_data, tmp_path):
    cfg = config_from_dict({"data": {"source": "medmnist", "name": "pneumoniamnist", "split": "given"},
                            "task": {"kind": "binary"}, "image_size": 28,
                            "model": {"arch": "resnet18", "init": "scratch"},
                            "train": {"n_train": 50, "seed": 0, "epochs": 1, "batch_size": 32}})
    metrics = radiomics_run(cfg, tmp_path / "rad", shared_data, echo=False, progress=False,
                            feature_fn=histogram_features).to_json()
    train_run(cfg, tmp_path / "cnn", shared_data, echo=False, progress=False)
    rad, cnn = (pd.read_csv(tmp_path / d / "predictions_test.csv") for d in ("rad", "cnn"))
    assert len(rad) == 624 and list(rad["image_id"]) == list(cnn["image_id"])
    assert metrics["n_train_images"] == 50 and metrics["test"]["n_images"] == 624
    assert metrics["selection"] == "pool_cv"      # issue 23: C chosen inside the N-pool, not on 524 val images
    assert metrics["c_chosen_on"]["train_images"] == 50 and metrics["c_chosen_on"]["val_images"] == 8   # 50 x 1/7

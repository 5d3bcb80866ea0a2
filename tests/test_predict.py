"""predict for use: a label at the run's validation threshold, --threshold / --sensitivity, errors, Grad-CAM PNGs."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.cli import main
from medtransfer.evaluate.threshold import sensitivity_threshold, youden_threshold
from medtransfer.models import create_model
from medtransfer.run_folder import RunFolder
from synthetic import write_labelled_pngs

TINY = ("data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}\n"
        "task: {kind: binary, label_column: finding}\n"
        "image_size: 24\n"
        "model: {arch: resnet18, init: scratch}\n"
        "train: {epochs: 2, min_steps: 0, batch_size: 8, lr_policy: constant, lr: 0.001}\n")


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny binary run (40 synthetic PNGs; brighter = positive), trained once for the module."""
    root = tmp_path_factory.mktemp("predict")
    write_labelled_pngs(root)
    (root / "tiny.yaml").write_text(TINY)
    assert main(["train", str(root / "tiny.yaml"), "--data-root", str(root), "--out", str(root / "run"), "--quiet"]) == 0
    return root


def images(root, n=6):
    return [root / "img" / f"{i}.png" for i in range(n)]


def predict_csv(root, capsys, *extra, run="run"):
    out = root / "pred.csv"
    code, _, err = run_cli(["predict", "--run", root / run, *images(root), "--out", out, *extra], capsys)
    assert code == 0, err
    return pd.read_csv(out), err


def test_the_run_stores_its_validation_threshold_and_predict_labels_with_it(trained, capsys):
    folder = RunFolder(trained / "run")
    stored = json.loads(folder.threshold_path.read_text())
    val = pd.read_csv(folder.val_predictions_path)
    assert len(val) == json.loads(folder.metrics_path.read_text())["val"]["n_images"]
    label = stored["labels"]["finding"]
    assert stored["criterion"] == label["criterion"] == "youden" and stored["chosen_on"] == "val"
    assert label["threshold"] == pytest.approx(youden_threshold(val["true_finding"], val["score_finding"]), abs=1e-6)
    assert label["val"]["n_images"] == len(val) and label["test"]["n_images"] > 0
    frame, _ = predict_csv(trained, capsys)
    assert list(frame.columns) == ["image", "score_finding", "predicted_finding", "threshold_finding", "criterion"]
    assert (frame["criterion"] == "youden").all()
    assert np.allclose(frame["threshold_finding"], label["threshold"], atol=1e-6)
    assert (frame["predicted_finding"] == (frame["score_finding"] >= frame["threshold_finding"]).astype(int)).all()
    assert frame["predicted_finding"].isin([0, 1]).all()


def test_sensitivity_rechooses_the_threshold_on_the_stored_validation_predictions(trained, capsys):
    val = pd.read_csv(RunFolder(trained / "run").val_predictions_path)
    frame, _ = predict_csv(trained, capsys, "--sensitivity", "1.0")
    want = sensitivity_threshold(val["true_finding"], val["score_finding"], 1.0)
    assert np.allclose(frame["threshold_finding"], want, atol=1e-6)
    assert (frame["criterion"] == "sensitivity>=1").all()
    positives = val["score_finding"][val["true_finding"] == 1]
    assert (positives >= frame["threshold_finding"][0] - 1e-6).all()   # every validation positive is caught


@pytest.mark.parametrize("given, expected", [("0", 1), ("1", 0)])
def test_a_given_threshold_is_used_as_is(trained, capsys, given, expected):
    frame, _ = predict_csv(trained, capsys, "--threshold", given)
    assert (frame["criterion"] == "given").all() and (frame["threshold_finding"] == float(given)).all()
    scores_below_one = frame["score_finding"] < 1.0
    assert (frame.loc[scores_below_one, "predicted_finding"] == expected).all()


@pytest.mark.parametrize("args, needle", [
    (["--threshold", "1.5"], "must be in [0, 1]"),
    (["--sensitivity", "0"], "must be in (0, 1]"),
])
def test_bad_threshold_options_are_one_line(trained, capsys, args, needle):
    code, _, err = run_cli(["predict", "--run", trained / "run", *images(trained, 1), *args], capsys)
    assert code == 2 and needle in err.strip().splitlines()[-1]


def copy_run(src, dst, drop=()):
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.name not in drop:
            (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_missing_weights_in_a_study_points_to_study_best(trained, capsys):
    study = trained / "study"
    copy_run(trained / "run", study / "runs" / "abc123", drop=("model.safetensors",))
    (study / "results.sqlite").write_bytes(b"")
    code, _, err = run_cli(["predict", "--run", study / "runs" / "abc123", *images(trained, 1)], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and len(err.strip().splitlines()) == 1
    for needle in ("metrics.json but no model.safetensors", "keep_weights: false", f"medtransfer study best {study}"):
        assert needle in last, last


def test_a_study_folder_as_run_points_to_study_best(trained, capsys, tmp_path):
    (tmp_path / "results.sqlite").write_bytes(b"")
    code, _, err = run_cli(["predict", "--run", tmp_path, *images(trained, 1)], capsys)
    assert code == 2 and "is a study folder" in err and f"medtransfer study best {tmp_path}" in err


@pytest.mark.parametrize("drop, needle", [
    (("metrics.json",), "no metrics.json: the run has not finished"),
    (("config.yaml",), "has no config.yaml"),
])
def test_an_unfinished_folder_says_what_is_missing(trained, capsys, tmp_path, drop, needle):
    run = copy_run(trained / "run", tmp_path / "r", drop=drop)
    code, _, err = run_cli(["predict", "--run", run, *images(trained, 1)], capsys)
    assert code == 2 and needle in err


def test_a_run_without_stored_thresholds_asks_for_one(trained, capsys, tmp_path):
    run = copy_run(trained / "run", tmp_path / "old", drop=("threshold.json", "predictions_val.csv"))
    code, _, err = run_cli(["predict", "--run", run, *images(trained, 1)], capsys)
    assert code == 2 and "threshold.json not found" in err and "--threshold" in err
    code, _, err = run_cli(["predict", "--run", run, *images(trained, 1), "--sensitivity", "0.9"], capsys)
    assert code == 2 and "predictions_val.csv not found" in err
    code, out, _ = run_cli(["predict", "--run", run, *images(trained, 1), "--threshold", "0.5"], capsys)
    assert code == 0 and "given" in out


# ---------------------------------------------------------------- Grad-CAM

def test_cam_writes_one_viewable_overlay_per_image(trained, capsys, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    big = tmp_path / "big.png"   # a non-square image bigger than the view minimum keeps its own resolution
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (300, 260)).astype(np.uint8)).save(big)
    paths = [*images(trained, 3), big]
    cam = tmp_path / "cam"
    truth = tmp_path / "truth.csv"
    truth.write_text("image,label\n1.png,1\n")
    code, out, err = run_cli(["predict", "--run", trained / "run", *paths, "--cam", cam, "--truth", truth], capsys)
    assert code == 0, err
    files = sorted(cam.glob("*.png"))
    assert len(files) == 4 and f"wrote 4 Grad-CAM overlays" in err
    sizes = {f.name: Image.open(f).size for f in files}
    # the image at its own pixels (the model's square crop; 24 px upsampled to 224 to be viewable), with a title
    # above it and a colour bar beside it
    width, height = sizes["big_cam_finding.png"]
    assert width > 260 + 40 and height > 260 + 30
    assert all(224 + 40 < sizes[f"{i}_cam_finding.png"][0] < 260 + 40 for i in range(3))
    rgb = np.asarray(Image.open(cam / "1_cam_finding.png").convert("RGB"))
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    assert 0.0 < grey.mean() < 1.0     # coloured where the model looked (and in the bar), grey elsewhere
    frame = pd.read_csv(__import__("io").StringIO(out))
    assert [p.rsplit("/", 1)[-1] for p in frame["cam"]] == ["0_cam_finding.png", "1_cam_finding.png",
                                                             "2_cam_finding.png", "big_cam_finding.png"]


def test_a_cam_title_says_the_score_the_call_and_the_truth():
    from medtransfer.evaluate.threshold import given_thresholds
    from medtransfer.inference import cam_title

    binary = given_thresholds("binary", ["label=covid"], 0.4)
    assert cam_title("binary", ["label=covid"], binary, np.array([0.73]), 0, "covid") == [
        "covid: score 0.730", "predicted positive at threshold 0.400", "true label: covid"]
    assert cam_title("binary", ["finding"], given_thresholds("binary", ["finding"], 0.4), np.array([0.2]), 0) == [
        "finding: score 0.200", "predicted negative at threshold 0.400"]
    multilabel = given_thresholds("multilabel", ["a", "b"], 0.5)
    assert cam_title("multilabel", ["a", "b"], multilabel, np.array([0.1, 0.6]), 1)[0] == \
        "b (the top-scoring finding): score 0.600"
    assert cam_title("multiclass", ["0", "1", "2"], None, np.array([0.1, 0.7, 0.2]), 1) == [
        "predicted class: 1 (score 0.700, the top class)"]


def test_truth_is_found_by_path_or_file_name_and_a_bad_truth_csv_is_one_line(tmp_path):
    from medtransfer.errors import DataError
    from medtransfer.inference import read_truth, truth_of

    assert truth_of([Path("a/x.png"), Path("b/y.png"), Path("z.png")], {"x.png": 1, "b/y.png": "no"}) == \
        ["1", "no", None]
    assert truth_of([Path("x.png")], None) is None
    bad = tmp_path / "t.csv"
    bad.write_text("path,label\nx.png,1\n")
    with pytest.raises(DataError, match="needs the columns image and label; missing image"):
        read_truth(bad)


def test_cam_without_the_package_names_the_extra(trained, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)   # import fails as if not installed
    code, _, err = run_cli(["predict", "--run", trained / "run", *images(trained, 1), "--cam", tmp_path / "c"], capsys)
    assert code == 2 and "pip install 'medtransfer[cam]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("arch, size, layer", [
    ("resnet18", 224, "layer4[-1]"),     # the last conv block, 7x7
    ("resnet18", 32, "layer2[-1]"),      # layer4 and layer3 are 1x1 / 2x2 at 32 px: too coarse to say where
    ("densenet121", 224, "features.norm5"),
    ("densenet121", 64, "features.denseblock3"),
    ("timm:resnet18", 224, "layer4[-1]"),
])
def test_cam_target_is_the_last_conv_block_wide_enough(arch, size, layer):
    from medtransfer.models.cam import cam_target_layer

    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    model = create_model(arch, 2, init="scratch", log=lambda _: None)
    name, module = cam_target_layer(model, size)
    assert name == layer
    assert any(module is m for m in model.backbone.modules())


def test_multilabel_labels_each_finding_at_its_own_threshold_and_multiclass_takes_the_top_class():
    from medtransfer.evaluate.threshold import choose_thresholds
    from medtransfer.inference import labelled_frame

    y_val = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s_val = np.array([[0.9, 0.2], [0.1, 0.4], [0.8, 0.5], [0.2, 0.1]])
    thresholds = choose_thresholds("multilabel", ["a", "b"], y_val, s_val)
    assert thresholds.labels["a"].threshold == 0.8 and thresholds.labels["b"].threshold == 0.4
    frame = labelled_frame(["x.png", "y.png"], np.array([[0.85, 0.3], [0.5, 0.45]]), "multilabel", ["a", "b"],
                           thresholds)
    assert frame["predicted_a"].tolist() == [1, 0] and frame["predicted_b"].tolist() == [0, 1]
    assert frame["threshold_b"].tolist() == [0.4, 0.4] and set(frame["criterion"]) == {"youden"}
    multiclass = labelled_frame(["x.png"], np.array([[0.2, 0.7, 0.1]]), "multiclass", ["KL0", "KL1", "KL2"],
                                choose_thresholds("multiclass", ["KL0", "KL1", "KL2"], None, None))
    assert multiclass["predicted"].tolist() == ["KL1"] and multiclass["criterion"].tolist() == ["argmax"]


def test_a_binary_csv_label_of_two_named_values_gives_plain_column_names():
    """A CSV column of 'covid' / 'normal' with task.positive=covid is the label 'label=covid' inside the run;
    predict's columns say score_covid, predicted_covid, threshold_covid (issue 24)."""
    from medtransfer.evaluate.threshold import given_thresholds
    from medtransfer.inference import labelled_frame

    frame = labelled_frame(["x.png", "y.png"], np.array([[0.9], [0.2]]), "binary", ["label=covid"],
                           given_thresholds("binary", ["label=covid"], 0.5))
    assert list(frame.columns) == ["image", "score_covid", "predicted_covid", "threshold_covid", "criterion"]
    assert frame["predicted_covid"].tolist() == [1, 0]


@pytest.mark.parametrize("names, columns", [
    (["finding"], ["finding"]),
    (["label=covid"], ["covid"]),
    (["diagnosis=COVID-19 (PCR+)"], ["COVID-19_PCR"]),
    (["No Finding", "Pleural_Thickening", "Effusion"], ["No_Finding", "Pleural_Thickening", "Effusion"]),
    (["a b", "a/b", "a_b"], ["a_b", "a_b_2", "a_b_3"]),
    (["0", "1", "2"], ["0", "1", "2"]),
    (["???"], ["label0"]),
])
def test_column_labels_are_plain_and_unique(names, columns):
    from medtransfer.inference import column_labels

    assert column_labels(names) == columns

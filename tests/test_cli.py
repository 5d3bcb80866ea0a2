"""End to end through the CLI: a run folder's contents, and every bad input the spine issue lists."""
import json
import time
from pathlib import Path

import pytest
import torch

from medtransfer.cli import main
from synthetic import write_labelled_pngs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["image_size=32", "train.epochs=2", "train.min_steps=0", "train.batch_size=16", "model.arch=resnet18", "model.init=scratch"]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sets(*pairs):
    return [x for p in pairs for x in ("--set", p)]


@pytest.fixture
def tiny_csv(tmp_path):
    """40 synthetic 24-px PNGs from 20 patients; label 1 images are brighter, so a CNN can learn it."""
    write_labelled_pngs(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}\n"
        "task: {kind: binary, label_column: finding}\n"
        "image_size: 24\n"
        "model: {arch: resnet18, init: scratch}\n"
        "train: {epochs: 2, min_steps: 0, batch_size: 8, lr_policy: constant, lr: 0.001}\n")
    return tmp_path, config


def assert_failed_cleanly(code, err, out_dir, *needles):
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("medtransfer: error:")
    for needle in needles:
        assert needle in last, f"{needle!r} not in {last!r}"
    assert not (out_dir / "metrics.json").exists()


def test_train_writes_a_complete_run_folder(tiny_csv, capsys):
    root, config = tiny_csv
    out = root / "run"
    code, stdout, _ = run_cli(["train", config, "--data-root", root, "--out", out, "--quiet"], capsys)
    assert code == 0, stdout
    for name in ("config.yaml", "metrics.json", "predictions_test.csv", "model.safetensors", "train.log"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n_train_images", "n_train_patients", "epochs_run", "seconds", "device"):
        assert key in metrics
    for split in ("test", "val"):
        assert set(metrics[split]) >= {"auroc_macro", "auroc", "auprc"}
    assert metrics["n_train_images"] == 28 or metrics["n_train_images"] > 0
    point = metrics["test"]["operating_point"]       # binary: the yes / no at the threshold chosen on val
    threshold = json.loads((out / "threshold.json").read_text())["labels"]["finding"]
    assert point["threshold"] == threshold["threshold"] and point["criterion"] == "youden on val"
    assert point["sensitivity"] == threshold["test"]["sensitivity"] and 0 <= point["specificity"] <= 1
    predictions = (out / "predictions_test.csv").read_text().splitlines()
    assert predictions[0].split(",") == ["image_id", "patient_id", "true_finding", "score_finding"]
    assert len(predictions) - 1 == metrics["test"]["n_images"]


def test_same_seed_reproduces_metrics_exactly(tiny_csv, capsys):
    root, config = tiny_csv
    results = []
    for name, global_seed in (("a", 1), ("b", 2)):
        torch.manual_seed(global_seed)   # whatever ran before must not change a seeded run
        assert run_cli(["train", config, "--data-root", root, "--out", root / name, "--quiet"], capsys)[0] == 0
        results.append((root / name / "predictions_test.csv").read_text())
    assert results[0] == results[1]


def test_predict_scores_new_images(tiny_csv, capsys):
    root, config = tiny_csv
    assert run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet"], capsys)[0] == 0
    code, out, _ = run_cli(["predict", "--run", root / "run", root / "img" / "0.png", root / "img" / "1.png"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "image,score_finding,predicted_finding,threshold_finding,criterion" and len(lines) == 3
    for line in lines[1:]:
        _, score, predicted, threshold, criterion = line.split(",")
        assert 0.0 <= float(score) <= 1.0 and criterion == "youden"
        assert int(predicted) == int(float(score) >= float(threshold))


def test_finished_run_is_not_overwritten(tiny_csv, capsys):
    root, config = tiny_csv
    assert run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet"], capsys)[0] == 0
    code, _, err = run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet"], capsys)
    assert code == 2 and "--overwrite" in err
    assert (root / "run" / "metrics.json").exists()


def test_missing_image_file(tiny_csv, capsys):
    root, config = tiny_csv
    (root / "img" / "7.png").unlink()
    code, _, err = run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet"], capsys)
    assert_failed_cleanly(code, err, root / "run", "7.png")


def test_truncated_png(tiny_csv, capsys):
    root, config = tiny_csv
    blob = (root / "img" / "5.png").read_bytes()
    (root / "img" / "5.png").write_bytes(blob[: len(blob) // 2])
    code, _, err = run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet"], capsys)
    assert_failed_cleanly(code, err, root / "run", "5.png")


@pytest.mark.parametrize("column_set, needle", [
    ("data.patient_column=patient_id", "patient_id"),
    ("task.label_column=grade", "grade"),
])
def test_csv_without_a_column(tiny_csv, capsys, column_set, needle):
    root, config = tiny_csv
    code, _, err = run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet",
                            *sets(column_set)], capsys)
    assert_failed_cleanly(code, err, root / "run", needle, "labels.csv")


def test_unknown_config_key(tiny_csv, capsys):
    root, config = tiny_csv
    code, _, err = run_cli(["train", config, "--out", root / "run", *sets("train.epohcs=3")], capsys)
    assert_failed_cleanly(code, err, root / "run", "train.epohcs")


def test_n_train_larger_than_pool(tiny_csv, capsys):
    root, config = tiny_csv
    code, _, err = run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet",
                            *sets("train.n_train=5000")], capsys)
    assert_failed_cleanly(code, err, root / "run", "5000")


def test_nan_loss_stops_and_records_why(tiny_csv, capsys):
    root, config = tiny_csv
    code, _, err = run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet",
                            *sets("train.lr=1e30", "train.epochs=3", "train.min_steps=0")], capsys)
    assert_failed_cleanly(code, err, root / "run", "nan")
    failed = json.loads((root / "run" / "failed.json").read_text())
    assert "nan" in failed["error"].lower()
    assert "FAILED" in (root / "run" / "train.log").read_text()


def test_unknown_positive_finding(shared_data, tmp_path, capsys):
    code, _, err = run_cli(["train", EXAMPLES / "nih14-pneumonia.yaml", "--data-root", shared_data,
                            "--out", tmp_path / "run", *sets("task.positive=Pneumonitis")], capsys)
    assert_failed_cleanly(code, err, tmp_path / "run", "Pneumonitis")


def test_imagenet_offline_fails_fast_naming_the_file(tiny_csv, capsys, monkeypatch, tmp_path):
    root, config = tiny_csv
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MEDTRANSFER_OFFLINE", raising=False)
    started = time.monotonic()
    code, _, err = run_cli(["train", config, "--data-root", root, "--out", root / "run", "--quiet",
                            *sets("model.init=imagenet")], capsys)
    assert time.monotonic() - started < 10
    assert_failed_cleanly(code, err, root / "run", "resnet18-f37072fd.pth", str(tmp_path / "torch"))


def test_data_info_counts_per_split(shared_data, capsys):
    code, out, _ = run_cli(["data", "info", EXAMPLES / "nih14-multilabel.yaml", "--data-root", shared_data], capsys)
    assert code == 0
    assert "Pneumonia" in out and "Hernia" in out and "patients" in out.lower()


def test_data_info_json_is_machine_readable(tiny_csv, capsys):
    root, config = tiny_csv
    code, out, _ = run_cli(["data", "info", config, "--data-root", root, "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["labels"] == ["finding"] and info["has_patient_ids"] is True
    splits = info["splits"]
    assert sum(s["images"] for s in splits.values()) == 40
    assert sum(s["patients"] for s in splits.values()) == 20      # patient-level split: no patient in two
    assert all(0 <= s["positives"]["finding"] <= s["images"] for s in splits.values())
    assert all(s["positives"]["finding"] + s["negatives"]["finding"] == s["images"] for s in splits.values())


def test_data_info_shows_positives_and_negatives_per_split(tiny_csv, capsys):
    root, config = tiny_csv
    code, out, _ = run_cli(["data", "info", config, "--data-root", root], capsys)
    assert code == 0
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 4 and cells[1].isdigit():
            rows[cells[0]] = [int(c) for c in cells[1:]]
    images = rows["images"]
    positives, negatives = rows["positive: finding"], rows["negative: not finding"]
    assert [p + n for p, n in zip(positives, negatives)] == images and all(n > 0 for n in negatives)


def test_lr_find_writes_plot_and_suggestion(tiny_csv, capsys):
    root, config = tiny_csv
    code, out, _ = run_cli(["lr-find", config, "--data-root", root, "--out", root / "lrf"], capsys)
    assert code == 0
    result = json.loads((root / "lrf" / "lr_find.json").read_text())
    assert (root / "lrf" / "lr_find.png").stat().st_size > 0
    assert min(result["lrs"]) < result["suggested_lr"] < max(result["lrs"])
    assert f"{result['suggested_lr']:.3g}" in out


def test_top_level_help_describes_the_tool_for_a_user(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "only place that parses" not in out
    assert "Which transfer-learning recipe should I use" in out
    assert "medtransfer study run examples/quickstart.yaml" in out and "import medtransfer as mt" in out


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_train_help_says_how_to_start_from_a_studys_source(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "checkpoint:RUN_DIR" in out and "STUDY_DIR/sources/NAME-RUN_ID" in out

"""``--mlflow``: a real tiny study and a real train run logged to a local store, read back with mlflow.search_runs."""
import json
import sqlite3
import sys

import pytest

from medtransfer.cli import main
from medtransfer.kinds import RunStatus
from medtransfer.study import StudyOptions, run_study
from medtransfer.tracking import TrackedRun, Tracker, TrackingStore
from synthetic import write_labelled_pngs
from test_study_e2e import SPEC

mlflow = pytest.importorskip("mlflow")


def search(uri: str, experiment: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def store_rows(study_dir):
    with sqlite3.connect(study_dir / "results.sqlite") as db:
        return {r[0]: r[1:] for r in db.execute("SELECT run_id, status, test_auroc, reason FROM runs")}


def tiny_config(root):
    config = root / "tiny.yaml"
    config.write_text(
        "data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}\n"
        "task: {kind: binary, label_column: finding}\n"
        "image_size: 24\n"
        "model: {arch: resnet18, init: scratch}\n"
        "train: {epochs: 2, min_steps: 0, batch_size: 8, lr_policy: constant, lr: 0.001, augment: false}\n")
    return config


def test_study_logs_one_run_per_study_run_and_resume_adds_none(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")   # the imagenet run is skipped: weights absent offline
    write_labelled_pngs(tmp_path)
    spec = tmp_path / "study.yaml"
    spec.write_text("name: tiny-mlflow\n" + SPEC)
    out, store = tmp_path / "study", tmp_path / "study" / "mlruns"
    opts = dict(data_root=tmp_path, probe=False, mlflow=str(store))
    first = run_study(spec, out, StudyOptions(**opts))
    assert first.counts == {"done": 3, "failed": 0, "skipped": 1, "pending": 0}

    uri = TrackingStore.parse(store).uri
    assert uri == f"sqlite:///{store / 'mlflow.db'}"
    runs = search(uri, "tiny-mlflow")
    rows = store_rows(out)
    assert sorted(runs["tags.medtransfer.run_id"]) == sorted(rows)   # one MLflow run per study run
    for _, run in runs.iterrows():
        status, test_auroc, reason = rows[run["tags.medtransfer.run_id"]]
        assert run["tags.medtransfer.status"] == status
        assert run["tags.medtransfer.study"] == "tiny-mlflow" and len(run["tags.medtransfer.plan"]) == 16
        if status == "done":
            assert run["status"] == "FINISHED"
            assert run["metrics.test_auroc"] == pytest.approx(test_auroc)
            assert run["metrics.test_auroc.finding"] == pytest.approx(test_auroc)   # binary: one label
            assert run["params.train.epochs"] == "1" and run["params.model.arch"] == "resnet18"
        else:
            assert (run["status"], run["params.model.init"]) == ("KILLED", "imagenet")
            assert "ImageNet" in run["tags.medtransfer.reason"] or "imagenet" in run["tags.medtransfer.reason"]
    grid = runs[runs["tags.medtransfer.role"] == "grid"]
    assert set(grid["params.model.init"]) == {"scratch", "source:bright", "imagenet"}   # the spec's symbols
    done = runs[runs["status"] == "FINISHED"].iloc[0]
    client = mlflow.MlflowClient(uri)
    # step = round (epochs: 1); a cross-validated grid run logs its folds' mean AUROC per round (runs.cv)
    history = client.get_metric_history(done["run_id"], "val_auroc_epoch")
    assert [m.step for m in history] == [1]
    artifacts = {a.path for a in client.list_artifacts(done["run_id"])}
    assert {"config.yaml", "metrics.json", "train.log", "predictions_test.csv"} <= artifacts
    assert "model.safetensors" not in artifacts

    again = run_study(spec, out, StudyOptions(**opts))   # resume: the skipped run is tried again, skipped again
    assert again.counts == first.counts
    assert len(search(uri, "tiny-mlflow")) == len(rows)

    # a study finished without --mlflow (or before it): a later call logs every run without training any
    later = tmp_path / "later-store"
    resumed = run_study(spec, out, StudyOptions(**{**opts, "mlflow": str(later)}))
    assert resumed.counts["done"] == 3 and resumed.ran == 1   # only the skipped imagenet run was tried
    assert sorted(search(TrackingStore.parse(later).uri, "tiny-mlflow")["tags.medtransfer.run_id"]) == sorted(rows)


def test_train_bare_mlflow_logs_to_cwd_mlruns(tmp_path, monkeypatch, capsys):
    write_labelled_pngs(tmp_path)
    config = tiny_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = main(["train", str(config), "--data-root", str(tmp_path), "--out", "run", "--quiet", "--mlflow"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    runs = search(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "medtransfer")
    assert len(runs) == 1
    run = runs.iloc[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run["metrics.test_auroc"] == pytest.approx(metrics["test"]["auroc_macro"])
    assert run["metrics.val_auroc"] == pytest.approx(metrics["val"]["auroc_macro"])
    assert run["params.train.lr"] == "0.001" and "params.radiomics.bin_width" not in runs
    assert run["tags.medtransfer.run_dir"] == str(tmp_path / "run")
    history = mlflow.MlflowClient().get_metric_history(run["run_id"], "train_loss")
    assert [m.step for m in history] == [r["epoch"] for r in metrics["history"]]
    assert [m.value for m in history] == pytest.approx([r["train_loss"] for r in metrics["history"]])
    # 4 validation images: selected by cross-validation, whose per-round mean fold AUROC is the validation curve
    assert metrics["selected_by"]["kind"] == "cv"
    curve = mlflow.MlflowClient().get_metric_history(run["run_id"], "val_auroc_epoch")
    assert [m.step for m in curve] == [1, 2]
    assert [m.value for m in curve] == pytest.approx(metrics["selected_by"]["mean_curve"])
    assert run["metrics.cv_auroc_mean"] == pytest.approx(metrics["selected_by"]["cv_auroc_mean"])


@pytest.mark.parametrize("command", ["train", "study"])
def test_missing_mlflow_fails_before_any_run(tmp_path, monkeypatch, capsys, command):
    write_labelled_pngs(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)   # import mlflow now raises ImportError
    if command == "train":
        args = ["train", str(tiny_config(tmp_path)), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]
    else:
        (tmp_path / "study.yaml").write_text(SPEC)
        args = ["study", "run", str(tmp_path / "study.yaml"), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(args + ["--mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'medtransfer[mlflow]'" in err[0]
    assert not (tmp_path / "o").exists()


def test_unusable_tracking_uri_fails_before_training(tmp_path, capsys):
    write_labelled_pngs(tmp_path)
    code = main(["train", str(tiny_config(tmp_path)), "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--mlflow", "nosuchscheme://host/x"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("medtransfer: error: --mlflow nosuchscheme://host/x") and len(err) == 1
    assert not (tmp_path / "o").exists()


def test_a_file_store_uri_works_and_a_new_status_replaces_the_old_entry(tmp_path, monkeypatch):
    """MLflow 3 refuses file stores unless opted in; a file: URI is the user's explicit choice, so it is honoured."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")      # record the variable's absence, so the test
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")          # leaves the process as it found it
    store = TrackingStore.parse((tmp_path / "fs").as_uri())
    assert store.file_store
    tracker = Tracker(store, "exp")
    params = {"train": {"lr": 0.01, "sizes": [1, 2]}}
    assert tracker.log(TrackedRun("r", RunStatus.SKIPPED, params, key="abc", reason="weights absent"))
    assert tracker.log(TrackedRun("r", RunStatus.SKIPPED, params, key="abc")) is None   # already there
    assert tracker.log(TrackedRun("r", RunStatus.DONE, params, key="abc"))               # placed, rerun: replaces
    runs = search(store.uri, "exp")
    assert len(runs) == 1
    assert (runs.iloc[0]["status"], runs.iloc[0]["params.train.sizes"]) == ("FINISHED", "[1, 2]")
    assert TrackingStore.parse(tmp_path / "fs").file_store   # the folder is now recognised as a file store
    # a fresh tracker (a resumed study) finds the run by its tag instead of logging it again
    assert Tracker(store, "exp").log(TrackedRun("r", RunStatus.DONE, params, key="abc")) is None

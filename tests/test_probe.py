"""train.strategy: probe (issue 25, item 2): a logistic regression on frozen backbone features, C chosen by
patient-grouped CV inside the N-pool, written into the model's linear head, in a CNN run's folder."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medtransfer.cli import main
from medtransfer.config import PROBE_UNUSED, config_from_dict
from medtransfer.errors import ConfigError
from medtransfer.kinds import Strategy, TaskKind
from medtransfer.models import create_model
from medtransfer.run_folder import RunFolder
from medtransfer.runs.cnn import train_run
from medtransfer.study.grid import expand, hashed_config
from medtransfer.study.spec import parse_spec
from medtransfer.train.probe import PROBE_C_GRID, fit_probe_head, probe_images
from synthetic import write_labelled_pngs

TINY = ("data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}\n"
        "task: {kind: binary, label_column: finding}\n"
        "image_size: 24\n"
        "model: {arch: resnet18, init: scratch}\n"
        "train: {strategy: probe, threads: 1, cv_folds: 3}\n")


def _separable(n=120, f=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)) * np.arange(1, f + 1) + 5.0     # scaled and shifted: the scaler must be folded in
    y = (x[:, 0] - 5 + 0.5 * rng.normal(size=n) > 0).astype(int)
    return x, y


def _folds(n, k=3):
    return [(np.setdiff1d(np.arange(n), np.arange(i, n, k)), np.arange(i, n, k)) for i in range(k)]


def test_the_head_is_the_standardised_regression_with_the_scaler_folded_in():
    x, y = _separable()
    fit = fit_probe_head(x, y[:, None], _folds(len(x)), np.arange(len(x)), TaskKind.BINARY, 1)
    assert fit.C in PROBE_C_GRID and len(fit.fold_auroc) == 3 and fit.oof_scores.shape == (len(x), 1)
    best = max(v for v in fit.c_scores.values() if v is not None)
    assert fit.c_scores[fit.C] == pytest.approx(best)      # the best mean fold AUROC (ties: the smaller C)
    assert all(fit.c_scores[c] < best - 1e-12 for c in PROBE_C_GRID if c < fit.C)
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(C=fit.C, class_weight="balanced", max_iter=1000).fit(scaler.transform(x), y)
    ours = fit.head.scores(x, TaskKind.BINARY)[:, 0]
    np.testing.assert_allclose(ours, ref.predict_proba(scaler.transform(x))[:, 1], atol=1e-6)
    model = create_model("resnet18", 1, log=lambda _l: None)
    model.head = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(x.shape[1], 1)).eval()
    fit.head.write_into(model)
    with torch.no_grad():
        torch_scores = model.head(torch.from_numpy(x).float()).sigmoid().numpy()[:, 0]
    np.testing.assert_allclose(torch_scores, ours, atol=1e-5)


def test_multilabel_is_one_vs_rest_and_a_one_class_label_gets_a_constant_score():
    x, y = _separable()
    labels = np.stack([y, 1 - y, np.zeros_like(y)], axis=1)
    fit = fit_probe_head(x, labels, _folds(len(x)), np.arange(len(x)), TaskKind.MULTILABEL, 3)
    scores = fit.head.scores(x, TaskKind.MULTILABEL)
    assert np.corrcoef(scores[:, 0], scores[:, 1])[0, 1] < -0.99          # each label its own regression
    assert np.allclose(scores[:, 2], 0.0, atol=1e-12) and np.all(fit.head.weight[2] == 0)
    assert any("only negative cases" in note for note in fit.notes)


def test_multiclass_is_a_softmax_and_an_absent_class_scores_zero():
    x, y = _separable(150)
    classes = np.where(x[:, 1] > 5, 2, y)          # classes 0, 1, 2; class 3 never seen
    fit = fit_probe_head(x, classes, _folds(len(x)), np.arange(len(x)), TaskKind.MULTICLASS, 4)
    scores = fit.head.scores(x, TaskKind.MULTICLASS)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-9)
    assert scores[:, 3].max() < 1e-9 and (scores.argmax(1) == classes).mean() > 0.8
    assert any("class 3" in note for note in fit.notes)


def test_no_folds_means_c_1_with_a_note():
    x, y = _separable(20)
    fit = fit_probe_head(x, y, [], np.arange(len(x)), TaskKind.BINARY, 1)
    assert fit.C == 1.0 and fit.oof_scores is None and "no cross-validation" in fit.notes[0]


def test_probe_images_fits_the_models_head_on_its_backbone_features():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    images = (rng.integers(0, 120, (40, 24, 24)) + 100 * y[:, None, None]).astype(np.uint8)
    torch.manual_seed(0)
    model = create_model("resnet18", 1, log=lambda _l: None)
    fit = probe_images(model, images, y[:, None].astype(np.float32), np.arange(40) // 2, TaskKind.BINARY, 0, 3,
                       torch.device("cpu"))
    assert len(fit.fold_auroc) == 3 and fit.cv_mean > 0.9
    np.testing.assert_allclose(model.head[-1].weight.detach().numpy()[0], fit.head.weight[0], rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    write_labelled_pngs(root)
    (root / "tiny.yaml").write_text(TINY)
    assert main(["train", str(root / "tiny.yaml"), "--data-root", str(root), "--out", str(root / "run"), "--quiet"]) == 0
    return root


def test_a_probe_run_writes_a_cnn_run_folder(probe_run):
    folder = RunFolder(probe_run / "run")
    for path in (folder.metrics_path, folder.predictions_path, folder.val_predictions_path, folder.threshold_path,
                 folder.weights_path, folder.log_path):
        assert path.is_file(), path
    metrics = json.loads(folder.metrics_path.read_text())
    assert metrics["probe"]["chosen_C"] in PROBE_C_GRID and metrics["probe"]["folds"] >= 2
    assert metrics["budget"]["total_steps"] == 0 and metrics["epochs_run"] == 0
    assert metrics["test"]["auroc_ci"] and metrics["test"]["operating_point"]   # the CI and the threshold's point
    assert metrics["test"]["auroc_macro"] > 0.8         # brighter images are positive: an easy probe
    log = folder.log_path.read_text()
    assert "probe: logistic regression on 512 frozen backbone features" in log and "computed" in log


def test_predict_loads_a_probe_as_an_ordinary_model(probe_run, capsys):
    folder = RunFolder(probe_run / "run")
    tested = pd.read_csv(folder.predictions_path)
    images = [probe_run / image_id for image_id in tested["image_id"]]
    out = probe_run / "pred.csv"
    assert main(["predict", "--run", str(folder.path), *map(str, images), "--out", str(out)]) == 0
    got = pd.read_csv(out)
    np.testing.assert_allclose(got["score_finding"].to_numpy(), tested["score_finding"].to_numpy(), atol=1e-4)


def _grid_spec(extra_grid: str = "", sources: str = "") -> dict:
    import yaml
    return yaml.safe_load(
        "base:\n  data: {source: medmnist, name: pneumoniamnist, split: given}\n  task: {kind: binary}\n"
        "  image_size: 32\n  model: {arch: resnet18, init: scratch}\n"
        f"{sources}grid:\n  train.strategy: [probe, frozen, full]\n  train.lr_policy: [constant, one_cycle]\n"
        f"  train.n_train: [50]\n{extra_grid}")


def test_a_grid_runs_one_probe_per_cell_whatever_its_lr_policies():
    plan = expand(parse_spec(_grid_spec()))
    probes = [r for r in plan.runs if r.config.train.strategy == Strategy.PROBE]
    assert len(plan.runs) == 5 and len(probes) == 1 and probes[0].recipe == "scratch / probe"
    other = probes[0].config.model_copy(deep=True)
    for key, value in (("lr", 0.5), ("epochs", 99), ("batch_size", 7), ("augment", False), ("pack", 4)):
        setattr(other.train, key, value)
    other.model.dropout = 0.3
    assert hashed_config(other) == hashed_config(probes[0].config)   # keys a probe does not read
    other.train.seed = 1
    assert hashed_config(other) != hashed_config(probes[0].config)
    assert "lr_policy" in PROBE_UNUSED and "lr_policy" in hashed_config(plan.runs[1].config)["train"]


def test_a_source_cannot_be_a_probe():
    spec = _grid_spec("  model.init: ['source:chest']\n",
                      "sources:\n  chest:\n    data: {source: nih14, path: nih14-mini}\n    task: {kind: multilabel}\n"
                      "    train: {strategy: probe}\n")
    with pytest.raises(ConfigError, match="sources.chest: train.strategy=probe trains no backbone"):
        expand(parse_spec(spec))


def test_fit_refuses_a_probe_config_with_one_line():
    from medtransfer.train.strategies import stages

    cfg = config_from_dict({"data": {"source": "medmnist", "name": "x"}, "task": {"kind": "binary"},
                            "train": {"strategy": "probe"}})
    with pytest.raises(ConfigError, match="probe trains no layer with an optimiser"):
        stages(cfg.train)


def test_the_dry_run_prices_a_probe_as_one_forward_pass_over_its_images(tmp_path):
    from medtransfer.study.dryrun import RUN_OVERHEAD_S, estimate_time

    plan = expand(parse_spec(_grid_spec()))
    per_image = 0.003                     # seconds per image of a training step; a forward pass is a third of it
    est = estimate_time(plan, tmp_path, step_timer=lambda arch, size, device, batch: per_image)
    probe = next(r for r in plan.runs if r.config.train.strategy == Strategy.PROBE)
    frozen = next(r for r in plan.runs if r.config.train.strategy == Strategy.FROZEN)
    images = 50 + 524 + 624               # PneumoniaMNIST's N-subset, validation and test splits
    assert est.per_run[probe.run_id] == pytest.approx(images / 3 * per_image + RUN_OVERHEAD_S)
    assert est.per_run[frozen.run_id] > 3 * est.per_run[probe.run_id]   # augmented: a pass per step


def test_a_holdout_probe_chooses_c_without_its_validation_images(tmp_path, monkeypatch):
    """On a validation split the study ranks the probe against CNN recipes by its validation AUROC, so the
    validation images take no part in choosing C: the folds C is chosen on hold training images only."""
    from medtransfer.runs import probe as probe_run
    from medtransfer.runs.data_split import prepare_run_data

    seen = []
    real = probe_run.pool_folds
    monkeypatch.setattr(probe_run, "pool_folds", lambda groups, *a, **k: seen.append(np.asarray(groups)) or
                        real(groups, *a, **k))
    write_labelled_pngs(tmp_path, n_images=100)
    cfg = config_from_dict({"data": {"source": "csv", "path": "labels.csv", "image_column": "path",
                                     "patient_column": "patient"},
                            "task": {"kind": "binary", "label_column": "finding"}, "image_size": 24,
                            "model": {"arch": "resnet18", "init": "scratch"},
                            "train": {"strategy": "probe", "threads": 1, "selection": "holdout",
                                      "test_estimate": "split"}})
    train_run(cfg, tmp_path / "run", tmp_path, echo=False, progress=False)
    data, idx = prepare_run_data(cfg, tmp_path, lambda _line: None, progress=False)
    (groups,) = seen
    assert sorted(groups) == sorted(data.patient_ids[idx["train"]])
    assert not set(groups) & set(data.patient_ids[idx["val"]])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["probe"]["pool_images"] == len(idx["train"]) and "training subset" in metrics["probe"]["fitted_on"]

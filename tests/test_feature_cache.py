"""Backbone features computed once (issue 25, item 3 and acceptance 2): the feature cache, the frozen head trained
on cached features through the one training loop, and a second run or study that runs no backbone at all."""
import json
import os
import sqlite3

import numpy as np
import pytest
import torch
import torchvision

from medtransfer.cli import main
from medtransfer.config import TrainConfig
from medtransfer.errors import ConfigError
from medtransfer.kinds import TaskKind
from medtransfer.models import create_model
from medtransfer.report import write_report
from medtransfer.study import StudyOptions, run_study
from medtransfer.train import fit
from medtransfer.train.features import backbone_features, cached_features, feature_key, head_scores
from medtransfer.train.tracks import HeadInputs
from synthetic import write_labelled_pngs

CPU = torch.device("cpu")
QUIET = lambda _line: None  # noqa: E731


class BackbonePasses:
    """Counts forward passes of every torchvision ResNet (the backbone of a resnet18 Classifier), wherever they run."""

    def __init__(self):
        self.calls, self.images = 0, 0

    def __call__(self, module, args, output):
        if isinstance(module, torchvision.models.ResNet):
            self.calls += 1
            self.images += int(args[0].shape[0])


@pytest.fixture
def passes():
    counter = BackbonePasses()
    handle = torch.nn.modules.module.register_module_forward_hook(counter)
    yield counter
    handle.remove()


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return (rng.integers(0, 120, (n, 24, 24)) + 100 * y[:, None, None]).astype(np.uint8), y[:, None].astype(np.float32)


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("resnet18", 1, dropout=0.2, log=QUIET)


def test_cached_features_are_computed_once_then_read(tmp_path, passes):
    images, _ = _images()
    model = _model()
    lines = []
    first = cached_features(model, images, np.arange(0, 30), CPU, tmp_path, lines.append)
    assert passes.images == 30 and "30 computed" in lines[-1]
    second = cached_features(model, images, np.arange(10, 40), CPU, tmp_path, lines.append)
    assert passes.images == 40 and "20 read from the feature cache, 10 computed" in lines[-1]   # only the new rows
    third = cached_features(model, images, np.arange(40)[::-1], CPU, tmp_path, lines.append)
    assert passes.images == 40 and "none computed (no backbone pass)" in lines[-1]
    np.testing.assert_allclose(third.take(np.arange(30)), first.take(np.arange(30)))
    np.testing.assert_allclose(second.take([12, 35]), backbone_features(model, images[[12, 35]], CPU), atol=1e-5)
    folder = feature_key(model, images, CPU).folder(tmp_path)
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]                   # renamed into place
    assert json.loads((folder / "key.json").read_text())["arch"] == "resnet18"


def test_the_key_follows_the_weights_the_images_and_their_size():
    images, _ = _images()
    base = feature_key(_model(0), images, CPU)
    assert feature_key(_model(0), images, CPU) == base                 # same seed, same random backbone
    assert feature_key(_model(1), images, CPU).weights != base.weights  # another scratch draw
    assert feature_key(_model(0), images[::-1].copy(), CPU).images != base.images
    bigger = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    assert feature_key(_model(0), bigger, CPU).image_size == 48
    other_head = _model(0)
    torch.nn.init.constant_(other_head.head[-1].weight, 1.0)
    assert feature_key(other_head, images, CPU) == base               # the head is not the backbone


def _fill_cache(root: str) -> np.ndarray:
    """A worker of the parallel test: the features of every image, through the shared cache folder."""
    torch.set_num_threads(1)
    images, _ = _images()
    return cached_features(_model(), images, np.arange(40), CPU, root, QUIET).values


def test_parallel_runs_share_the_cache_folder_safely(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        first, second = pool.map(_fill_cache, [str(tmp_path)] * 2)
    np.testing.assert_array_equal(first, second)
    folder = feature_key(_model(), _images()[0], CPU).folder(tmp_path)
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]
    lines = []
    again = cached_features(_model(), _images()[0], np.arange(40), CPU, tmp_path, lines.append)
    assert "none computed" in lines[-1] and np.array_equal(again.values, first)


def test_an_unreadable_shard_is_computed_again(tmp_path, passes):
    images, _ = _images()
    model = _model()
    cached_features(model, images, np.arange(20), CPU, tmp_path, QUIET)
    folder = feature_key(model, images, CPU).folder(tmp_path)
    for shard in folder.glob("rows-*.npz"):
        shard.write_bytes(b"not a zip")
    lines = []
    again = cached_features(model, images, np.arange(20), CPU, tmp_path, lines.append)
    assert passes.images == 40 and "20 computed" in lines[-1]
    np.testing.assert_allclose(again.take(np.arange(20)), backbone_features(model, images[:20], CPU), atol=1e-5)


def test_a_frozen_head_trains_on_cached_features_as_on_the_images(passes):
    images, labels = _images()
    cfg = TrainConfig(strategy="frozen", augment=False, epochs=3, min_steps=0, batch_size=8, lr=0.01, seed=3)
    on_images = _model()
    r_images = fit(on_images, images[:30], labels[:30], images[30:], labels[30:], task_kind=TaskKind.BINARY,
                   cfg=cfg, device=CPU, log=QUIET)
    assert passes.calls > 0
    on_features = _model()
    feats = backbone_features(on_features, images, CPU)
    passes.calls = 0
    r_feats = fit(on_features, images[:30], labels[:30], images[30:], labels[30:], task_kind=TaskKind.BINARY,
                  cfg=cfg, device=CPU, log=QUIET, features=HeadInputs(feats[:30], feats[30:]))
    assert passes.calls == 0                                               # the backbone never ran
    for a, b in zip(r_images.history, r_feats.history):
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-4)
        assert a.val_auroc_macro == pytest.approx(b.val_auroc_macro, abs=1e-6)
    for name, tensor in on_images.state_dict().items():
        torch.testing.assert_close(tensor, on_features.state_dict()[name], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(head_scores(on_features, feats[30:], TaskKind.BINARY, CPU)[:, 0],
                               on_images(torch.from_numpy((images[30:, None] / 255.0 - 0.449) / 0.226).float())
                               .sigmoid().detach().numpy()[:, 0], atol=1e-4)


@pytest.mark.parametrize("change", [{"augment": True}, {"strategy": "full"}])
def test_cached_features_are_refused_where_the_backbone_would_see_other_inputs(change):
    images, labels = _images()
    cfg = TrainConfig(**{"strategy": "frozen", "augment": False, "epochs": 1, **change})
    feats = np.zeros((40, 512), dtype=np.float32)
    with pytest.raises(ConfigError, match="cached backbone features train a head only"):
        fit(_model(), images[:30], labels[:30], images[30:], labels[30:], task_kind=TaskKind.BINARY, cfg=cfg,
            device=CPU, log=QUIET, features=HeadInputs(feats[:30], feats[30:]))


RUN = ("data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}\n"
       "task: {kind: binary, label_column: finding}\n"
       "image_size: 24\n"
       "model: {arch: resnet18, init: scratch}\n"
       "train: {strategy: frozen, augment: false, epochs: 2, min_steps: 0, batch_size: 8, threads: 1, cv_folds: 3,\n"
       "        test_estimate: split}\n")   # the test is the same rows twice; an outer CV reads every row


def test_a_second_run_over_the_same_backbone_and_images_runs_no_backbone(tmp_path, passes):
    write_labelled_pngs(tmp_path)
    (tmp_path / "run.yaml").write_text(RUN)
    args = ["train", str(tmp_path / "run.yaml"), "--data-root", str(tmp_path), "--quiet"]
    assert main(args + ["--out", str(tmp_path / "frozen")]) == 0
    assert passes.calls > 0
    passes.calls = 0
    assert main(args + ["--out", str(tmp_path / "probe"), "--set", "train.strategy=probe"]) == 0
    assert passes.calls == 0
    assert "none computed (no backbone pass)" in (tmp_path / "probe" / "train.log").read_text()
    log = (tmp_path / "frozen" / "train.log").read_text()
    assert "computed in" in log and "stored in the feature cache" in log


STUDY = """
base:
  data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}
  task: {kind: binary, label_column: finding}
  image_size: 24
  model: {arch: resnet18, init: scratch}
  train: {epochs: 2, min_steps: 0, batch_size: 8, lr_policy: constant, lr: 0.001, augment: false, threads: 1,
          cv_folds: 3}
grid:
  train.strategy: [probe, frozen, full]
  train.n_train: [16, 24]
  train.seed: [0]
"""


def test_a_second_study_over_the_same_backbone_and_images_computes_no_features(tmp_path, passes, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "cache"))
    write_labelled_pngs(tmp_path)
    (tmp_path / "study.yaml").write_text(STUDY)
    first = run_study(tmp_path / "study.yaml", tmp_path / "one", StudyOptions(data_root=tmp_path, probe=False))
    assert first.counts["done"] == 6, first.counts
    assert (tmp_path / "cache" / "features").is_dir()
    report = write_report(tmp_path / "one").read_text()
    assert "scratch / probe" in report
    passes.calls = 0
    spec_two = tmp_path / "study-two.yaml"
    spec_two.write_text(STUDY.replace("[probe, frozen, full]", "[probe, frozen]"))
    second = run_study(spec_two, tmp_path / "two", StudyOptions(data_root=tmp_path, probe=False))
    assert second.counts["done"] == 4, second.counts
    assert passes.calls == 0                                        # not one backbone forward pass
    with sqlite3.connect(tmp_path / "two" / "results.sqlite") as db:
        run_dirs = [r[0] for r in db.execute("SELECT run_dir FROM runs")]
    for run_dir in run_dirs:
        log = (tmp_path / "two" / run_dir / "train.log").read_text()
        assert "none computed (no backbone pass)" in log, run_dir
    assert os.listdir(tmp_path / "cache" / "features")


def test_outer_cross_validation_of_a_run_on_cached_features_reads_every_fold(tmp_path, monkeypatch):
    """A small test split turns outer cross-validation on (train.test_estimate: auto): its folds train and test on
    rows the run's own split did not touch, so a run on cached features gets every labelled image's features
    (one pass), not a KeyError half-way through."""
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "cache"))
    write_labelled_pngs(tmp_path)
    (tmp_path / "run.yaml").write_text(RUN.replace("test_estimate: split", "test_estimate: auto, n_train: 20"))
    for strategy in ("probe", "frozen"):
        out = tmp_path / strategy
        assert main(["train", str(tmp_path / "run.yaml"), "--data-root", str(tmp_path), "--quiet", "--out", str(out),
                     "--set", f"train.strategy={strategy}"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        estimate = metrics["test_estimate"]
        assert estimate["kind"] == "outer_cv" and estimate["folds"] >= 2 and estimate["n_images"] == 40
        assert len(estimate["fold_auroc"]) == estimate["folds"] and all(0 <= a <= 1 for a in estimate["fold_auroc"])


def test_the_feature_key_changes_with_a_published_backbones_input_normalisation_and_size():
    """The adapter's mean / std live in non-persistent buffers and its sizes in attributes, none of them in the
    state dict: the weights digest still tells apart two backbones that differ only there (found by review)."""
    from medtransfer.models.published import InputAdapter, InputSpec
    from medtransfer.train.features import weights_digest

    def backbone(mean=(0.5, 0.5, 0.5), size=28, seed=0):
        torch.manual_seed(seed)
        spec = InputSpec(size, size, mean, (0.25, 0.25, 0.25), "bilinear", "test")
        return torch.nn.Sequential(InputAdapter(spec), torch.nn.Conv2d(3, 4, 3))

    base = weights_digest(backbone())
    assert weights_digest(backbone()) == base                      # the same backbone: the same key
    assert weights_digest(backbone(mean=(0.4, 0.4, 0.4))) != base  # another normalisation
    assert weights_digest(backbone(size=32)) != base               # another input size

"""A real (tiny) study: train_run for a source and the grid, locally and on a local Ray instance.

Synthetic 24-px PNGs in tmp_path keep it independent of ../shared/data and fast; the
Ray half checks acceptance 3: same run ids and the same metrics as the local executor.
"""
import json
import re
import sqlite3

import numpy as np
import pandas as pd
import pytest

from medtransfer.report import write_report
from medtransfer.study import StudyOptions, run_study, study_status
from synthetic import write_labelled_pngs

SPEC = """
base:
  data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}
  task: {kind: binary, label_column: finding}
  image_size: 24
  model: {arch: resnet18, init: scratch}
  train: {epochs: 1, min_steps: 0, batch_size: 16, lr_policy: constant, lr: 0.001, augment: false}
sources:
  bright:
    allow_overlap: true     # the target's own images: this test compares executors, not transfer
    data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}
    task: {kind: binary, label_column: finding}
    model: {init: scratch}
    train: {epochs: 1, min_steps: 0, batch_size: 16, augment: false}
grid:
  model.init: [scratch, source:bright, imagenet]
  train.seed: [0]
resources: {cpus_per_run: 1}
"""


@pytest.fixture
def tiny_study(tmp_path):
    """40 synthetic 24-px PNGs from 20 patients (label 1 images are brighter) and the spec above."""
    write_labelled_pngs(tmp_path)
    spec = tmp_path / "study.yaml"
    spec.write_text(SPEC)
    return tmp_path, spec


def results(out):
    with sqlite3.connect(out / "results.sqlite") as db:
        return {r[0]: r[1:] for r in db.execute("SELECT run_id, role, status, test_auroc, n_train_images FROM runs")}


@pytest.fixture
def one_thread():
    """Local runs on one torch thread, like each Ray task (cpus_per_run: 1): identical arithmetic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_real_tiny_study_local_then_ray(tiny_study, monkeypatch, one_thread):
    root, spec = tiny_study
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    # Ray gives each run cpus_per_run (1) threads, recorded as train.threads; the local runs say so too
    local = run_study(spec, root / "local", StudyOptions(data_root=root, probe=False,
                                                         overrides=("train.threads=1",)))
    assert local.counts == {"done": 3, "failed": 0, "skipped": 1, "pending": 0}, study_status(root / "local")
    rows = results(root / "local")
    skipped = [r for r in rows.values() if r[1] == "skipped"]
    assert len(skipped) == 1
    with sqlite3.connect(root / "local" / "results.sqlite") as db:
        reason, run_dir = db.execute("SELECT reason, run_dir FROM runs WHERE init='source:bright'").fetchone()
    assert reason is None
    config = (root / "local" / run_dir / "config.yaml").read_text()
    assert re.search(r"sources/bright-[0-9a-f]{16}/model\.safetensors", config)  # started from the source's weights
    metrics = json.loads((root / "local" / run_dir / "metrics.json").read_text())
    assert metrics["n_train_images"] == rows[run_dir.split("/")[1]][3]
    # every done run carries its test interval: in metrics.json, in the store, and its draws in the folder
    ci = metrics["test"]["auroc_ci"]
    assert ci["low"] <= metrics["test"]["auroc_macro"] <= ci["high"] and ci["resampled"] == "patients"
    with sqlite3.connect(root / "local" / "results.sqlite") as db:
        stored = db.execute("SELECT test_auroc_low, test_auroc_high FROM runs WHERE run_dir = ?", (run_dir,)).fetchone()
        assert db.execute("SELECT COUNT(*) FROM runs WHERE status = 'done' AND test_auroc_low IS NULL").fetchone()[0] == 0
    assert stored == pytest.approx((ci["low"], ci["high"]))
    with np.load(root / "local" / run_dir / "test_bootstrap.npz") as saved:
        assert len(saved["draws"]) == ci["n_boot"] == 1000 and str(saved["test_set"]) == ci["test_set"]
    predictions = (root / "local" / run_dir / "predictions_test.csv").read_text().splitlines()
    assert predictions[0].startswith("image_id,patient_id,")
    # the report combines those draws: every finished cell's CI is the two-level bootstrap, in answer.json too
    write_report(root / "local")
    summary = pd.read_csv(root / "local" / "summary.csv")
    assert (summary.loc[summary["n_done"] > 0, "ci_method"] == "two-level bootstrap").all()
    answer = json.loads((root / "local" / "answer.json").read_text())
    (panel,) = answer["panels"]
    assert all(r["ci_method"] == "two-level bootstrap" for r in panel["best_recipe_per_n"])
    assert answer["skipped"][0]["init"] == "ImageNet"      # offline: the ImageNet run is skipped, named first

    pytest.importorskip("ray")
    on_ray = run_study(spec, root / "ray", StudyOptions(data_root=root, executor="ray", probe=False))
    assert on_ray.counts == local.counts
    ray_rows = results(root / "ray")
    assert set(ray_rows) == set(rows)
    for run_id, (role, status, auroc, n) in rows.items():
        assert ray_rows[run_id][:2] == (role, status) and ray_rows[run_id][3] == n
        assert ray_rows[run_id][2] == pytest.approx(auroc, abs=1e-6) if auroc is not None else ray_rows[run_id][2] is None

"""Issue 23 item 7: radiomics' C is chosen by patient-grouped CV inside the N-pool (the training subset and its
proportional validation share), never on the whole validation split, and metrics.json says which images."""
import numpy as np
import pytest

from medtransfer.config import RadiomicsConfig, config_from_dict, load_config
from medtransfer.data import prepare_data, proportional_val_count
from medtransfer.kinds import RunMethod
from medtransfer.radiomics import baseline
from medtransfer.radiomics.baseline_run import radiomics_run
from medtransfer.study.grid import hashed_config, radiomics_config, run_id_of
from test_radiomics_baseline_run import histogram_features, make_tiny_csv


@pytest.fixture
def pool_csv(tmp_path):
    """200 synthetic PNGs from 100 patients (2 images each); val is 30% of the patients, N = 20."""
    root, config = make_tiny_csv(tmp_path, n_images=200, fractions="[0.5, 0.3, 0.2]")
    return root, load_config(config)


def test_c_is_chosen_inside_the_n_pool_and_metrics_json_records_it(pool_csv, monkeypatch):
    root, cfg = pool_csv
    assert cfg.radiomics.selection == "pool_cv" and cfg.data.val_size == "fixed"
    seen = []
    real_folds = baseline.pool_folds

    def recording(groups, strata, seed, k=5):
        folds = real_folds(groups, strata, seed, k)
        seen.append((np.asarray(groups), folds))
        return folds

    monkeypatch.setattr(baseline, "pool_folds", recording)
    metrics = radiomics_run(cfg, root / "rad", root, echo=False, progress=False,
                            feature_fn=histogram_features).to_json()

    data = prepare_data(cfg.data, cfg.task, 24, root, 20, 1, progress=False)
    proportional = cfg.data.model_copy(update={"val_size": "proportional"})   # what a CNN run with N = 20 sees
    share = prepare_data(proportional, cfg.task, 24, root, 20, 1, progress=False).splits["val"]
    pool_patients = set(data.patient_ids[np.concatenate([data.train_subset, share])])
    assert len(share) == proportional_val_count(20, cfg.data.split_fractions) == 12 < len(data.splits["val"]) == 60

    chosen_on = metrics["c_chosen_on"]
    assert metrics["selection"] == "pool_cv" and "N-pool" in chosen_on["images"]
    assert chosen_on["train_images"] == 20 and chosen_on["val_images"] == 12
    assert sorted(chosen_on["val_image_ids"]) == sorted(data.image_ids[i] for i in share)
    # the first call chose C; the second is the pixel baseline every run fits beside its model (runs.baselines),
    # on this run's own training images (a holdout run: the 20 of the N-subset)
    assert len(seen) == 2 and len(seen[1][0]) == 20 and metrics["baselines"][0]["baseline"] == "pixels + LR"
    groups, folds = seen[0]
    assert len(groups) == 32 and chosen_on["folds"] == len(folds) >= 2
    for train_rows, test_rows in folds:          # every fold's images come from the N-pool, no patient in both
        assert set(groups[train_rows]) | set(groups[test_rows]) <= pool_patients
        assert not set(groups[train_rows]) & set(groups[test_rows])
    assert sorted(np.concatenate([te for _, te in folds])) == list(range(32))
    assert "N-pool" in metrics["selection_note"]


def test_folds_are_as_many_as_the_patients_of_the_rarer_class_allow():
    groups = np.repeat(np.arange(20), 2)
    strata = np.where(np.isin(groups, [0, 1, 2]), 1, 0)          # 3 patients of the rarer class
    folds = baseline.pool_folds(groups, strata, seed=0)
    assert len(folds) == 3
    assert baseline.pool_folds(groups, np.where(groups == 0, 1, 0), seed=0) == []   # 1 patient: no CV


def test_the_new_default_gives_baseline_runs_new_ids_and_auto_keeps_its_old_ones():
    cnn = config_from_dict({"data": {"source": "medmnist", "name": "pneumoniamnist", "split": "given"},
                            "task": {"kind": "binary"}, "image_size": 28, "model": {"arch": "resnet18"},
                            "train": {"n_train": 50, "seed": 0}})
    new = hashed_config(radiomics_config(cnn), RunMethod.RADIOMICS)
    old = hashed_config(radiomics_config(cnn.model_copy(update={"radiomics": RadiomicsConfig(selection="auto")})),
                        RunMethod.RADIOMICS)
    assert new["radiomics"]["selection"] == "pool_cv" and old["radiomics"]["selection"] == "auto"
    assert run_id_of(new) != run_id_of(old)


def test_the_pixel_baseline_fits_the_rows_the_radiomics_model_fitted(pool_csv, monkeypatch):
    """With C chosen on the validation split (radiomics.selection: val) the radiomics model fits the training
    subset only, even where a CNN run would cross-validate the N-pool: its pixel baseline fits those same rows,
    so the paired comparison in its verdict is paired on the training side too (found by review)."""
    root, cfg = pool_csv
    cfg = cfg.model_copy(update={"radiomics": cfg.radiomics.model_copy(update={"selection": "val"}),
                                 "data": cfg.data.model_copy(update={"val_size": "proportional"})})
    seen = []
    real_folds = baseline.pool_folds

    def recording(groups, strata, seed, k=5):
        seen.append(len(groups))
        return real_folds(groups, strata, seed, k)

    monkeypatch.setattr(baseline, "pool_folds", recording)
    metrics = radiomics_run(cfg, root / "rad-val", root, echo=False, progress=False,
                            feature_fn=histogram_features).to_json()
    assert metrics["n_train_images"] == 20 and seen[-1] == 20   # the baseline's C folds: the same 20 images

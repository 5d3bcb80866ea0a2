"""Issue 23, N in patients: a subset of data with patient ids spreads over as many patients as it can.

Drawing whole patients gave N = 50 subsets of the real NIH rows with 3 to 16 patients (41 of 50 images one
patient's follow-ups); ``data.subset_by: patients`` (the default) takes one image per patient while unused
patients remain, still nested in N for a seed with every class present. Run ids change only where the subset
does (``RunConfig.unhashed_keys``).
"""
import numpy as np
import pandas as pd
import pytest

from medtransfer.config import DataConfig, TaskConfig, config_from_dict, hashed_view, written_config
from medtransfer.data import (nested_subset, partition_patients, patient_split, prepare_data, strata_matrix,
                              subset_order)
from medtransfer.data.sources.nih14 import NIH14_FINDINGS, finding_matrix
from medtransfer.errors import DataError

SEEDS = range(5)


@pytest.fixture(scope="module")
def nih_pools(shared_data):
    """(patient ids, 14-finding matrix) of each half of a 50/50 patient partition of the real 40,000 NIH rows."""
    csv = shared_data / "nih14-metadata" / "Data_Entry_2017_first40000rows.csv"
    df = pd.read_csv(csv, dtype=str, usecols=["Finding Labels", "Patient ID"])
    pids, findings = df["Patient ID"].to_numpy(str), finding_matrix(df["Finding Labels"], csv)
    masks = partition_patients(pids, {"source": 0.5, "target": 0.5}, seed=0)
    return {name: (pids[m], findings[m]) for name, m in masks.items()}


def strata_kinds(findings):
    return {"multilabel": strata_matrix(findings, "multilabel"),
            "binary": strata_matrix(findings[:, [NIH14_FINDINGS.index("Pneumonia")]], "binary")}


def test_every_n50_subset_of_the_nih_rows_holds_at_least_45_patients(nih_pools):
    for pool_name, (pids, findings) in nih_pools.items():
        for kind, strata in strata_kinds(findings).items():
            train = patient_split(pids, strata, (0.7, 0.1, 0.2), seed=0)["train"]
            for seed in SEEDS:
                s50 = nested_subset(train, pids, strata, 50, seed)
                s200 = nested_subset(train, pids, strata, 200, seed)
                where = f"{pool_name} pool, {kind}, seed {seed}"
                assert len(set(pids[s50])) >= 45, f"{where}: {len(set(pids[s50]))} patients"
                assert set(s50) <= set(s200), f"{where}: N = 50 not inside N = 200"
                present = strata[train].any(axis=0)
                assert (strata[s50].any(axis=0) == present).all(), f"{where}: a class is missing at N = 50"
                assert len(set(subset_order(train, pids, strata, seed)[:50])) == 50


def test_no_patient_gives_a_second_image_while_one_gives_none():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 9, 120)
    pids = np.repeat([f"p{i}" for i in range(120)], counts)
    labels = rng.random((len(pids), 3)) < [0.3, 0.05, 0.01]
    for seed in range(4):
        order = subset_order(np.arange(len(pids)), pids, labels, seed)
        assert sorted(order.tolist()) == list(range(len(pids)))
        taken = pd.Series(pids[order]).groupby(pids[order]).cumcount().to_numpy()   # 0: a patient's first image
        n_seed = int(labels.any(axis=0).sum())   # class seed images come first (from distinct patients here)
        assert (taken[:n_seed] == 0).all() and labels[order[:n_seed]].any(axis=0).all()
        assert (taken[:120] == 0).all(), f"seed {seed}: a second image before every patient gave one"
        assert (np.diff(taken) >= 0).all()        # round by round: no third image before every second one


def test_without_patient_ids_images_are_patients_and_both_draws_agree(shared_data):
    """MedMNIST (PneumoniaMNIST's real labels, image ids as patients): N images are N patients and the
    subset is the one drawn before data.subset_by existed, so its runs keep their ids and results."""
    labels = np.load(shared_data / "pneumoniamnist" / "pneumoniamnist.npz")["train_labels"].astype(np.float32)
    image_ids = np.array([f"train_{i}" for i in range(len(labels))])
    strata = strata_matrix(labels, "binary")
    pool = np.arange(len(labels))
    for seed in SEEDS:
        np.testing.assert_array_equal(subset_order(pool, image_ids, strata, seed, "patients"),
                                      subset_order(pool, image_ids, strata, seed, "images"))
        s50 = nested_subset(pool, image_ids, strata, 50, seed)
        assert len(set(image_ids[s50])) == 50 and strata[s50].any(axis=0).all()


@pytest.mark.parametrize("data, task, patients_at_50", [
    ({"source": "nih14", "path": "nih14-mini"}, "multilabel", 50),                      # 1,000 images, 264 patients
    ({"source": "medmnist", "name": "pneumoniamnist", "split": "given"}, "binary", 50),  # images = patients
])
def test_a_prepared_run_trains_on_n_images_of_as_many_patients(shared_data, tmp_path, data, task, patients_at_50):
    """What a run records as n_train_patients (runs/cnn.py: the subset's distinct patient ids)."""
    cfg = DataConfig(**data, cache_dir=str(tmp_path / "cache"))
    prepared = prepare_data(cfg, TaskConfig(kind=task), 16, shared_data, 50, 0, progress=False)
    subset = prepared.train_subset
    assert len(subset) == 50 and len(set(prepared.patient_ids[subset])) == patients_at_50
    assert any(f"from {patients_at_50} patients" in n and "subset_by=patients" in n for n in prepared.notes)


def test_an_unknown_subset_by_is_one_line():
    with pytest.raises(DataError, match=r"data.subset_by must be one of \['patients', 'images'\], got 'rows'"):
        subset_order(np.arange(3), np.array(["a", "b", "c"]), np.eye(3, dtype=bool), 0, "rows")


def _cfg(data: dict, n_train) -> dict:
    task = {"kind": "multiclass", "label_column": "y"} if data["source"] == "csv" else {"kind": "binary"}
    return {"data": data, "task": task, "train": {"n_train": n_train}}


NIH = {"source": "nih14", "path": "nih14-mini"}
MNIST = {"source": "medmnist", "name": "pneumoniamnist"}
KNEE_NO_IDS = {"source": "csv", "path": "knee/labels.csv"}


@pytest.mark.parametrize("data, n_train, hashed", [
    (NIH, 50, True),                                        # patient ids, a subset: the new draw is another subset
    (NIH, "all", False),                                    # every image, fixed validation: the same data
    ({**NIH, "val_size": "proportional"}, "all", True),    # the validation subset is drawn too
    (MNIST, 50, False),                                     # no patient ids: both draws agree
    (KNEE_NO_IDS, 50, False),                               # csv without data.patient_column: likewise
    ({**KNEE_NO_IDS, "patient_column": "none"}, 50, False),   # the explicit opt-out: likewise
    ({**KNEE_NO_IDS, "patient_column": "patient_id"}, 50, True),
])
def test_subset_by_is_in_the_run_id_only_where_it_changes_the_subset(data, n_train, hashed):
    view = hashed_view(config_from_dict(_cfg(data, n_train)))
    assert ("subset_by" in view["data"]) is hashed
    old = hashed_view(config_from_dict(_cfg({**data, "subset_by": "images"}, n_train)))
    assert "subset_by" not in old["data"]                 # the draw before the key: the ids of then


def test_a_config_yaml_written_before_subset_by_reads_as_the_old_draw():
    tree = _cfg(NIH, 50)
    assert written_config(tree, "old/config.yaml").data.subset_by == "images"
    assert written_config(_cfg({**NIH, "subset_by": "patients"}, 50), "new/config.yaml").data.subset_by == "patients"
    assert config_from_dict(tree).data.subset_by == "patients"   # a user's config: today's default
    assert "subset_by" not in tree["data"]                         # the caller's tree is not changed

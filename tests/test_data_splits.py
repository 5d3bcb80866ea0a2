"""Patient-disjoint stratified splits and nested N-subsets, on synthetic and real NIH metadata."""
import numpy as np
import pandas as pd
import pytest

from medtransfer.data import given_split_indices, nested_subset, patient_split, strata_matrix, subset_order
from medtransfer.data.sources.nih14 import NIH14_FINDINGS, finding_matrix
from medtransfer.data.splits import check_patient_disjoint
from medtransfer.errors import DataError

PNEUMONIA = NIH14_FINDINGS.index("Pneumonia")


def synthetic(n_patients=300, seed=0):
    """Patients with 1-8 images each and two labels, one rare (~3% of patients)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 9, n_patients)
    pids = np.repeat([f"p{i}" for i in range(n_patients)], counts)
    common = np.repeat(rng.random(n_patients) < 0.3, counts)
    rare = np.repeat(rng.random(n_patients) < 0.03, counts)
    return pids, np.stack([common, rare], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def nih_metadata(shared_data):
    """(patient ids, 14-finding matrix) of the real 40,000-row Data_Entry_2017.csv."""
    csv = shared_data / "nih14-metadata" / "Data_Entry_2017_first40000rows.csv"
    df = pd.read_csv(csv, dtype=str, usecols=["Finding Labels", "Patient ID"])
    return df["Patient ID"].to_numpy(str), finding_matrix(df["Finding Labels"], csv)


def patients_of(pids, idx):
    return set(np.asarray(pids)[idx].tolist())


def test_strata_matrix_kinds():
    assert strata_matrix(np.array([[1.0], [0.0]]), "binary").tolist() == [[False, True], [True, False]]
    assert strata_matrix(np.array([2, 0]), "multiclass").tolist() == [[False, False, True], [True, False, False]]
    ml = np.array([[1, 0, 1], [0, 0, 0]], np.float32)
    assert strata_matrix(ml, "multilabel").tolist() == [[True, False, True], [False, False, False]]
    with pytest.raises(DataError, match="regression"):
        strata_matrix(ml, "regression")


def test_patient_split_is_disjoint_complete_and_deterministic():
    pids, labels = synthetic()
    strata = strata_matrix(labels, "multilabel")
    a = patient_split(pids, strata, (0.7, 0.1, 0.2), seed=3)
    b = patient_split(pids, strata, (0.7, 0.1, 0.2), seed=3)
    c = patient_split(pids, strata, (0.7, 0.1, 0.2), seed=4)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.array_equal(a[n], c[n]) for n in a)
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(len(pids)))
    assert not patients_of(pids, a["train"]) & patients_of(pids, a["test"])
    assert not patients_of(pids, a["train"]) & patients_of(pids, a["val"])
    assert not patients_of(pids, a["val"]) & patients_of(pids, a["test"])
    assert abs(len(a["train"]) / len(pids) - 0.7) < 0.05
    for name in a:  # the rare label reaches every split
        assert labels[a[name], 1].sum() > 0


def test_patient_split_on_real_metadata_keeps_label_proportions(nih_metadata):
    pids, findings = nih_metadata
    splits = patient_split(pids, strata_matrix(findings, "multilabel"), (0.7, 0.1, 0.2), seed=0)
    check_patient_disjoint(splits, pids)
    total = findings.sum(axis=0)
    for name, frac in zip(("train", "val", "test"), (0.7, 0.1, 0.2)):
        share = findings[splits[name]].sum(axis=0) / total
        assert np.all(np.abs(share - frac) < 0.05), (name, share)


def test_zero_fraction_split_is_empty():
    pids, labels = synthetic(50)
    splits = patient_split(pids, strata_matrix(labels, "multilabel"), (0.8, 0.0, 0.2), seed=0)
    assert len(splits["val"]) == 0 and len(splits["train"]) + len(splits["test"]) == len(pids)


def test_check_patient_disjoint_names_the_leak():
    with pytest.raises(DataError, match="patient b"):
        check_patient_disjoint({"train": np.array([0, 1]), "test": np.array([2])}, np.array(["a", "b", "b"]))


def test_nested_subsets_on_real_metadata_always_hold_pneumonia(nih_metadata):
    """50 ⊂ 100 ⊂ 200, exact sizes, and >= 1 Pneumonia positive for every one of 50 seeds."""
    pids, findings = nih_metadata
    binary = strata_matrix(findings[:, [PNEUMONIA]], "binary")
    pool = patient_split(pids, binary, (0.7, 0.1, 0.2), seed=0)["train"]
    multilabel = strata_matrix(findings, "multilabel")
    for seed in range(50):
        order = subset_order(pool, pids, binary, seed)
        assert sorted(order.tolist()) == sorted(pool.tolist())
        s50, s100, s200 = (nested_subset(pool, pids, binary, n, seed) for n in (50, 100, 200))
        np.testing.assert_array_equal(s50, np.sort(order[:50]))
        assert (len(s50), len(s100), len(s200)) == (50, 100, 200)
        assert set(s50) <= set(s100) <= set(s200) <= set(pool)
        assert findings[s50, PNEUMONIA].sum() >= 1
        assert (findings[s50, PNEUMONIA] == 0).sum() >= 1
        ml = subset_order(pool, pids, multilabel, seed)[:14]
        assert multilabel[ml].any(axis=0).all(), f"seed {seed}: a finding has no positive in the first 14 images"


def test_subset_by_images_draws_whole_patients_and_varies_by_seed():
    pids, labels = synthetic()
    strata = strata_matrix(labels[:, [1]], "binary")
    pool = np.arange(len(pids))
    sub = nested_subset(pool, pids, strata, 120, seed=1, by="images")
    drawn = patients_of(pids, sub)
    cut = [p for p in drawn if (pids[sub] == p).sum() != (pids == p).sum()]
    assert len(cut) <= 3  # only the (at most two) seed patients and the last patient drawn
    assert not np.array_equal(sub, nested_subset(pool, pids, strata, 120, seed=2, by="images"))
    np.testing.assert_array_equal(sub, nested_subset(pool, pids, strata, 120, seed=1, by="images"))


def test_nested_subset_all_and_too_many():
    pids, labels = synthetic(20)
    strata = strata_matrix(labels, "multilabel")
    pool = np.arange(len(pids))[::2]
    np.testing.assert_array_equal(nested_subset(pool, pids, strata, "all", 0), np.sort(pool))
    with pytest.raises(DataError, match=rf"n_train=999 .*\({len(pool)} images\)"):
        nested_subset(pool, pids, strata, 999, 0)


def test_given_split_indices():
    splits = given_split_indices(np.array(["train", "test", "train", "val"]))
    assert splits["train"].tolist() == [0, 2] and splits["val"].tolist() == [3] and splits["test"].tolist() == [1]
    with pytest.raises(DataError, match="valid"):
        given_split_indices(np.array(["train", "valid"]))


def test_proportional_val_is_n_over_7_patients_stratified_and_nested():
    from medtransfer.data import proportional_val
    rng = np.random.default_rng(0)
    n = 600
    patients = np.repeat(np.arange(300), 2)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    strata = strata_matrix(labels, "binary")
    val = np.arange(n)
    notes: list[str] = []
    small = proportional_val(val, 50, patients, strata, (0.7, 0.1, 0.2), seed=1, notes=notes)
    assert len(small) == 8 and strata[small].any(axis=0).all()          # ceil(50/7), both classes
    assert "8 of 600" in notes[-1]
    larger = proportional_val(val, 200, patients, strata, (0.7, 0.1, 0.2), seed=1, notes=notes)
    assert len(larger) == 29 and set(small) <= set(larger)             # nested in N for a seed
    whole = proportional_val(val[:20], 800, patients, strata, (0.7, 0.1, 0.2), seed=1, notes=notes)
    assert len(whole) == 20 and "all 20" in notes[-1]

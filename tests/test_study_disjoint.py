"""A same-site source must not hold the target's patients: checked before any run; data.partition splits one dataset."""
import numpy as np
import pytest
import yaml

from medtransfer.config import DataConfig, TaskConfig
from medtransfer.data import load_source, partition_patients
from medtransfer.data.__init__ import make_splits, strata_matrix
from medtransfer.errors import ConfigError
from medtransfer.study import StudyOptions, run_study

from test_study_runner import fake_run

NIH = {"source": "nih14", "path": "nih14-mini", "split": "random"}   # shipped in the demo bundle
HALVES = {"source": 0.5, "target": 0.5}


def test_partition_is_by_patient_complete_disjoint_and_order_free():
    patients = np.repeat(np.arange(40), 3).astype(str)            # 40 patients, 3 images each
    pools = partition_patients(patients, {"a": 0.25, "b": 0.75}, seed=1)
    assert pools["a"].sum() == 30 and pools["b"].sum() == 90
    assert not (pools["a"] & pools["b"]).any() and (pools["a"] | pools["b"]).all()
    assert not set(patients[pools["a"]]) & set(patients[pools["b"]])
    shuffled = np.random.default_rng(0).permutation(len(patients))
    again = partition_patients(patients[shuffled], {"a": 0.25, "b": 0.75}, seed=1)
    assert set(patients[shuffled][again["a"]]) == set(patients[pools["a"]])   # depends on the patients, not the rows
    assert set(patients[partition_patients(patients, {"a": 0.25, "b": 0.75}, seed=2)["a"]]) != set(patients[pools["a"]])


@pytest.mark.parametrize("bad, needle", [
    ({"partition": HALVES}, "go together"),
    ({"partition": HALVES, "pool": "tgt"}, "data.pool='tgt' is not a pool"),
    ({"partition": {"source": 0.5, "target": 0.6}, "pool": "source"}, "summing to 1"),
])
def test_partition_config_is_validated(bad, needle):
    from medtransfer.config import config_from_dict

    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        config_from_dict({"data": {**NIH, **bad}, "task": {"kind": "multilabel"}})


def _spec(tmp_path, base_data, source_data, **source_extra):
    tree = {"name": "nih-on-nih",
            "base": {"data": base_data, "task": {"kind": "binary", "positive": "Effusion"}, "image_size": 16,
                     "model": {"arch": "resnet18", "init": "scratch"}, "train": {"epochs": 1, "min_steps": 0}},
            "sources": {"chest": {"site": "same", "data": source_data, "task": {"kind": "multilabel"},
                                  "model": {"init": "scratch"}, **source_extra}},
            "grid": {"model.init": ["scratch", "source:chest"], "train.n_train": [50], "train.seed": [0]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _options(tmp_path):
    return StudyOptions(data_root=tmp_path, run_fn=fake_run, probe=False, check_data=True)


def test_a_source_on_the_target_dataset_fails_before_any_run_naming_patients(tmp_path):
    spec = _spec(tmp_path, NIH, NIH)
    with pytest.raises(ConfigError) as err:
        run_study(spec, tmp_path / "S", _options(tmp_path))
    message = str(err.value)
    assert ("source chest (nih14-mini) shares 264 patient(s) (nih14 Patient ID) and 1000 image(s) (by pixels)"
            in message and "; images 00000001_000.png = 00000001_000.png," in message)   # each image only itself
    assert "data.partition" in message and "\n" not in message
    assert not (tmp_path / "S").exists()          # nothing ran, nothing left behind


def test_with_a_partition_it_runs_and_every_pair_of_pools_is_disjoint(tmp_path):
    spec = _spec(tmp_path, {**NIH, "partition": HALVES, "pool": "target"},
                 {**NIH, "partition": HALVES, "pool": "source"})
    summary = run_study(spec, tmp_path / "S", _options(tmp_path))
    assert summary.counts["done"] == 3            # the source and two grid runs
    source = load_source(DataConfig(**NIH, partition=HALVES, pool="source"), TaskConfig(kind="multilabel"), tmp_path)
    target_cfg = DataConfig(**NIH, partition=HALVES, pool="target")
    task = TaskConfig(kind="binary", positive="Effusion")
    target = load_source(target_cfg, task, tmp_path)
    splits = make_splits(target, target_cfg, strata_matrix(target.labels, "binary"), [])
    pools = {"source": set(source.patient_ids)} | {name: set(target.patient_ids[idx]) for name, idx in splits.items()}
    assert sum(len(p) for p in pools.values()) == 264                 # every patient in exactly one pool
    names = list(pools)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not pools[a] & pools[b], (a, b)
    assert not set(source.image_ids) & set(target.image_ids)


def test_allow_overlap_runs_and_the_report_says_so(tmp_path):
    from medtransfer.report import write_report

    spec = _spec(tmp_path, NIH, NIH, allow_overlap=True)
    run_study(spec, tmp_path / "S", _options(tmp_path))
    text = write_report(tmp_path / "S").read_text()
    assert "allowed to overlap the target" in text and "may share images / patients with the target" in text

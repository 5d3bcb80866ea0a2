"""The demo bundle the package ships: real data, licensed, small, and used when the data root has no copy."""
from medtransfer.config import DEMO_DATA, config_from_dict
from medtransfer.data import load_source

SOURCES = {
    "pneumoniamnist": ({"source": "medmnist", "name": "pneumoniamnist", "split": "given"}, {"kind": "binary"}, 5856),
    "nih14-mini": ({"source": "nih14", "path": "nih14-mini"}, {"kind": "multilabel"}, 1000),
    "knee": ({"source": "csv", "path": "knee-oa-64/labels.csv", "image_column": "image", "patient_column": "patient_id",
              "split_column": "split", "split": "given"}, {"kind": "multiclass", "label_column": "label"}, 1200),
}


def test_bundle_is_under_20_mb_and_names_each_licence():
    total = sum(p.stat().st_size for p in DEMO_DATA.rglob("*") if p.is_file())
    assert 5e6 < total < 20 * 1024 * 1024
    readme = (DEMO_DATA / "README.md").read_text()
    for needed in ("CC BY 4.0", "NIH Clinical Center", "Wang", "Kermany", "doi:10.17632/56rmx5bjcr.1"):
        assert needed in readme


def test_each_source_loads_from_the_bundle_when_the_data_root_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    for name, (data, task, n_images) in SOURCES.items():
        cfg = config_from_dict({"data": data, "task": task})
        src = load_source(cfg.data, cfg.task, tmp_path)
        assert len(src) == n_images, name
        assert any("demo bundle" in note for note in src.notes), name


def test_a_copy_under_the_data_root_wins_over_the_bundle(shared_data):
    cfg = config_from_dict({"data": SOURCES["nih14-mini"][0], "task": {"kind": "multilabel"}})
    src = load_source(cfg.data, cfg.task, shared_data)
    assert not src.notes and str(shared_data.resolve()) in src.dataset_key

"""Sources (nih14, medmnist, csv), prepare_data and the image cache, on real and tiny synthetic data."""
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medtransfer.data.cache as cache_mod
from medtransfer.config import DataConfig, TaskConfig
from medtransfer.data import NIH14_FINDINGS, decode_image, load_source, prepare_data
from medtransfer.data.cache import cache_file, resolve_cache_dir
from medtransfer.data.info import describe_text
from medtransfer.errors import ConfigError, DataError

NIH_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID\n"


def nih(path, **kw):
    return DataConfig(source="nih14", path=str(path), **kw)


def write_pngs(folder: Path, names, size=16):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((size, size), 10 * i % 255, np.uint8)).save(folder / name)


def fake_nih(root: Path, rows, layout="images") -> Path:
    """A tiny NIH-layout folder: rows of (image, findings, patient); PNGs under ``layout``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017.csv").write_text(NIH_HEADER + "".join(f"{i},{f},0,{p}\n" for i, f, p in rows))
    write_pngs(root / layout, [r[0] for r in rows])
    return root


ROWS = [(f"{p:08d}_{k:03d}.png", f, p) for p, k, f in
        [(1, 0, "Pneumonia"), (1, 1, "No Finding"), (2, 0, "Effusion|Pneumonia"), (3, 0, "No Finding"),
         (4, 0, "Mass"), (5, 0, "No Finding"), (6, 0, "Pneumonia|Edema"), (7, 0, "No Finding")]]


# --- nih14 -------------------------------------------------------------------------------

def test_nih14_mini_loads_all_images_patients_and_findings(shared_data):
    src = load_source(nih("nih14-mini"), TaskConfig(kind="multilabel"), shared_data)
    assert len(src.image_ids) == 1000 and len(np.unique(src.patient_ids)) == 264 and src.has_patient_ids
    assert src.labels.shape == (1000, 14) and src.label_names == list(NIH14_FINDINGS)
    counts = dict(zip(src.label_names, src.labels.sum(axis=0).astype(int)))
    assert counts["Effusion"] == 170 and counts["Pneumonia"] == 11 and counts["Hernia"] == 9
    assert (src.labels.sum(axis=1) == 0).sum() == 499  # "No Finding"


def test_nih14_binary_and_label_subset(shared_data):
    binary = load_source(nih("nih14-mini"), TaskConfig(kind="binary", positive="Pneumonia"), shared_data)
    assert binary.labels.shape == (1000, 1) and binary.labels.sum() == 11 and binary.label_names == ["Pneumonia"]
    sub = load_source(nih("nih14-mini"), TaskConfig(kind="multilabel", labels=["Mass", "Edema"]), shared_data)
    assert sub.label_names == ["Mass", "Edema"] and sub.labels.sum(axis=0).tolist() == [35, 31]


def test_nih14_unknown_finding_is_named(tmp_path):
    root = fake_nih(tmp_path / "nih", ROWS)
    with pytest.raises(ConfigError, match=r"Pneumonitis.*Pleural_Thickening"):
        load_source(nih(root), TaskConfig(kind="binary", positive="Pneumonitis"), tmp_path)
    with pytest.raises(ConfigError, match="Effusions"):
        load_source(nih(root), TaskConfig(kind="multilabel", labels=["Mass", "Effusions"]), tmp_path)


def test_nih14_missing_png_is_named_with_count(tmp_path):
    root = fake_nih(tmp_path / "nih", ROWS)
    (root / "images" / ROWS[3][0]).unlink()
    with pytest.raises(DataError, match=rf"1 of 8 .*{ROWS[3][0]}"):
        load_source(nih(root), TaskConfig(kind="multilabel"), tmp_path)


def test_nih14_release_subfolders_and_official_split(tmp_path):
    root = fake_nih(tmp_path / "nih", ROWS, layout="images_001/images")
    with pytest.raises(DataError, match="train_val_list.txt and test_list.txt"):
        load_source(nih(root, split="official"), TaskConfig(kind="multilabel"), tmp_path)
    (root / "train_val_list.txt").write_text("\n".join(r[0] for r in ROWS[:6]) + "\n")
    (root / "test_list.txt").write_text("\n".join(r[0] for r in ROWS[6:]) + "\n")
    data = nih(root, split="official", cache_dir=str(tmp_path / "cache"), split_fractions=(0.6, 0.2, 0.2))
    prepared = prepare_data(data, TaskConfig(kind="binary", positive="Pneumonia"), 8, tmp_path, "all", 0, progress=False)
    assert sorted(prepared.splits["test"].tolist()) == [6, 7]
    assert len(prepared.splits["val"]) > 0  # carved from train_val by patient
    assert any("carved" in n for n in prepared.notes)


def test_nih14_fullres_decodes_and_matches_the_downscaled_release(shared_data, tmp_path):
    data = nih("nih14-fullres", cache_dir=str(tmp_path / "cache"), split_fractions=(0.7, 0.0, 0.3))
    prepared = prepare_data(data, TaskConfig(kind="multilabel"), 64, shared_data, "all", 0, progress=False)
    assert prepared.images.shape == (3, 64, 64) and prepared.images.dtype == np.uint8
    i = prepared.image_ids.index("00000002_000.png")  # also in nih14-mini, downscaled from the same 1024 px file
    mini = decode_image(shared_data / "nih14-mini" / "images" / "00000002_000.png", 64)
    r = np.corrcoef(prepared.images[i].ravel().astype(float), mini.ravel().astype(float))[0, 1]
    assert r > 0.9


# --- medmnist ----------------------------------------------------------------------------

def test_medmnist_pneumoniamnist_official_split(shared_data, tmp_path):
    data = DataConfig(source="medmnist", name="pneumoniamnist", split="given", cache_dir=str(tmp_path / "c"))
    prepared = prepare_data(data, TaskConfig(kind="binary"), 28, shared_data, 100, 0, progress=False)
    assert {k: len(v) for k, v in prepared.splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert prepared.label_names == ["pneumonia"] and not prepared.has_patient_ids
    assert prepared.labels[prepared.splits["train"]].sum() == 3494
    assert len(prepared.train_subset) == 100 and "no patient IDs: each image is its own patient" in prepared.notes
    assert "pneumonia" in describe_text(prepared)


def test_medmnist_offline_missing_file_names_exact_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DataError, match=str(tmp_path / "breastmnist_64.npz")):
        load_source(DataConfig(source="medmnist", name="breastmnist", size=64), TaskConfig(kind="binary"), tmp_path)
    assert time.monotonic() - start < 10


def test_medmnist_unknown_flag_and_wrong_task(shared_data):
    with pytest.raises(ConfigError, match=r"pneumoniamnst.*pneumoniamnist"):
        load_source(DataConfig(source="medmnist", name="pneumoniamnst"), TaskConfig(kind="binary"), shared_data)
    with pytest.raises(ConfigError, match="multilabel"):
        load_source(DataConfig(source="medmnist", name="pneumoniamnist"), TaskConfig(kind="multilabel"), shared_data)


def test_medmnist_rgb_multiclass_in_medmnist_subfolder(tmp_path):
    rng = np.random.default_rng(0)
    parts = {f"{s}_images": rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8) for s, n in
             (("train", 6), ("val", 2), ("test", 3))}
    parts.update({f"{s}_labels": rng.integers(0, 7, (n, 1)) for s, n in (("train", 6), ("val", 2), ("test", 3))})
    (tmp_path / "medmnist").mkdir()
    np.savez(tmp_path / "medmnist" / "dermamnist.npz", **parts)
    data = DataConfig(source="medmnist", name="dermamnist", split="given", cache_dir=str(tmp_path / "c"))
    src = load_source(data, TaskConfig(kind="multiclass"), tmp_path)
    assert src.pixels.shape == (11, 28, 28) and src.labels.dtype == np.int64 and len(src.label_names) == 7
    assert src.given_split.tolist().count("val") == 2
    prepared = prepare_data(data, TaskConfig(kind="multiclass"), 32, tmp_path, "all", 0, progress=False)
    assert prepared.images.shape == (11, 32, 32) and prepared.images.flags["C_CONTIGUOUS"]


def test_medmnist_failed_download_names_where_to_put_the_file(tmp_path, monkeypatch):
    import medmnist

    class NoNetwork:
        def __init__(self, **kwargs):
            assert kwargs["download"] and kwargs["root"] == str(tmp_path)
            raise RuntimeError("\n   Automatic download failed! Please download breastmnist.npz manually.")

    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "0")
    monkeypatch.setattr(medmnist, "BreastMNIST", NoNetwork)
    with pytest.raises(DataError, match=rf"Automatic download failed!.*place it at {tmp_path / 'breastmnist.npz'}"):
        load_source(DataConfig(source="medmnist", name="breastmnist"), TaskConfig(kind="binary"), tmp_path)


# --- csv ---------------------------------------------------------------------------------

def knee(**kw):
    return DataConfig(source="csv", path="knee-oa-64/labels.csv", **kw)


def test_csv_knee_multiclass_with_patients_and_split(shared_data):
    src = load_source(knee(patient_column="patient_id", split_column="split", split="given"),
                      TaskConfig(kind="multiclass", label_column="label"), shared_data)
    assert len(src.image_ids) == 8260 and len(np.unique(src.patient_ids)) == 4130
    assert src.label_names == ["0", "1", "2", "3", "4"]
    assert np.bincount(src.labels).tolist() == [3253, 1495, 2175, 1086, 251]
    assert set(src.given_split.tolist()) <= {"train", "val", "test"}
    assert decode_image(src.paths[0], 32).shape == (32, 32)


def test_csv_missing_columns_are_named(shared_data):
    with pytest.raises(DataError, match=r"labels.csv: no column 'patient' \(data.patient_column\); available columns: .*patient_id"):
        load_source(knee(patient_column="patient"), TaskConfig(kind="multiclass", label_column="label"), shared_data)
    with pytest.raises(DataError, match=r"labels.csv: no column 'kl_grade' \(task.label_column\); available columns: image, label"):
        load_source(knee(), TaskConfig(kind="multiclass", label_column="kl_grade"), shared_data)


def test_csv_binary_needs_two_values(shared_data):
    with pytest.raises(DataError, match=r"'label'.*two values.*5"):
        load_source(knee(), TaskConfig(kind="binary", label_column="label"), shared_data)


def tiny_csv(tmp_path, n=6):
    write_pngs(tmp_path / "px", [f"{i}.png" for i in range(n)], size=20)
    rows = "".join(f"px/{i}.png,{i % 2},pt{i // 2}\n" for i in range(n))
    (tmp_path / "set.csv").write_text("image,y,pid\n" + rows)
    return DataConfig(source="csv", path=str(tmp_path), patient_column="pid", cache_dir=str(tmp_path / "cache"),
                      split_fractions=(0.5, 0.0, 0.5)), TaskConfig(kind="binary", label_column="y")


def test_csv_given_split_that_leaks_a_patient_is_refused(tmp_path):
    data, task = tiny_csv(tmp_path)
    text = (tmp_path / "set.csv").read_text().splitlines()
    splits = ["train", "test", "train", "train", "val", "val"]  # pt0 (rows 0 and 1) in train and test
    (tmp_path / "set.csv").write_text("\n".join([text[0] + ",split"] + [f"{r},{s}" for r, s in zip(text[1:], splits)]) + "\n")
    data.split, data.split_column = "given", "split"
    with pytest.raises(DataError, match="patient pt0"):
        prepare_data(data, task, 12, tmp_path, "all", 0, progress=False)


def test_csv_missing_image_file_is_named(tmp_path):
    data, task = tiny_csv(tmp_path)
    (tmp_path / "px" / "4.png").unlink()
    with pytest.raises(DataError, match=r"1 of 6 .*4.png"):
        load_source(data, task, tmp_path)


# --- cache -------------------------------------------------------------------------------

def test_cache_is_reused_and_keyed_by_size(tmp_path, monkeypatch):
    data, task = tiny_csv(tmp_path)
    first = prepare_data(data, task, 12, tmp_path, "all", 0, progress=False)
    assert first.images.shape == (6, 12, 12) and isinstance(first.images, np.memmap)

    def no_decoding(*a, **k):
        raise AssertionError("decoded again instead of reusing the cache")

    monkeypatch.setattr(cache_mod, "decode_image", no_decoding)
    second = prepare_data(data, task, 12, tmp_path, "all", 0, progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    src = load_source(data, task, tmp_path)
    assert cache_file(src, 12, tmp_path) != cache_file(src, 16, tmp_path)
    with pytest.raises(AssertionError, match="decoded again"):
        prepare_data(data, task, 16, tmp_path, "all", 0, progress=False)


def test_failed_build_leaves_no_cache_file(tmp_path, monkeypatch):
    data, task = tiny_csv(tmp_path, n=8)
    (tmp_path / "px" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    monkeypatch.setattr(cache_mod, "IN_PROCESS_MAX", 2)  # force the worker-process path
    data.workers = 2
    with pytest.raises(DataError, match="5.png"):
        prepare_data(data, task, 12, tmp_path, "all", 0, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_parallel_build_matches_in_process_decode(tmp_path, monkeypatch):
    data, task = tiny_csv(tmp_path, n=10)
    monkeypatch.setattr(cache_mod, "IN_PROCESS_MAX", 2)
    data.workers = 2
    parallel = prepare_data(data, task, 12, tmp_path, "all", 0, progress=False)
    src = load_source(data, task, tmp_path)
    expected = np.stack([decode_image(p, 12) for p in src.paths])
    np.testing.assert_array_equal(parallel.images, expected)


def test_the_image_cache_goes_to_the_user_cache_folder_never_into_the_data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.delenv("MEDTRANSFER_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert resolve_cache_dir(None, root) == tmp_path / "home" / ".cache" / "medtransfer" / "images"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert resolve_cache_dir(None, root) == tmp_path / "home" / ".cache" / "medtransfer" / "images"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None, root) == tmp_path / "xdg" / "medtransfer" / "images"
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "mine"))
    assert resolve_cache_dir(None, root) == tmp_path / "mine"
    assert resolve_cache_dir("here", root) == root / "here"      # data.cache_dir: into the data root only if asked
    assert [p.name for p in root.iterdir()] == ["here"]


def test_a_csv_run_leaves_the_data_root_untouched(tmp_path, monkeypatch):
    data, task = tiny_csv(tmp_path, n=10)
    data.cache_dir = None
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path.parent / f"{tmp_path.name}-cache"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    prepared = prepare_data(data, task, 12, tmp_path, "all", 0, progress=False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert str(prepared.images.filename).startswith(str(tmp_path.parent / f"{tmp_path.name}-cache"))


def test_a_read_only_cache_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(folder))
    try:
        with pytest.raises(DataError, match=r"^the image cache folder .*/ro is not writable; set data.cache_dir"):
            resolve_cache_dir(None, tmp_path)
    finally:
        folder.chmod(0o755)

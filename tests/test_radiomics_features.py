"""Radiomics feature extraction: the float32 guard, recorded settings, cache, bad images, masks."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytest.importorskip("radiomics")

from medtransfer.config import DataConfig, RadiomicsConfig, RunConfig, TaskConfig
from medtransfer.data import decode_image
from medtransfer.errors import ConfigError
from medtransfer.radiomics import (
    extract_features, extract_one, extract_to_parquet, extractor_settings, settings_hash,
)
from medtransfer.radiomics import features as features_module

SIZE = 32


def texture(seed: int, size: int = SIZE) -> np.ndarray:
    """A smooth random texture (uint8) with enough gray levels for every texture matrix."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size // 4, size // 4)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def make_csv_dataset(root: Path, n: int, masks: bool = False) -> Path:
    """n PNGs + labels.csv (binary label, optional mask column) under root; returns the CSV."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(texture(i)).save(root / "images" / f"img{i}.png")
        row = {"image": f"images/img{i}.png", "label": i % 2}
        if masks:
            roi = np.zeros((SIZE, SIZE), np.uint8)
            roi[:, : SIZE // 2 if i % 2 else SIZE // 4] = 255  # left half / left quarter
            Image.fromarray(roi).save(root / "images" / f"mask{i}.png")
            row["mask"] = f"images/mask{i}.png"
        rows.append(row)
    csv = root / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def configs(csv: Path, cache: Path, **radiomics) -> tuple[DataConfig, TaskConfig, RadiomicsConfig]:
    data = DataConfig(source="csv", path=str(csv), cache_dir=str(cache), workers=1)
    task = TaskConfig(kind="binary", label_column="label")
    return data, task, RadiomicsConfig(**{"workers": 1, **radiomics})


def test_uint8_and_float32_input_give_the_same_features():
    params = extractor_settings(RadiomicsConfig())
    image = texture(0, 64)
    from_uint8 = extract_one(image, None, params)
    from_float = extract_one(image.astype(np.float32), None, params)
    assert len(from_uint8) >= 90
    assert from_uint8 == from_float


def test_at_least_90_features_with_the_default_classes_on_a_real_radiograph(shared_data):
    path = sorted((shared_data / "nih14-mini" / "images").glob("*.png"))[0]
    feats = extract_one(decode_image(path, 64), None, extractor_settings(RadiomicsConfig()))
    assert len(feats) >= 90
    assert all(np.isfinite(v) for v in feats.values())
    assert not any(k.startswith("diagnostics_") for k in feats)
    assert {k.split("_")[1] for k in feats} == {"firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape2D"}


def test_settings_are_recorded_in_the_table_and_the_parquet(tmp_path):
    csv = make_csv_dataset(tmp_path / "ds", 4)
    data, task, rcfg = configs(csv, tmp_path / "cache", bin_width=10.0)
    table = extract_features(data, task, rcfg, tmp_path, progress=False, log=lambda _: None)
    assert table.image_ids == [f"images/img{i}.png" for i in range(4)]
    assert list(table.features.index) == table.image_ids and not table.failed
    assert set(table.features.dtypes) == {np.dtype("float64")}
    setting = table.settings["pyradiomics"]["setting"]
    assert setting["binWidth"] == 10.0 and setting["force2D"] is True and "binCount" not in setting
    assert table.settings["image_size"] == SIZE  # native size of the first image
    assert table.settings["mask"] == "whole image"

    cfg = RunConfig(data=data, task=task, radiomics=rcfg)
    summary = extract_to_parquet(cfg, tmp_path / "F.parquet", tmp_path, progress=False, log=lambda _: None)
    assert "4 images" in summary and "0 failed" in summary
    written = pq.read_table(tmp_path / "F.parquet")
    assert json.loads(written.schema.metadata[b"medtransfer.radiomics.settings"]) == table.settings
    frame = written.to_pandas()
    assert frame.columns[0] == "image_id"
    assert np.allclose(frame.drop(columns="image_id").to_numpy(), table.features.to_numpy())


def test_bin_count_instead_of_bin_width_changes_the_settings_hash():
    width = extractor_settings(RadiomicsConfig())
    count = extractor_settings(RadiomicsConfig(bin_width=None, bin_count=32))
    assert count["setting"]["binCount"] == 32 and "binWidth" not in count["setting"]
    assert settings_hash(width) != settings_hash(count)
    assert settings_hash(width) == settings_hash(extractor_settings(RadiomicsConfig()))


def test_a_rerun_reuses_the_cache_and_an_edited_image_is_recomputed(tmp_path, monkeypatch):
    csv = make_csv_dataset(tmp_path / "ds", 5)
    data, task, rcfg = configs(csv, tmp_path / "cache")
    first = extract_features(data, task, rcfg, tmp_path, progress=False, log=lambda _: None)

    def must_not_run(*args, **kwargs):
        raise AssertionError("extract_one called although every image is cached")

    monkeypatch.setattr(features_module, "extract_one", must_not_run)
    again = extract_features(data, task, rcfg, tmp_path, progress=False, log=lambda _: None)
    assert not again.failed
    pd.testing.assert_frame_equal(again.features, first.features)

    calls = []
    monkeypatch.setattr(features_module, "extract_one", lambda *a: calls.append(1) or extract_one(*a))
    Image.fromarray(texture(99)).save(tmp_path / "ds" / "images" / "img3.png")  # new content, new mtime
    edited = extract_features(data, task, rcfg, tmp_path, progress=False, log=lambda _: None)
    assert len(calls) == 1
    assert not np.allclose(edited.features.loc["images/img3.png"], first.features.loc["images/img3.png"])
    pd.testing.assert_frame_equal(edited.features.drop(index="images/img3.png"),
                                  first.features.drop(index="images/img3.png"))


def test_a_corrupt_image_is_reported_by_name_and_the_others_are_kept(tmp_path):
    csv = make_csv_dataset(tmp_path / "ds", 12)
    (tmp_path / "ds" / "images" / "img5.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    data, task, rcfg = configs(csv, tmp_path / "cache", workers=2)  # > 8 images: the process pool
    lines = []
    table = extract_features(data, task, rcfg, tmp_path, progress=False, log=lines.append)
    assert list(table.failed) == ["images/img5.png"]
    assert "img5.png" in table.failed["images/img5.png"]
    assert any("images/img5.png failed" in line for line in lines)
    assert len(table.features) == 11 and "images/img5.png" not in table.features.index
    # the pool's features equal the in-process ones
    single = extract_one(texture(0), None, table.settings)
    assert table.features.loc["images/img0.png"].to_dict() == single


def test_the_mask_column_restricts_the_features_to_the_roi(tmp_path):
    csv = make_csv_dataset(tmp_path / "ds", 3, masks=True)
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(tmp_path / "ds" / "images" / "mask2.png")
    data, task, rcfg = configs(csv, tmp_path / "cache", mask_column="mask")
    table = extract_features(data, task, rcfg, tmp_path, progress=False, log=lambda _: None)
    assert table.settings["mask"] == "column mask"
    assert list(table.failed) == ["images/img2.png"] and "empty" in table.failed["images/img2.png"]
    area = table.features["original_shape2D_PixelSurface"]
    assert area["images/img0.png"] == SIZE * SIZE // 4 and area["images/img1.png"] == SIZE * SIZE // 2
    roi = np.zeros((SIZE, SIZE), bool)
    roi[:, : SIZE // 2] = True
    assert table.features.loc["images/img1.png"].to_dict() == extract_one(texture(1), roi, table.settings)

    whole = extract_features(*configs(csv, tmp_path / "cache"), tmp_path, progress=False, log=lambda _: None)
    assert whole.features.loc["images/img1.png", "original_shape2D_PixelSurface"] == SIZE * SIZE


def test_bad_radiomics_settings_fail_with_one_line_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="LoG needs sigma"):
        extractor_settings(RadiomicsConfig(image_types={"Original": {}, "LoG": {}}))
    with pytest.raises(ConfigError, match="unknown image type"):
        extractor_settings(RadiomicsConfig(image_types={"Sharpen": {}}))
    log_types = extractor_settings(RadiomicsConfig(image_types={"LoG": {"sigma": [1, 2]}}))
    assert log_types["imageType"]["LoG"]["sigma"] == [1.0, 2.0]
    data = DataConfig(source="nih14", path=str(tmp_path))
    with pytest.raises(ConfigError, match="mask_column"):
        from medtransfer.radiomics.extract import mask_paths
        mask_paths(None, data, RadiomicsConfig(mask_column="mask"), tmp_path)


def test_an_interrupted_run_keeps_the_features_it_computed(tmp_path, monkeypatch):
    csv = make_csv_dataset(tmp_path / "ds", 4)
    data, task, rcfg = configs(csv, tmp_path / "cache")
    done = []

    def interrupted_after_two(*args):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return extract_one(*args)

    monkeypatch.setattr(features_module, "extract_one", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        extract_features(data, task, rcfg, tmp_path, progress=False, log=lambda _: None)
    lines = []
    monkeypatch.setattr(features_module, "extract_one", extract_one)
    table = extract_features(data, task, rcfg, tmp_path, progress=False, log=lines.append)
    assert any("2 in the feature cache" in line and "2 to extract" in line for line in lines)
    assert len(table.features) == 4 and not table.failed


def test_normalised_features_ignore_exposure_and_unnormalised_ones_do_not():
    """radiomics.normalize (the default) z-scores intensities: a darker, lower-contrast copy of an image
    (an exposure / window change, not anatomy) gives the same texture features."""
    image = texture(3).astype(np.float32)
    darker = image * 0.5 + 40.0
    on = extractor_settings(RadiomicsConfig())
    off = extractor_settings(RadiomicsConfig(normalize=False))
    assert on["setting"]["normalize"] is True and on["setting"]["normalizeScale"] == 100.0
    texture_names = [k for k in extract_one(image, None, on) if "_glcm_" in k or "_glszm_" in k]
    a, b = extract_one(image, None, on), extract_one(darker, None, on)
    assert all(np.isclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in texture_names)
    a, b = extract_one(image, None, off), extract_one(darker, None, off)
    assert sum(not np.isclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in texture_names) > len(texture_names) // 2


def test_a_mask_outside_the_data_root_is_refused_in_one_line(tmp_path):
    """As for images (issue 21): a CSV's mask paths must stay inside the dataset unless data.allow_outside_root."""
    from medtransfer.errors import DataError

    csv = make_csv_dataset(tmp_path / "ds", 3, masks=True)
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8)).save(outside)
    frame = pd.read_csv(csv)
    frame.loc[0, "mask"] = str(outside)
    frame.to_csv(csv, index=False)
    data, task, rcfg = configs(csv, tmp_path / "cache", mask_column="mask")
    with pytest.raises(DataError) as caught:
        extract_features(data, task, rcfg, tmp_path / "ds", progress=False, log=lambda _: None)
    message = str(caught.value)
    assert "\n" not in message and "1 of 3 masks outside" in message and str(outside) in message
    allowed = data.model_copy(update={"allow_outside_root": True})
    table = extract_features(allowed, task, rcfg, tmp_path / "ds", progress=False, log=lambda _: None)
    assert "images/img0.png" in table.features.index

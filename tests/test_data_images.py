"""decode_image: every format ends as (size, size) uint8 gray; bad files fail naming the file."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from medtransfer.config import DataConfig, TaskConfig
from medtransfer.data import decode_image, load_source, prepare_data
from medtransfer.errors import DataError


def ramp(h=40, w=40, lo=0, hi=255, dtype=np.uint8):
    """Values rising left to right: easy to check orientation, crop and inversion."""
    row = np.linspace(lo, hi, w)
    return np.tile(row, (h, 1)).astype(dtype)


def write_dicom(path: Path, stored: np.ndarray, photometric="MONOCHROME2", slope=None, intercept=None,
                window=None) -> Path:
    """A minimal valid single-frame DICOM file with 16-bit unsigned pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_8bit_png_kept_as_stored(tmp_path):
    img = ramp()
    Image.fromarray(img).save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png", 40)
    assert out.dtype == np.uint8 and out.shape == (40, 40)
    np.testing.assert_array_equal(out, img)


def test_resize_centre_crops_the_long_side(tmp_path):
    img = np.zeros((40, 80), np.uint8)
    img[:, :20] = 255  # left quarter white: cropped away by a centre crop to 40x40
    img[:, 60:] = 255
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 20)
    assert out.shape == (20, 20)
    assert out.max() == 0


def test_downscale_is_antialiased(tmp_path):
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: point sampling would give all-black or all-white
    Image.fromarray(stripes).save(tmp_path / "s.png")
    out = decode_image(tmp_path / "s.png", 32)
    assert abs(float(out.mean()) - 127.5) < 3 and out.std() < 5


def test_16bit_png_is_min_max_scaled(tmp_path):
    img = ramp(lo=1000, hi=5000, dtype=np.uint16)
    Image.fromarray(img).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # really 16-bit on disk
    out = decode_image(tmp_path / "deep.png", 40)
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)


def test_rgb_and_jpeg_become_gray(tmp_path):
    rgb = np.stack([ramp()] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "c.png", 40), ramp())
    Image.fromarray(ramp(80, 80)).save(tmp_path / "j.jpg", quality=95)
    out = decode_image(tmp_path / "j.jpg", 40)
    assert out.shape == (40, 40)
    assert np.abs(out.astype(int) - ramp(40, 40).astype(int)).mean() < 6


def test_dicom_rescale_then_window(tmp_path):
    # stored 0..1000 -> rescaled -1000..1000; window 0 +- 100 is stored 450..550
    stored = ramp(8, 101, 0, 1000, np.uint16)
    path = write_dicom(tmp_path / "w.dcm", stored, slope=2, intercept=-1000, window=(0, 200))
    out = decode_image(path, 8)  # 8 x 101 -> centre 8x8 crop: stored ~470..540, inside the window
    assert 0 < out.min() < out.max() < 255  # windowed in rescaled units, not saturated
    full = decode_image(write_dicom(tmp_path / "v.dcm", ramp(101, 101, 0, 1000, np.uint16),
                                    slope=2, intercept=-1000, window=(0, 200)), 101)
    assert full[0, 10] == 0 and full[0, 90] == 255 and 100 < full[0, 50] < 156


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = ramp(32, 32, 100, 4000, np.uint16)
    mono2 = decode_image(write_dicom(tmp_path / "m2.dcm", stored), 32)
    mono1 = decode_image(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1",
                                     slope=1, intercept=0), 32)
    assert mono2[0, 0] == 0 and mono2[0, -1] == 255
    np.testing.assert_array_equal(mono1, 255 - mono2)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="nope.png"):
        decode_image(tmp_path / "nope.png", 32)


def test_truncated_png_names_it(tmp_path):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    noise = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        decode_image(tmp_path / "cut.png", 32)
    (tmp_path / "junk.png").write_bytes(b"not an image at all" * 10)
    with pytest.raises(DataError, match="junk.png"):
        decode_image(tmp_path / "junk.png", 32)


def test_csv_source_with_dicom_and_16bit_png(tmp_path):
    """End to end: a CSV naming DICOMs (MONOCHROME1, rescaled) and a 16-bit PNG, string labels."""
    (tmp_path / "img").mkdir()
    write_dicom(tmp_path / "img" / "a.dcm", ramp(48, 48, 0, 3000, np.uint16), photometric="MONOCHROME1")
    write_dicom(tmp_path / "img" / "b.dcm", ramp(48, 64, 0, 1000, np.uint16), slope=2, intercept=-1000)
    Image.fromarray(ramp(64, 48, 0, 60000, np.uint16)).save(tmp_path / "img" / "c.png")
    Image.fromarray(ramp(48, 48)).save(tmp_path / "img" / "d.png")
    (tmp_path / "cases.csv").write_text(
        "file,finding,pid\nimg/a.dcm,malignant,p1\nimg/b.dcm,benign,p1\nimg/c.png,benign,p2\nimg/d.png,malignant,p3\n")
    data = DataConfig(source="csv", path=str(tmp_path / "cases.csv"), image_column="file", patient_column="pid",
                      cache_dir=str(tmp_path / "cache"), split_fractions=(0.6, 0.0, 0.4))
    task = TaskConfig(kind="binary", label_column="finding", positive="malignant")
    src = load_source(data, task, tmp_path)
    assert src.label_names == ["finding=malignant"]
    assert src.labels[:, 0].tolist() == [1, 0, 0, 1]
    prepared = prepare_data(data, task, 24, tmp_path, "all", seed=0, progress=False)
    imgs = np.asarray(prepared.images)
    assert imgs.shape == (4, 24, 24) and imgs.dtype == np.uint8
    assert imgs[0, 0, 0] > imgs[0, 0, -1]  # MONOCHROME1: rising stored values render darker
    assert imgs[1, 0, 0] < imgs[1, 0, -1] and imgs[2, 0, 0] < imgs[2, 0, -1]
    assert imgs[2].min() <= 5 and imgs[2].max() >= 250  # 16-bit stretched to the full range

"""One image file -> one square uint8 gray array at the run's size.

Every format ends in the same place so the rest of the toolkit sees a single kind of
input: 8-bit gray, ``(size, size)``, bright = dense tissue (the radiographic convention).

* PNG / JPEG / other PIL formats: 8-bit gray is kept as stored; 16-bit and float images
  are stretched to 0..255 by the min and max of the image; colour is converted to
  luminance (ITU-R 601, PIL's ``convert("L")``).
* DICOM: the modality LUT (RescaleSlope / RescaleIntercept) and then the VOI LUT or
  window (WindowCenter / WindowWidth) are applied, as a viewer would, before the
  min-max stretch; MONOCHROME1 (bright = low value) is inverted.

Resizing keeps the aspect ratio: the image is centre-cropped to a square on its short
side, then resized with PIL's bicubic filter, which is antialiased when shrinking (the
kernel widens with the reduction factor), so a 1024 px radiograph shrunk to 64 px does not
alias. Cropping rather than padding keeps every output pixel anatomy rather than border;
frontal chest and knee radiographs are close to square, so little is lost.

PIL opens files lazily; ``Image.load()`` is called inside the ``try`` so a truncated or
corrupt file fails here, naming its path, rather than later. ``ImageFile.LOAD_TRUNCATED_IMAGES``
is left at PIL's default (False): a truncated file is an error, never a half-grey image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError

# Bump whenever the pixels decode_image returns change (format handling, filter, crop):
# it is part of the image cache key, so old caches are rebuilt rather than reused.
DECODE_VERSION = 1

RESAMPLE = Image.Resampling.BICUBIC
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}

_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def decode_image(path: Path | str, size: int) -> np.ndarray:
    """Decode one image file to a ``(size, size)`` uint8 array (see the module doc for how)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    gray = read_dicom(path) if is_dicom(path) else read_pil(path, size)
    return square_resize(gray, size)


def is_dicom(path: Path) -> bool:
    """DICOM by its 'DICM' magic at byte 128, or by a DICOM-like suffix."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES


def read_pil(path: Path, size: int | None = None) -> np.ndarray:
    """Any PIL-readable file -> full-resolution 2-D uint8 gray."""
    try:
        with Image.open(path) as img:
            if size is not None:
                img.draft("L", (size, size))  # JPEG only: decode at a reduced scale >= size
            img.load()
            return pil_to_gray(img)
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read image {path}: {one_line(err)}") from None


def pil_to_gray(img: Image.Image) -> np.ndarray:
    """8-bit gray as stored; 16-bit/32-bit/float stretched by min-max; colour -> luminance."""
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode.startswith("I") or img.mode == "F":
        return minmax_uint8(np.asarray(img))
    return np.asarray(img.convert("L"), dtype=np.uint8)


def read_dicom(path: Path) -> np.ndarray:
    """DICOM -> 2-D uint8 gray with modality + VOI LUTs applied and MONOCHROME1 inverted."""
    import pydicom  # lazy: 0.2 s more on `import medtransfer.data` (0.4 s; -X importtime); only DICOM needs it

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise DataError(f"cannot read DICOM {path}: it has {frames} frames; only single-frame 2-D images are supported")
        if arr.ndim == 3 and photometric not in ("MONOCHROME1", "MONOCHROME2"):
            return pil_to_gray(Image.fromarray(minmax_uint8(arr)))  # colour DICOM (RGB after pydicom)
        apply_modality_lut, apply_voi_lut = _pydicom_luts()
        arr = apply_modality_lut(arr, ds)
        arr = apply_voi_lut(arr, ds)
    except DataError:
        raise
    except Exception as err:  # pydicom raises many kinds (InvalidDicomError, missing decoder, bad tags)
        raise DataError(f"cannot read DICOM {path}: {type(err).__name__}: {one_line(err)}") from None
    gray = minmax_uint8(arr)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return gray


def one_line(err: BaseException) -> str:
    """Error text squeezed to one line (the CLI prints errors as a single line)."""
    return " ".join(str(err).split()) or type(err).__name__


def _pydicom_luts():
    """pydicom's LUT functions (lazy with ``read_dicom``'s pydicom import), wherever this pydicom version keeps them."""
    try:  # pydicom >= 3
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def minmax_uint8(arr: np.ndarray) -> np.ndarray:
    """Stretch any numeric array to 0..255 by its own min and max (flat image -> zeros)."""
    arr = np.asarray(arr, dtype=np.float32)
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if not hi > lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def square_resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop a 2-D uint8 image to a square on its short side, then resize (antialiased)."""
    h, w = gray.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = gray[top:top + side, left:left + side]
    if side != size:
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), RESAMPLE))
    return np.ascontiguousarray(crop, dtype=np.uint8)


def resize_stack(pixels: np.ndarray, size: int) -> np.ndarray:
    """(N,H,W) uint8 -> (N,size,size) uint8 with the same crop + filter as ``decode_image``."""
    if pixels.shape[1:] == (size, size):
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    out = np.empty((len(pixels), size, size), dtype=np.uint8)
    for i, img in enumerate(pixels):
        out[i] = square_resize(img, size)
    return out

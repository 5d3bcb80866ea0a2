"""One 2-D image (+ optional mask) -> pyradiomics features, with the settings that made them.

``extractor_settings`` turns a ``RadiomicsConfig`` into pyradiomics' own parameter
structure (``setting`` / ``imageType`` / ``featureClass``, as in a pyradiomics params
file), so the exact dict that drives the extractor is also what gets recorded and hashed.

``extract_one`` always casts the pixels to float32 first: pyradiomics on integer arrays
computes some intermediate values in the input dtype, and under numpy 2 uint8 arithmetic
wraps around silently; float32 is exact for 0..255 and keeps every image on one code path.
A 2-D image is given to pyradiomics as a ``(1, H, W)`` SimpleITK volume with ``force2D``
(texture matrices in the image plane, ``force2Ddimension=0``) and, without a mask, a mask
of ones over the whole image (label 1). Pixel spacing is 1: PNGs carry no physical size,
so ``resampled_pixel_spacing`` is in pixels of the decoded image.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from functools import lru_cache

import numpy as np

from ..config import RadiomicsConfig, canonical_json
from ..errors import ConfigError, MedtransferError

FEATURES_VERSION = 1  # bump when what extract_one computes changes for the same settings (it is hashed)
LABEL = 1
QUIET = 60  # above CRITICAL: pyradiomics logs per feature class and would flood a 1,000-image run


def radiomics_module():
    """The ``radiomics`` package (pyradiomics-bhklab), silenced; a clear error when missing."""
    try:
        import radiomics
        from radiomics import featureextractor  # noqa: F401  (fail here, not mid-run)
    except ImportError as err:
        raise MedtransferError(f"radiomics features need pyradiomics ({err}); pip install pyradiomics-bhklab") from None
    _silence(radiomics)
    return radiomics


def _silence(radiomics) -> None:
    radiomics.setVerbosity(QUIET)  # the stderr handler pyradiomics installs
    logging.getLogger("radiomics").setLevel(QUIET)  # and skip building the records at all


def extractor_settings(rcfg: RadiomicsConfig) -> dict:
    """The pyradiomics parameter dict for ``rcfg`` (validated by building an extractor once)."""
    setting: dict = {
        "force2D": True,
        "force2Ddimension": 0,
        "label": LABEL,
        "additionalInfo": False,  # no diagnostics_* entries: they are not features
    }
    if rcfg.normalize:
        setting["normalize"] = True
        setting["normalizeScale"] = float(rcfg.normalize_scale)
    if rcfg.bin_count is not None:
        setting["binCount"] = int(rcfg.bin_count)
    else:
        setting["binWidth"] = float(rcfg.bin_width)
    if rcfg.resampled_pixel_spacing is not None:
        spacing = [float(s) for s in rcfg.resampled_pixel_spacing]
        if len(spacing) != 2 or min(spacing) <= 0:
            raise ConfigError("radiomics.resampled_pixel_spacing must be two positive pixel sizes [x, y] "
                              f"(in pixels of the decoded image), got {rcfg.resampled_pixel_spacing}")
        setting["resampledPixelSpacing"] = spacing + [0.0]  # 0 = keep the single slice's spacing
    params = {
        "setting": setting,
        "imageType": {name: _image_type_args(name, args) for name, args in rcfg.image_types.items()},
        "featureClass": {name: [] for name in rcfg.feature_classes},  # [] = every feature of the class
    }
    _validate(params)
    return params


def _image_type_args(name: str, args: dict | None) -> dict:
    args = dict(args or {})
    if "sigma" in args:  # YAML `sigma: [1, 3]` gives ints; pyradiomics' schema wants floats
        sigma = args["sigma"] if isinstance(args["sigma"], (list, tuple)) else [args["sigma"]]
        args["sigma"] = [float(s) for s in sigma]
    if name == "LoG" and not args.get("sigma"):
        raise ConfigError("radiomics.image_types.LoG needs sigma (filter widths in pixels), e.g. LoG: {sigma: [1.0, 3.0]}")
    return args


def _validate(params: dict) -> None:
    radiomics = radiomics_module()
    unknown = [t for t in params["imageType"] if t not in radiomics.getImageTypes()]
    if unknown or not params["imageType"]:
        raise ConfigError(f"radiomics.image_types: unknown image type(s) {unknown}; valid: {', '.join(sorted(radiomics.getImageTypes()))}")
    try:
        _extractor(canonical_json(params))
    except Exception as err:  # pykwalify SchemaError / ValueError with multi-line text
        text = " ".join(str(err).split())[:300]
        raise ConfigError(f"radiomics settings rejected by pyradiomics: {text}") from None


def settings_hash(settings: dict) -> str:
    """Hex digest of a settings dict: equal settings -> equal hash, independent of key order."""
    return hashlib.blake2b(canonical_json(settings).encode(), digest_size=16).hexdigest()


@lru_cache(maxsize=4)
def _extractor(params_json: str):
    """One extractor per settings per process (building one validates the schema: ~15 ms)."""
    radiomics = radiomics_module()
    with warnings.catch_warnings():  # pykwalify loads pyradiomics' schema code with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        return radiomics.featureextractor.RadiomicsFeatureExtractor(json.loads(params_json))


def extract_one(image: np.ndarray, mask: np.ndarray | None, settings: dict) -> dict[str, float]:
    """Features of one 2-D image; ``mask`` (same shape, nonzero = ROI) or None for the whole image.

    ``settings`` is ``extractor_settings(...)`` or a recorded settings dict holding it under
    ``"pyradiomics"``. Raises (ValueError etc., from pyradiomics) when the image cannot be
    measured, e.g. an empty mask; callers that process many images catch this per image.
    """
    import SimpleITK as sitk

    params = settings.get("pyradiomics", settings)
    pixels = np.asarray(image)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    roi = np.ones(pixels.shape, dtype=np.uint8) if mask is None else (np.asarray(mask) != 0).astype(np.uint8)
    if roi.shape != pixels.shape:
        raise ValueError(f"mask shape {roi.shape} differs from image shape {pixels.shape}")
    if not roi.any():
        raise ValueError("the mask is empty")
    volume = sitk.GetImageFromArray(pixels.astype(np.float32)[None])  # the float32 guard
    label_map = sitk.GetImageFromArray(roi[None] * np.uint8(params["setting"].get("label", LABEL)))
    raw = _extractor(canonical_json(params)).execute(volume, label_map)
    return {name: float(value) for name, value in raw.items() if not name.startswith("diagnostics_")}


def quiet_worker() -> None:
    """Process-pool initializer: silence pyradiomics and keep ITK to one thread per process
    (N processes x N ITK threads would oversubscribe the cores)."""
    import SimpleITK as sitk

    radiomics_module()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)

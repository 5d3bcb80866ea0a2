"""A dataset -> a table of radiomics features per image, in parallel, cached, tolerant of bad images.

Images come through the data layer (``load_source`` + the image cache), so radiomics sees
exactly the pixels a CNN run at the same size sees. ``radiomics.image_size: null`` means
the native size: the short side of the FIRST image of the source (its file header, or the
shipped array), capped at ``radiomics.max_size``; every image is then centre-cropped and
resized to that square like ``decode_image`` does.

One image that cannot be read or measured must not cost the whole dataset: it is logged
and listed in ``FeatureTable.failed`` by image id, and the others are kept. The image
cache is all-or-nothing (it raises on the first unreadable file), so when it cannot be
built, or when only a few images are still missing from the feature cache, each image is
decoded on its own in the extraction workers instead (same ``decode_image``, same pixels).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..config import DataConfig, RadiomicsConfig, RunConfig, TaskConfig
from ..data import decode_image, load_source
from ..data.cache import cache_file, cached_images, resolve_cache_dir
from ..data.images import DECODE_VERSION, is_dicom, one_line
from ..data.records import LabelledImages
from ..data.sources.csv import check_inside_root
from ..errors import ConfigError, DataError
from ..parallel import map_chunks
from . import features
from .cache import ID, FeatureCache, fingerprints, write_parquet_atomic

IN_PROCESS_MAX = 8  # below this many images, starting worker processes costs more than it saves
HEADER_TRIES = 20   # images whose header is tried when finding the native size


@dataclass
class FeatureTable:
    """Features per image; failed images are named in ``failed`` and absent from ``features``."""

    image_ids: list[str]       # every image of the source, in prepare_data's order
    features: pd.DataFrame     # index image_id, float64 columns named as pyradiomics names them
    failed: dict[str, str]     # image_id -> reason
    settings: dict             # pyradiomics parameters + image size, mask, versions (hashed for the cache)


def extract_features(data: DataConfig, task: TaskConfig, rcfg: RadiomicsConfig, data_root: Path,
                     progress: bool = True, log: Callable[[str], None] = print) -> FeatureTable:
    """Features of every image of ``data``, computed where the feature cache has none."""
    params = features.extractor_settings(rcfg)
    data_root = Path(data_root)
    src = load_source(data, task, data_root)
    masks = mask_paths(src, data, rcfg, data_root)
    size, size_note = resolve_image_size(src, rcfg)
    log(f"radiomics: {size_note}")
    settings = {
        "pyradiomics": params,
        "pyradiomics_version": features.radiomics_module().__version__,
        "image_size": size,
        "mask": f"column {rcfg.mask_column}" if rcfg.mask_column else "whole image",
        "input_dtype": "float32",
        "decode_version": DECODE_VERSION,
        "features_version": features.FEATURES_VERSION,
    }
    cache_dir = resolve_cache_dir(data.cache_dir, data_root)
    fcache = FeatureCache(cache_dir / "radiomics", src.dataset_key, settings)
    prints = fingerprints(src, masks)
    rows = fcache.lookup(src.image_ids, prints)
    todo = [i for i, image_id in enumerate(src.image_ids) if image_id not in rows]
    log(f"radiomics: {len(src)} images, {len(rows)} in the feature cache {fcache.path}, {len(todo)} to extract")

    failed: dict[str, str] = {}
    if todo:
        items = _work_items(src, todo, masks, size, cache_dir, data.workers, progress, log)

        def collect(pos: int, feats: dict | None, reason: str | None) -> None:
            image_id = src.image_ids[pos]
            if feats is None:
                failed[image_id] = reason
                log(f"radiomics: {image_id} failed: {reason}")
            else:
                rows[image_id] = feats
                fcache.add(image_id, prints[pos], feats)

        try:
            run_extraction(items, size, params, rcfg.workers, progress, collect)
        finally:
            fcache.flush()  # a partial run keeps what it computed

    kept = [i for i in src.image_ids if i in rows]
    if not kept:
        first = next(iter(failed.items()))
        raise DataError(f"radiomics: no image of {src.dataset_key} could be measured; e.g. {first[0]}: {first[1]}")
    frame = pd.DataFrame.from_records([rows[i] for i in kept], index=pd.Index(kept, name=ID)).astype(np.float64)
    log(f"radiomics: {len(kept)} images x {frame.shape[1]} features, {len(failed)} failed")
    return FeatureTable(image_ids=list(src.image_ids), features=frame, failed=failed, settings=settings)


def extract_to_parquet(cfg: RunConfig, out: Path, data_root: Path, progress: bool = True,
                       log: Callable[[str], None] | None = None) -> str:
    """``medtransfer radiomics extract``: write the features to ``out`` and return a one-line summary."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    table = extract_features(cfg.data, cfg.task, cfg.radiomics, Path(data_root), progress=progress, log=log)
    write_feature_table(table, Path(out))
    seconds = time.perf_counter() - started
    return (f"{len(table.features)} images x {table.features.shape[1]} radiomics features -> {out} "
            f"({len(table.failed)} failed{': ' + ', '.join(list(table.failed)[:5]) if table.failed else ''}) "
            f"in {seconds:.1f} s")


def write_feature_table(table: FeatureTable, path: Path) -> None:
    """Parquet: an ``image_id`` column + one float64 column per feature; settings and failures in
    the file's metadata (``medtransfer.radiomics.settings`` / ``.failed``, JSON)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table.features, path, {
        b"medtransfer.radiomics.settings": json.dumps(table.settings, sort_keys=True).encode(),
        b"medtransfer.radiomics.failed": json.dumps(table.failed).encode(),
    })


# --- inputs: size, masks --------------------------------------------------------------------

def resolve_image_size(src: LabelledImages, rcfg: RadiomicsConfig) -> tuple[int, str]:
    """``radiomics.image_size``, or the native size of the first image capped at ``max_size``."""
    if rcfg.image_size is not None:
        return rcfg.image_size, f"images at radiomics.image_size={rcfg.image_size} px"
    if src.paths is None:
        native, where = min(np.shape(src.pixels)[1:3]), "the shipped arrays"
    else:
        native, where = None, None
        for path in src.paths[:HEADER_TRIES]:
            try:
                native, where = min(image_shape(Path(path))), Path(path).name
                break
            except DataError:
                continue
        if native is None:
            raise DataError(f"radiomics.image_size=null: none of the first {HEADER_TRIES} images of {src.dataset_key} "
                            "has a readable header to take the native size from; set radiomics.image_size")
    size = min(native, rcfg.max_size)
    capped = f", capped at radiomics.max_size={rcfg.max_size}" if size < native else ""
    return size, f"images at {size} px (native size {native} px of {where}{capped})"


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        if is_dicom(path):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        from PIL import Image

        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except Exception as err:  # PIL / pydicom / OSError: the caller decides whether this is fatal
        raise DataError(f"cannot read the header of {path}: {one_line(err)}") from None


def mask_paths(src: LabelledImages, data: DataConfig, rcfg: RadiomicsConfig, data_root: Path) -> list[Path] | None:
    """Per-image mask files from ``radiomics.mask_column`` of a csv source (paths as for images: relative ones
    start at ``data.image_root``, else the CSV's folder)."""
    if rcfg.mask_column is None:
        return None
    if data.source != "csv":
        raise ConfigError(f"radiomics.mask_column is for data.source=csv; the {data.source} source has no mask column")
    if rcfg.mask_column not in src.columns:
        raise DataError(f"{data.path}: no column {rcfg.mask_column!r} (radiomics.mask_column); available columns: "
                        f"{', '.join(src.columns)}")
    values = src.columns[rcfg.mask_column]
    empty = sum(1 for v in values if not v)
    if empty:
        raise DataError(f"{data.path}: column {rcfg.mask_column!r} (radiomics.mask_column) is empty in {empty} row(s)")
    paths = [Path(p) if Path(p).is_absolute() else src.files_root / p for p in values]
    # as for images: a shared CSV must not read files outside the dataset (the same check, the same opt-out)
    check_inside_root(values, paths, src.csv_file, data, data_root, [],
                      column=f"{rcfg.mask_column!r} (radiomics.mask_column)")
    return paths


def load_mask(mask_path: Path, image_path: Path, size: int) -> np.ndarray:
    """A mask file -> (size, size) bool, cropped and resized (nearest) like its image; nonzero = ROI."""
    from PIL import Image

    if not mask_path.is_file():
        raise DataError(f"mask file not found: {mask_path}")
    try:
        if is_dicom(mask_path):
            import pydicom

            raw = pydicom.dcmread(mask_path).pixel_array
        else:
            with Image.open(mask_path) as img:
                img.load()
                raw = np.asarray(img)
    except Exception as err:
        raise DataError(f"cannot read mask {mask_path}: {one_line(err)}") from None
    roi = raw.any(axis=-1) if raw.ndim == 3 else raw != 0
    image_hw = image_shape(image_path)
    if roi.shape != image_hw:
        raise DataError(f"mask {mask_path} is {roi.shape[0]}x{roi.shape[1]} px but its image {image_path.name} "
                        f"is {image_hw[0]}x{image_hw[1]} px")
    h, w = roi.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(roi[top:top + side, left:left + side].astype(np.uint8) * 255)
    return np.asarray(crop.resize((size, size), Image.Resampling.NEAREST)) > 0


# --- the parallel loop ----------------------------------------------------------------------

def _work_items(src, todo, masks, size, cache_dir, workers, progress, log) -> list[tuple]:
    """(position, pixels reference, mask path, image path) per image to extract.

    The image cache is used when it exists or when most images are needed; otherwise, or
    when it cannot be built because a file is unreadable, each file is decoded on its own.
    """
    use_stack = src.paths is None or cache_file(src, size, cache_dir).is_file() or len(todo) > len(src) // 2
    stack = None
    if use_stack:
        try:
            stack = str(cached_images(src, size, cache_dir, workers=workers, progress=progress).filename)
        except DataError as err:
            if src.paths is None:
                raise
            log(f"radiomics: image cache not built ({err}); decoding each image on its own so unreadable ones are skipped")
    items = []
    for pos in todo:
        image_path = None if src.paths is None else str(src.paths[pos])
        pixels = ("stack", stack, pos) if stack else ("file", image_path, pos)
        items.append((pos, pixels, None if masks is None else str(masks[pos]), image_path))
    return items


_STACKS: dict[str, np.ndarray] = {}


def _pixels(ref: tuple, size: int) -> np.ndarray:
    kind, where, row = ref
    if kind == "file":
        return decode_image(where, size)
    if where not in _STACKS:
        _STACKS[where] = np.load(where, mmap_mode="r")
    return np.asarray(_STACKS[where][row])


def extract_chunk(items: list[tuple], size: int, params: dict) -> list[tuple[int, dict | None, str | None]]:
    """Worker task: (position, features or None, failure reason or None) per item."""
    out = []
    for pos, ref, mask_path, image_path in items:
        try:
            image = _pixels(ref, size)
            mask = None if mask_path is None else load_mask(Path(mask_path), Path(image_path), size)
            out.append((pos, features.extract_one(image, mask, params), None))
        except DataError as err:
            out.append((pos, None, str(err)))
        except Exception as err:  # pyradiomics raises ValueError, RuntimeError, ... per image
            out.append((pos, None, f"{type(err).__name__}: {one_line(err)}"))
    return out


def run_extraction(items: list[tuple], size: int, params: dict, workers: int, progress: bool,
                   collect: Callable[[int, dict | None, str | None], None]) -> None:
    """Run ``extract_chunk`` over ``items`` in-process or in a process pool, with a progress bar.

    A worker that dies (e.g. killed for memory) fails its chunk's images, not the extraction.
    """
    def failed_chunk(chunk, err):
        reason = f"worker process failed: {type(err).__name__}: {one_line(err)}"
        return [(item[0], None, reason) for item in chunk]

    # >= 8 chunks per worker balances the tail; <= 32 images per chunk keeps the bar moving
    for _, _, results in map_chunks(partial(extract_chunk, size=size, params=params), items,
                                    label="radiomics features", workers=workers, progress=progress,
                                    in_process_max=IN_PROCESS_MAX, max_chunk=32,
                                    initializer=features.quiet_worker, on_error=failed_chunk):
        for result in results:
            collect(*result)

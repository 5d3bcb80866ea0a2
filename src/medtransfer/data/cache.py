"""The image cache: every image decoded once per (dataset, size), kept as one uint8 ``.npy``.

Decoding thousands of PNG/DICOM files is the slowest part of a small-data run, and a
study repeats runs (seeds x N x recipes) on the same images. So the decoded stack is
stored as ONE contiguous ``(N, S, S)`` uint8 array per (dataset, size) and opened with
``np.load(mmap_mode="r")``: a later run maps it in milliseconds, and the training loop can
copy it to the accelerator in one transfer.

The stacks live in the user's cache folder (``resolve_cache_dir``), shared by every dataset: the key
hashes the dataset key (its resolved CSV / folder / file, and a csv source's ``data.image_root``), the
ordered file list with each file's path, size and mtime
(or the pixels themselves for sources that ship arrays), the size and ``DECODE_VERSION``:
any change to the files or to decoding gives a new key instead of stale pixels.
A build writes to a temporary file in the same folder and renames it into place only when
complete, so a killed build never leaves a half-written cache behind.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..parallel import map_chunks
from .images import DECODE_VERSION, decode_image, resize_stack
from .records import LabelledImages

DEFAULT_CACHE_DIR = Path("~/.cache/medtransfer/images")
CACHE_ENV = "MEDTRANSFER_CACHE"   # the image cache folder, for all datasets (data.cache_dir beats it)
IN_PROCESS_MAX = 256  # below this many files, starting worker processes costs more than it saves


def cache_key(source: LabelledImages, size: int) -> str:
    """Hex digest identifying the decoded stack of ``source`` at ``size``."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{source.dataset_key}\n{size}\n{DECODE_VERSION}\n{len(source)}\n".encode())
    if source.paths is not None:
        for image_id, path in zip(source.image_ids, source.paths):
            try:
                st = os.stat(path)
            except OSError:
                raise DataError(f"image file not found: {path}") from None
            h.update(f"{image_id}\t{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    else:
        pixels = np.ascontiguousarray(source.pixels)
        h.update(f"{pixels.shape}{pixels.dtype}\n".encode())
        h.update(memoryview(pixels).cast("B"))
    return h.hexdigest()


def cache_file(source: LabelledImages, size: int, cache_dir: Path) -> Path:
    """``<cache_dir>/<source>-<size>px-<key>.npy`` (readable name, exact key)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.dataset_key.split(":", 1)[0]) or "images"
    return Path(cache_dir) / f"{name}-{size}px-{cache_key(source, size)[:20]}.npy"


def cached_images(source: LabelledImages, size: int, cache_dir: Path, workers: int = 0,
                  progress: bool = True) -> np.ndarray:
    """The ``(N, size, size)`` uint8 stack of ``source``, memory-mapped; built on first use."""
    path = cache_file(source, size, cache_dir)
    existing = _open_if_valid(path, (len(source), size, size))
    if existing is not None:
        return existing
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    sweep_dead_temp_files(Path(cache_dir))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    try:
        if source.paths is None:
            np.save(tmp, resize_stack(_gray_stack(source.pixels), size))
        else:
            _decode_into(tmp, [Path(p) for p in source.paths], size, workers, progress)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def sweep_dead_temp_files(cache_dir: Path) -> int:
    """Remove half-built caches (``.<name>.<pid>.tmp.npy``) whose writer process is gone (killed)."""
    removed = 0
    for tmp in cache_dir.glob(".*.tmp.npy"):
        pid = tmp.name.rsplit(".", 3)[-3]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def _open_if_valid(path: Path, shape: tuple[int, int, int]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # unreadable: rebuilt (and atomically replaced) by the caller
    return arr if arr.shape == shape and arr.dtype == np.uint8 else None


def _gray_stack(pixels: np.ndarray) -> np.ndarray:
    """(N,H,W) or (N,H,W,3) -> (N,H,W) uint8; colour -> ITU-R 601 luminance like PIL."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 4:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[: pixels.shape[-1]]
        pixels = np.rint(pixels[..., : len(weights)].astype(np.float32) @ (weights / weights.sum()))
    if pixels.ndim != 3:
        raise DataError(f"expected a stack of 2-D images, got an array of shape {pixels.shape}")
    return np.clip(pixels, 0, 255).astype(np.uint8, copy=False)


def _decode_chunk(paths: list[Path], size: int) -> np.ndarray:
    """Worker task: decode a run of files (one task per chunk keeps inter-process traffic low)."""
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = decode_image(p, size)
    return out


def _decode_into(tmp: Path, paths: list[Path], size: int, workers: int, progress: bool) -> None:
    """Decode every file into a fresh ``.npy`` at ``tmp``, in-process or in worker processes."""
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size))
    for start, _, block in map_chunks(partial(_decode_chunk, size=size), paths, label="decoding images",
                                      workers=workers, progress=progress, in_process_max=IN_PROCESS_MAX,
                                      min_chunk=16, max_chunk=256):
        out[start:start + len(block)] = block
    out.flush()
    del out


def resolve_cache_dir(configured: str | None, data_root: Path) -> Path:
    """The folder for cache files.

    ``data.cache_dir`` (absolute, or relative to the data root) must be writable. Unset, the cache goes to
    the user's cache folder (:func:`user_cache_dir`), never into the data root: data is often shared or
    read-only, and a cache beside it would be copied, synced or backed up with it. Every dataset shares
    that folder safely because a cache file's key holds the dataset and each file's resolved path.
    """
    if configured:
        path = Path(configured).expanduser()
        path = path if path.is_absolute() else Path(data_root) / path
        if not _writable(path):
            raise DataError(f"data.cache_dir is not writable: {path}")
        return path
    path = user_cache_dir()
    if not _writable(path):
        raise DataError(f"the image cache folder {path} is not writable; set data.cache_dir (or $MEDTRANSFER_CACHE) "
                        "to a writable folder")
    return path


def user_cache_dir() -> Path:
    """``$MEDTRANSFER_CACHE``, else ``$XDG_CACHE_HOME/medtransfer/images``, else ``~/.cache/medtransfer/images``
    (an XDG_CACHE_HOME that is not absolute is ignored, as the XDG spec says)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "medtransfer" / "images"
    return DEFAULT_CACHE_DIR.expanduser()


def _writable(folder: Path) -> bool:
    """Can we create files in ``folder`` (creating it if needed)?

    A folder whose mode grants write to nobody (``r-x``) counts as read-only by intent even
    for root, who could write there anyway: shared read-only data must stay untouched.
    """
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if not os.stat(probe).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return False
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
        return True
    except OSError:
        return False

"""Backbone features computed once: a frozen backbone's pooled features of a dataset's images, kept in the
user's cache folder so every probe and every frozen head of a study reads them instead of running the backbone
again.

A frozen backbone in eval mode maps an image to the same features at every step of every epoch of every run
that starts from the same weights, so a probe (``train.strategy: probe``) or a frozen head trained without
augmentation needs one forward pass per image, ever. The features are keyed by what can change them
(``FeatureKey``): the architecture, the backbone's weights themselves (a digest of its parameters and buffers,
so a scratch backbone of one seed, an ImageNet file, a checkpoint and torchxrayvision's weights are each their
own, whatever path or name they were loaded by), the image size, the input normalisation and
``FEATURE_VERSION``, the images (the image cache file, whose name carries the hash of the files it was decoded
from), and the precision of the pass (fp32 on a CPU, bf16 autocast on CUDA: they differ by rounding).

Storage: ``<image cache folder>/features/<arch>-<size>px-<key>/`` holds ``key.json`` (the key, readable) and
shards ``rows-<digest>.npz``, each the features of some rows (positions in the image array). A run reads the
shards, computes only the rows still missing and writes them as one new shard through a temporary file renamed
into place: a reader never sees half a shard, and two runs of a parallel study that compute the same rows at
once write the same numbers twice, nothing worse.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.cache import sweep_dead_temp_files
from ..kinds import TaskKind
from ..models.inputs import GREY_MEAN, GREY_STD
from .augment import normalise
from .device import batch_layout, device_autocast, place_model, release_model
from .inputs import check_images, scores_from_logits, to_device
from .tracks import HeadInputs

FEATURE_VERSION = 1          # bump when the pass changes what it computes (the key changes, old shards are unused)
FEATURE_BATCH = 128          # images per forward pass (a fixed size: the features must not depend on train keys)
FEATURES_DIR = "features"    # under the image cache folder
PREPROCESSING = f"grey (x/255 - {GREY_MEAN}) / {GREY_STD}; v{FEATURE_VERSION}"


@dataclass(frozen=True)
class FeatureKey:
    """What a backbone's features of a set of images depend on (see the module docstring)."""
    arch: str
    weights: str        # blake2b of the backbone's parameters and buffers
    image_size: int
    preprocessing: str
    images: str         # the image cache file's name, or a digest of the images' bytes
    precision: str      # "fp32" or "bf16-autocast"

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def folder(self, root: Path) -> Path:
        arch = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.arch)
        return Path(root) / f"{arch}-{self.image_size}px-{self.digest()[:20]}"


@dataclass(frozen=True)
class FeatureTable:
    """Features of some rows of an image array: ``values[i]`` belongs to row ``rows[i]`` (rows sorted, unique)."""
    rows: np.ndarray
    values: np.ndarray

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The features of ``rows`` (any order, repeats allowed); a KeyError names a row the table lacks."""
        rows = np.asarray(rows, dtype=np.int64)
        pos = np.searchsorted(self.rows, rows)
        ok = (pos < len(self.rows)) & (self.rows[np.minimum(pos, len(self.rows) - 1)] == rows) if len(self.rows) \
            else np.zeros(len(rows), dtype=bool)
        if not ok.all():
            raise KeyError(f"no cached features for image row {int(rows[~ok][0])}")
        return self.values[pos]

    def head_inputs(self, train_rows: np.ndarray, val_rows: np.ndarray) -> HeadInputs:
        """``fit``'s ``features`` for a fit on ``train_rows`` validated on ``val_rows``."""
        return HeadInputs(self.take(train_rows), self.take(val_rows))


def weights_digest(module: nn.Module) -> str:
    """A digest of what a module computes with: its parameters and every buffer (names, dtypes, shapes and values;
    non-persistent buffers too, e.g. a published backbone's input normalisation, which the state dict leaves out)
    and each submodule's ``extra_repr`` (e.g. the adapter's resize size and interpolation)."""
    h = hashlib.blake2b(digest_size=16)
    tensors = dict(module.named_parameters())
    tensors.update(dict(module.named_buffers()))
    for name, tensor in sorted(tensors.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for name, sub in module.named_modules():
        h.update(f"{name}\t{type(sub).__name__}({sub.extra_repr()})\n".encode())
    return h.hexdigest()


def images_identity(images: np.ndarray) -> str:
    """The image cache file's name (it holds the hash of what it was decoded from, ``data.cache``), or for an
    array that is no cache file a digest of its bytes."""
    filename = getattr(images, "filename", None)
    if filename and isinstance(images, np.memmap) and images.shape == getattr(images.base, "shape", images.shape):
        return f"file:{Path(filename).name}:{images.shape}"
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{images.shape}{images.dtype}\n".encode())
    h.update(memoryview(np.ascontiguousarray(images)).cast("B"))
    return f"bytes:{h.hexdigest()}"


def feature_key(model: nn.Module, images: np.ndarray, device: torch.device) -> FeatureKey:
    """The key of ``model``'s backbone features of ``images`` on ``device``."""
    precision = "bf16-autocast" if device.type == "cuda" else "fp32"
    return FeatureKey(arch=str(getattr(model, "arch", type(model).__name__)), weights=weights_digest(model.backbone),
                      image_size=int(images.shape[-1]), preprocessing=PREPROCESSING, images=images_identity(images),
                      precision=precision)


def backbone_features(model: nn.Module, images: np.ndarray, device: torch.device,
                      batch_size: int = FEATURE_BATCH) -> np.ndarray:
    """The backbone's pooled features (n, F) float32 of uint8 (n, S, S) images: eval mode, no gradients, the
    device's layout and precision (what a frozen backbone computes inside a training step)."""
    check_images(images, "images to featurise")
    was_training = model.training
    place_model(model, device)
    model.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = batch_layout(normalise(to_device(images[start:start + batch_size], device)), device)
                with device_autocast(device):
                    chunks.append(model.backbone(x).float().reshape(len(x), -1).cpu())
    finally:
        release_model(model, device)
        model.train(was_training)
    if not chunks:
        return np.zeros((0, int(getattr(model, "num_features", 0))), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


def head_scores(model: nn.Module, features: np.ndarray, task_kind: TaskKind, device: torch.device,
                batch_size: int = 1024) -> np.ndarray:
    """Probabilities from backbone features through the model's head alone: what ``predict`` gives for the
    images those features came from, without running the backbone."""
    model.to(device).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(features[start:start + batch_size])).to(device)
            with device_autocast(device):
                logits = model.head(x).float()
            out.append(scores_from_logits(logits, task_kind).cpu())
    if not out:
        return np.zeros((0, model.head[-1].out_features), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def cached_features(model: nn.Module, images: np.ndarray, rows: np.ndarray, device: torch.device, cache_root: Path,
                    log: Callable[[str], None] = print) -> FeatureTable:
    """The backbone features of ``images[rows]``: read from the feature cache under ``cache_root``, the missing
    rows computed in one pass and stored; the log says which."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if not len(rows):
        return FeatureTable(rows, np.zeros((0, int(model.num_features)), dtype=np.float32))
    key = feature_key(model, images, device)
    folder = key.folder(cache_root)
    values, have = _read_shards(folder, rows)
    missing = rows[~have]
    if not len(missing):
        log(f"features: all {len(rows)} images' backbone features read from the feature cache {folder}; none "
            "computed (no backbone pass)")
        return FeatureTable(rows, values)
    started = time.perf_counter()
    computed = backbone_features(model, np.asarray(images[missing]), device)
    seconds = time.perf_counter() - started
    if values is None:
        values = np.empty((len(rows), computed.shape[1]), dtype=np.float32)
    values[~have] = computed
    stored = _write_shard(folder, key, missing, computed)
    read = f"{int(have.sum())} read from the feature cache, " if have.any() else ""
    where = f"stored in the feature cache {folder}" if stored else f"not stored ({folder} is not writable)"
    log(f"features: {len(rows)} images' backbone features: {read}{len(missing)} computed in {seconds:.1f} s and "
        f"{where}")
    return FeatureTable(rows, values)


def _read_shards(folder: Path, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """The cached features of ``rows`` (sorted) and which of them were found; an unreadable shard (a disk
    error, another version's layout) is skipped, so its rows are computed again."""
    have = np.zeros(len(rows), dtype=bool)
    values = None
    for shard in sorted(folder.glob("rows-*.npz")) if folder.is_dir() else []:
        try:
            with np.load(shard) as z:
                got_rows, got = np.asarray(z["rows"], dtype=np.int64), np.asarray(z["features"], dtype=np.float32)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            continue
        if got.ndim != 2 or len(got) != len(got_rows) or (values is not None and got.shape[1] != values.shape[1]):
            continue
        if values is None:
            values = np.empty((len(rows), got.shape[1]), dtype=np.float32)
        pos = np.searchsorted(rows, got_rows)
        hit = (pos < len(rows)) & (rows[np.minimum(pos, len(rows) - 1)] == got_rows)
        values[pos[hit]] = got[hit]
        have[pos[hit]] = True
        if have.all():
            break
    return values, have


def _write_shard(folder: Path, key: FeatureKey, rows: np.ndarray, features: np.ndarray) -> bool:
    """One shard, atomically (temporary file, then rename); False when the folder cannot be written."""
    name = hashlib.blake2b(rows.tobytes(), digest_size=8).hexdigest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sweep_dead_temp_files(folder)
        _write_atomic(folder / "key.json", json.dumps(asdict(key), indent=1).encode())
        tmp = folder / f".rows-{name}.{os.getpid()}.tmp.npy"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, rows=rows, features=features)
            os.replace(tmp, folder / f"rows-{name}.npz")
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def _write_atomic(path: Path, payload: bytes) -> None:
    if path.is_file():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

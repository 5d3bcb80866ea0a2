"""The feature cache: one parquet file per (dataset, settings), one row per image.

Extraction is the slow part of the radiomics baseline, and a study asks for the same
features once per (N, seed). Rows are keyed by image id and carry a fingerprint of the
image's file (size + mtime, or the pixels' hash for sources that ship arrays), so an
edited file is re-extracted rather than served stale. The file name hashes the dataset
key and the full settings (pyradiomics parameters, image size, mask, versions).

The file is rewritten as a whole (temporary file + rename) every ``FLUSH_EVERY_S`` during a
run and at its end, under an advisory lock that merges with what another process wrote
meanwhile: a killed run keeps every flushed row, and two runs never leave a torn file.
Failed images are not cached: they are retried on the next run.
"""
from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.records import LabelledImages
from .features import settings_hash

ID, FINGERPRINT = "image_id", "fingerprint"
SETTINGS_KEY = b"medtransfer.radiomics.settings"
FLUSH_EVERY_S = 20.0


def fingerprints(source: LabelledImages, masks: list[Path] | None = None) -> list[str]:
    """Per image: file size + mtime (+ the mask file's), or a hash of the shipped pixels."""
    if source.paths is None:
        import hashlib

        pixels = np.ascontiguousarray(source.pixels)
        return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in pixels]
    out = []
    for i, path in enumerate(source.paths):
        parts = [_stat(path)] + ([_stat(masks[i])] if masks is not None else [])
        out.append("|".join(parts))
    return out


def _stat(path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


class FeatureCache:
    """Rows of features per image id for one (dataset, settings); see the module doc."""

    def __init__(self, folder: Path, dataset_key: str, settings: dict):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_key.split(":", 1)[0]) or "images"
        key = settings_hash({"dataset": dataset_key, "settings": settings})
        self.path = Path(folder) / f"{name}-{settings.get('image_size', 'x')}px-{key[:20]}.parquet"
        self.settings = settings
        self._frame = _read(self.path)
        self._pending: list[dict] = []
        self._last_flush = time.monotonic()

    def lookup(self, image_ids: list[str], prints: list[str]) -> dict[str, dict[str, float]]:
        """Cached features of the images whose fingerprint still matches."""
        frame = self._frame
        if frame is None or not len(frame):
            return {}
        wanted = dict(zip(image_ids, prints))
        rows = frame[frame[FINGERPRINT].to_numpy() == frame.index.map(wanted).to_numpy()]
        feats = rows.drop(columns=[FINGERPRINT])
        return {i: r for i, r in zip(feats.index, feats.to_dict("records"))}

    def add(self, image_id: str, fingerprint: str, features: dict[str, float]) -> None:
        self._pending.append({ID: image_id, FINGERPRINT: fingerprint, **features})
        if time.monotonic() - self._last_flush > FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Merge pending rows with the file on disk (newest wins) and replace it atomically."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        new = pd.DataFrame.from_records(self._pending).set_index(ID)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(self.path.name + ".lock")):
            on_disk = _read(self.path)
            merged = new if on_disk is None else pd.concat([on_disk.drop(index=new.index, errors="ignore"), new])
            write_parquet_atomic(merged, self.path, {SETTINGS_KEY: json.dumps(self.settings, sort_keys=True).encode()})
        self._frame = merged
        self._pending = []


def _read(path: Path) -> pd.DataFrame | None:
    """The cached rows, or None when absent or unreadable (then rebuilt and replaced)."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception:  # a damaged cache is only a lost speed-up
        return None
    if ID not in frame.columns or FINGERPRINT not in frame.columns:
        return None
    return frame.set_index(ID)


def write_parquet_atomic(frame: pd.DataFrame, path: Path, metadata: dict[bytes, bytes]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _locked(lock_path: Path):
    """An exclusive advisory lock (POSIX); elsewhere no lock, the rename still keeps files whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

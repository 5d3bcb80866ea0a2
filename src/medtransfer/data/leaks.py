"""Do two datasets share patients or images? By patient id where the ids mean the same thing, and by pixels always.

A pretraining source that holds the target's patients or images makes a transfer study measure
memory. Ids alone miss the common cases: the same NIH image in a 1024 px release and a 64 px
subset lives in two folders, and a renamed copy has another name. So every pair of datasets is
also compared by content.

The content hash is a 16x16 thumbnail: the image decoded as a run decodes it (gray, centre crop,
antialiased bicubic) at 16 px, which is simply the image cache at 16 px (``data.cache``). It is
built once per dataset, kept beside the run-size caches and memory-mapped on every later check,
so a rerun costs a stat of each file and no decoding; the cache key (file list, sizes, mtimes,
``DECODE_VERSION``) keeps it fresh, and older caches need nothing: the 16 px one is added
the first time a check needs it. Two images match when their thumbnails differ by at most
``PIXEL_RMS_MAX`` gray levels (root mean square): exact copies differ by 0, and the three
nih14-fullres originals against their nih14-mini copies (resized by another tool) by 0.51-0.64.
Two different images rarely come that close: over the 499,500 pairs of nih14-mini's 1,000
images the closest distinct pair (follow-ups 00000109_005/006 of one patient) differs by 4.56,
and no pair by 2 or less. Thumbnails with almost no structure (std below ``FLAT_STD_MIN``:
blank or constant frames) are left out, since all such frames would match each other.
What this cannot see: an image cropped, flipped, inverted or re-windowed differently.

Patient ids are compared only where both datasets use the same id space: nih14 with nih14
(``Patient ID``, any folder), or two csv sources naming the same patient column. Two unrelated
csv files that happen to call their column alike are compared too; ``allow_overlap`` opts out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DataConfig
from .cache import cached_images, resolve_cache_dir
from .records import LabelledImages

THUMB_SIZE = 16
PIXEL_RMS_MAX = 2.0
FLAT_STD_MIN = 2.0
MAX_PAIRS = 500_000_000    # above this many image pairs (about 25 s of products here), only exact thumbnails match
BLOCK = 2048               # source thumbnails compared at once (BLOCK x target floats in memory)
NAMED = 3


@dataclass
class Overlap:
    """What a source shares with a target: patient ids, and (source image, target image) pairs by pixels."""
    patients: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)
    patient_space: str | None = None        # what patients were compared by; None: not comparable
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.patients or self.images)

    def counts(self) -> str:
        """'3 patient(s) (nih14 Patient ID) and 3 image(s) (by pixels)'."""
        who = f" ({self.patient_space})" if self.patient_space else " (no shared patient id space)"
        return f"{len(self.patients)} patient(s){who} and {len(self.images)} image(s) (by pixels)"

    def examples(self) -> str:
        """The first few shared patients and image pairs, for a one-line message."""
        parts = []
        if self.patients:
            parts.append("patients " + _first(self.patients))
        if self.images:
            parts.append("images " + _first([f"{a} = {b}" for a, b in self.images]))
        return "; ".join(parts)


def _first(items: list[str]) -> str:
    more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
    return ", ".join(items[:NAMED]) + more


def dataset_label(data: DataConfig) -> str:
    """A short name for a dataset in messages: the folder its path names (a file's folder), else its name."""
    if not data.path:
        return str(data.name or data.source)
    path = Path(data.path)
    return (path.parent.name or path.stem) if path.suffix else path.name


def patient_space(data: DataConfig) -> str | None:
    """The id space a config's patient ids live in, or None when they say nothing outside the dataset."""
    if data.source == "nih14":
        return "nih14 Patient ID"
    if data.source == "csv" and data.patient_id_column:
        return f"csv column {data.patient_id_column!r}"
    return None


def thumbnails(src: LabelledImages, data: DataConfig, data_root: Path) -> np.ndarray:
    """The (N, 16, 16) uint8 content hashes of ``src``: its image cache at 16 px (built on first use)."""
    cache_dir = resolve_cache_dir(data.cache_dir, data_root)
    return cached_images(src, THUMB_SIZE, cache_dir, workers=data.workers, progress=len(src) > 1000)


def pixel_matches(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """(i, j) for every thumbnail a[i] within ``PIXEL_RMS_MAX`` of b[j] (flat thumbnails left out).

    Squared distances come from one matrix product per block (|a|^2 + |b|^2 - 2ab) on values
    centred at 0, so every term is an integer below 2^24 and float32 is exact.
    """
    fa, fb = _centred(a), _centred(b)
    keep_a, keep_b = np.flatnonzero(fa.std(axis=1) >= FLAT_STD_MIN), np.flatnonzero(fb.std(axis=1) >= FLAT_STD_MIN)
    fa, fb = fa[keep_a], fb[keep_b]
    if len(a) * len(b) > MAX_PAIRS:
        return _exact_matches(fa, fb, keep_a, keep_b)
    limit = PIXEL_RMS_MAX ** 2 * fa.shape[1]
    sq_b = (fb ** 2).sum(axis=1)
    out = []
    for start in range(0, len(fa), BLOCK):
        block = fa[start:start + BLOCK]
        dist = (block ** 2).sum(axis=1)[:, None] + sq_b[None, :] - 2 * block @ fb.T
        for i, j in zip(*np.nonzero(dist <= limit)):
            out.append((int(keep_a[start + i]), int(keep_b[j])))
    return out


def _centred(thumbs: np.ndarray) -> np.ndarray:
    return np.asarray(thumbs, dtype=np.float32).reshape(len(thumbs), -1) - 128.0


def _exact_matches(fa: np.ndarray, fb: np.ndarray, keep_a: np.ndarray, keep_b: np.ndarray) -> list[tuple[int, int]]:
    """Pairs with identical thumbnails only: what two very large datasets can afford (renamed copies, not resizes)."""
    index: dict[bytes, list[int]] = {}
    for j, row in zip(keep_b, fb):
        index.setdefault(row.tobytes(), []).append(int(j))
    return [(int(i), j) for i, row in zip(keep_a, fa) for j in index.get(row.tobytes(), [])]


def find_overlap(source: LabelledImages, source_data: DataConfig, target: LabelledImages, target_data: DataConfig,
                 data_root: Path) -> Overlap:
    """Every patient (where comparable) and every image (by pixels) that ``source`` shares with ``target``."""
    out = Overlap()
    space = patient_space(source_data)
    if space is not None and space == patient_space(target_data) and source.has_patient_ids and target.has_patient_ids:
        out.patient_space = space
        shared = set(np.asarray(source.patient_ids).astype(str)) & set(np.asarray(target.patient_ids).astype(str))
        out.patients = sorted(shared, key=lambda p: (len(p), p))
    if len(source) * len(target) > MAX_PAIRS:
        out.notes.append(f"{len(source)} x {len(target)} images: compared by exact 16 px thumbnails only "
                         "(a resized copy is not caught)")
    pairs = pixel_matches(thumbnails(source, source_data, data_root), thumbnails(target, target_data, data_root))
    out.images = sorted((source.image_ids[i], target.image_ids[j]) for i, j in pairs)
    return out

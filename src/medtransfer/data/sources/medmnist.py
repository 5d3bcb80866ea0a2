"""MedMNIST 2-D datasets from the medmnist package's ``.npz`` files (Yang et al., 2023).

The file is looked for in ``<data_root>/<file>``, ``<data_root>/medmnist/<file>`` and
``<data_root>/<flag>/<file>``. When absent it is downloaded through the medmnist package,
unless ``MEDTRANSFER_OFFLINE=1``; a failed or skipped download names the exact path to put
the file at, so an offline machine is one copy away from working.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...config import DEMO_DATA, DataConfig, TaskConfig, demo_note
from ...errors import ConfigError, DataError
from ...kinds import TaskKind
from ..images import one_line
from ..records import SPLIT_NAMES, LabelledImages

SIZES = (28, 64, 128, 224)
DOWNLOAD_TIMEOUT_S = 30


def medmnist_info() -> dict:
    """``medmnist.INFO`` (imported lazily: the package pulls in torch, 2 s with -X importtime, which
    ``import medtransfer.data`` (0.4 s, no torch) would otherwise pay)."""
    try:
        from medmnist import INFO
    except ImportError as err:
        raise DataError(f"data.source=medmnist needs the medmnist package ({err}); pip install medmnist") from None
    return INFO


def flag_info(flag: str) -> dict:
    info = medmnist_info()
    flags_2d = sorted(f for f in info if not f.endswith("3d"))
    if flag not in flags_2d:
        raise ConfigError(f"data.name: unknown MedMNIST 2-D dataset {flag!r}; valid: {', '.join(flags_2d)}")
    return info[flag]


def npz_name(flag: str, size: int | None) -> str:
    if size in (None, 28):
        return f"{flag}.npz"
    if size not in SIZES:
        raise ConfigError(f"data.size={size}: MedMNIST ships sizes {', '.join(map(str, SIZES))}")
    return f"{flag}_{size}.npz"


def candidate_paths(flag: str, size: int | None, data_root: Path) -> list[Path]:
    name = npz_name(flag, size)
    return [data_root / name, data_root / "medmnist" / name, data_root / flag / name]


def offline() -> bool:
    return os.environ.get("MEDTRANSFER_OFFLINE", "").strip().lower() in ("1", "true", "yes")


@contextmanager
def _socket_timeout(seconds: float):
    """Bound every socket operation of the download so a dead network cannot hang a run."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def locate_or_download(flag: str, size: int | None, data_root: Path) -> Path:
    """The npz path: found on disk, or downloaded into ``data_root`` by the medmnist package."""
    candidates = candidate_paths(flag, size, data_root)
    for path in candidates + [DEMO_DATA / npz_name(flag, size)]:
        if path.is_file():
            return path
    target = candidates[0]
    where = f"place it at {target}"
    if offline():
        raise DataError(f"MedMNIST file {target.name} not found and MEDTRANSFER_OFFLINE=1 forbids downloading: {where}")
    info = flag_info(flag)
    try:
        import medmnist   # lazy, as in medmnist_info

        data_root.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            getattr(medmnist, info["python_class"])(split="train", download=True, root=str(data_root), size=size)
    except Exception as err:  # medmnist wraps every failure in a RuntimeError with a long text
        url = info.get(f"url{'' if size in (None, 28) else f'_{size}'}", "")
        first = str(err).strip().splitlines()[0].strip() if str(err).strip() else type(err).__name__
        raise DataError(f"MedMNIST file {target.name} could not be downloaded ({first}): download {url} and {where}") from None
    if not target.is_file():
        raise DataError(f"MedMNIST download did not produce {target}: {where}")
    return target


def task_labels(raw: np.ndarray, info: dict, flag: str, task: TaskConfig) -> tuple[np.ndarray, list[str]]:
    """MedMNIST labels -> the contract's layout, checking the task fits the dataset."""
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    kind = info["task"]
    if kind.startswith("multi-label"):
        if task.kind == TaskKind.MULTILABEL:
            chosen = list(task.labels) if task.labels else names
            _check_names(chosen, names, "task.labels", flag)
            return raw[:, [names.index(n) for n in chosen]].astype(np.float32), chosen
        if task.kind == TaskKind.BINARY:
            if not task.positive:
                raise ConfigError(f"task.positive is required for a binary task on {flag}; valid: {', '.join(names)}")
            _check_names([task.positive], names, "task.positive", flag)
            return raw[:, [names.index(task.positive)]].astype(np.float32), [task.positive]
        raise ConfigError(f"task.kind=multiclass does not fit {flag} (multi-label); use multilabel or binary")
    y = raw.reshape(len(raw), -1)[:, 0].astype(np.int64)
    if kind == "binary-class" and task.kind == TaskKind.BINARY:
        return y[:, None].astype(np.float32), [names[1]]
    if task.kind == TaskKind.MULTICLASS:
        return y, names
    raise ConfigError(f"task.kind={task.kind} does not fit {flag} ({kind}, classes: {', '.join(names)}); use "
                      + ("binary or multiclass" if kind == "binary-class" else "multiclass"))


def _check_names(chosen, names, key, flag) -> None:
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ConfigError(f"{key}: unknown {flag} label(s) {unknown}; valid: {', '.join(names)}")


def load_medmnist(data: DataConfig, task: TaskConfig, data_root: Path) -> LabelledImages:
    """All three official splits of one MedMNIST flag, pixels in memory, gray."""
    flag = data.name.strip().lower()
    info = flag_info(flag)
    path = locate_or_download(flag, data.size, Path(data_root))
    try:
        with np.load(path) as npz:
            parts = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in SPLIT_NAMES}
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"cannot read MedMNIST file {path}: {one_line(err)}") from None
    pixels = np.concatenate([parts[s][0] for s in SPLIT_NAMES])
    if pixels.ndim == 4:  # RGB flags: ITU-R 601 luminance, as PIL's convert("L")
        pixels = np.rint(pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    raw = np.concatenate([parts[s][1] for s in SPLIT_NAMES])
    labels, names = task_labels(raw, info, flag, task)
    split = np.concatenate([np.full(len(parts[s][0]), s) for s in SPLIT_NAMES])
    image_ids = [f"{s}/{i}" for s in SPLIT_NAMES for i in range(len(parts[s][0]))]
    return LabelledImages(
        image_ids=image_ids,
        paths=None,
        pixels=np.ascontiguousarray(pixels, dtype=np.uint8),
        patient_ids=np.asarray(image_ids, dtype=str),
        has_patient_ids=False,
        labels=labels,
        label_names=names,
        given_split=split.astype(str),
        dataset_key=f"medmnist:{path.resolve()}",
        notes=demo_note(path, data_root),
    )

"""Input checks, device tensors, batching, the loss and the validation AUROC.

Shared by ``fit`` and ``lr_find``. The whole uint8 image array goes to the device as one
tensor and every batch is an index into it: for the small datasets this tool targets
(a few thousand images at most) that beats a DataLoader by far and needs no workers.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..kinds import TaskKind

TASK_KINDS = tuple(TaskKind)
POS_WEIGHT_RANGE = (0.01, 100.0)   # keeps a nearly-empty label from dominating the loss


def check_task_kind(task_kind: TaskKind) -> None:
    if task_kind not in TASK_KINDS:
        raise DataError(f"task kind must be one of {', '.join(TASK_KINDS)}, got {task_kind!r}")


def check_images(images: np.ndarray, what: str) -> None:
    """Images must be (N,S,S) uint8, as the data layer's cache stores them."""
    if not isinstance(images, np.ndarray) or images.ndim != 3 or images.dtype != np.uint8:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataError(f"{what}: expected a (N,S,S) uint8 array, got shape {shape} dtype {dtype}")


def check_labels(labels: np.ndarray, n: int, task_kind: TaskKind, what: str) -> np.ndarray:
    """Labels as the loss wants them: float (N,K) for multilabel/binary, int64 (N,) for multiclass."""
    labels = np.asarray(labels)
    if len(labels) != n:
        raise DataError(f"{what}: {len(labels)} labels for {n} images")
    if task_kind == TaskKind.MULTICLASS:
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{what}: multiclass labels must be (N,) integers, got shape {labels.shape} dtype {labels.dtype}")
        if n and labels.min() < 0:
            raise DataError(f"{what}: multiclass labels must be >= 0, got {labels.min()}")
        return labels.astype(np.int64)
    if task_kind == TaskKind.BINARY and labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise DataError(f"{what}: {task_kind} labels must be (N,K) 0/1, got shape {labels.shape}")
    labels = labels.astype(np.float32)
    if n and not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"{what}: {task_kind} labels must be 0 or 1")
    return labels


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """One host->device copy of the whole array (reads a memory-mapped cache once)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def pos_weight(labels: np.ndarray) -> np.ndarray:
    """Per-label negatives/positives, so rare findings are not ignored; 1 where a label has no positives."""
    labels = np.asarray(labels, dtype=np.float64)
    pos = labels.sum(axis=0)
    neg = len(labels) - pos
    w = np.divide(neg, pos, out=np.ones_like(pos), where=pos > 0)
    return np.clip(w, *POS_WEIGHT_RANGE).astype(np.float32)


def make_criterion(task_kind: TaskKind, train_labels: np.ndarray, device: torch.device) -> nn.Module:
    """BCE-with-logits weighted by ``pos_weight`` (multilabel/binary) or cross-entropy (multiclass)."""
    if task_kind == TaskKind.MULTICLASS:
        return nn.CrossEntropyLoss()
    return nn.BCEWithLogitsLoss(pos_weight=torch.from_numpy(pos_weight(train_labels)).to(device))


def scores_from_logits(logits: torch.Tensor, task_kind: TaskKind) -> torch.Tensor:
    """Sigmoid per label (multilabel/binary) or softmax over classes (multiclass)."""
    return logits.softmax(dim=1) if task_kind == TaskKind.MULTICLASS else logits.sigmoid()


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A seeded shuffle of 0..n-1 (on the generator's device) cut into ceil(n/batch_size) near-equal batches.

    Near-equal batches use every image each epoch without a tiny last batch (a
    1-image batch would break BatchNorm and make a noisy step).
    """
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return torch.tensor_split(perm, max(1, -(-n // batch_size)))


class BatchStream:
    """Batches drawn pass after pass (a fresh seeded shuffle per pass), taken a round at a time.

    A round may end inside a pass; the next round goes on with the same shuffle, so every image
    is used once per pass whatever the round length. With rounds of one epoch this draws exactly
    the batches the per-epoch loop drew.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self._pending: list[torch.Tensor] = []

    def take(self, steps: int) -> Iterator[torch.Tensor]:
        for _ in range(steps):
            if not self._pending:
                self._pending = list(batch_indices(self.n, self.batch_size, self.generator))
            yield self._pending.pop(0)

"""Ordinary training: ``fit`` one model on one train/val split, ``predict`` with it.

Built for small datasets on one device: the images live on the device as one uint8
tensor, batches are seeded index draws into it, normalisation and augmentation happen
on the device. ``fit`` is one track driven by ``train.driver`` with the ``OneModel`` step;
the device's choices (bf16 autocast and channels_last on CUDA, fp32 with deterministic
kernels on the CPU, so the same seed gives the same numbers) are ``train.device``'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError
from ..kinds import TaskKind
from .augment import normalise
from .device import defers_loss_check, device_autocast, reproducible, seed_everything
from .driver import DrivePlan, Step, drive
from .inputs import check_images, check_task_kind, scores_from_logits, to_device
from .tracks import FitResult, FitSpec, HeadInputs, Track, check_inputs, open_track


class OneModel(Step):
    """One model's step, as ``fit`` takes it: augment the batch, forward (bf16 autocast and channels_last
    on CUDA), loss. The update is the driver's."""

    def losses(self, tracks: list[Track], batches: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.loss(t, idx) for t, idx in zip(tracks, batches)]

    @staticmethod
    def loss(t: Track, idx: torch.Tensor) -> torch.Tensor:
        x = t.data.inputs.train_batch(t, idx)    # images (augmented as configured), or cached backbone features
        with device_autocast(t.device):
            logits = t.data.inputs.logits(t.model, x)
        return t.data.criterion(logits.float(), t.data.t_train[idx])


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    """``fit``'s keyword arguments."""
    task_kind: TaskKind
    cfg: TrainConfig
    device: torch.device
    log: Callable[[str], None] = print
    val_metric: Callable[[np.ndarray, np.ndarray], float] | None = None
    on_step: Callable[[int, int], None] | None = None
    features: HeadInputs | None = None


def _defers_loss_check(device: torch.device) -> bool:
    """``fit``'s reading of ``device.defers_loss_check``, looked up when ``fit`` runs, so a test can drive the
    GPU's deferred loss check on a CPU by replacing this one function (tests/test_train_fit.py)."""
    return defers_loss_check(device)


def fit(model: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
        val_images: np.ndarray, val_labels: np.ndarray, **options) -> FitResult:
    """Train ``model`` with ``cfg``'s strategy and LR policy; keep and restore its best val epoch.

    ``options`` (``FitOptions``): ``task_kind``, ``cfg`` (TrainConfig) and ``device`` are required;
    ``log`` (default print), ``val_metric(y_true, scores)`` (default the macro AUROC) and
    ``on_step(done, total)``, called after every optimiser step (a progress bar's hook; ``total``
    assumes no early stop), and ``features`` (``HeadInputs``: the frozen backbone's features of the training and
    validation images; a frozen fit without augmentation then trains its head on them, the backbone never runs).

    The best epoch is the one with the highest val macro AUROC (ties: lower val loss);
    early stopping (``cfg.patience``) ends a stage after that many epochs without
    improvement. Raises TrainingDiverged as soon as the loss is NaN or infinite.
    """
    opts = FitOptions(**options)
    spec = FitSpec(model, train_images, train_labels, val_images, val_labels, opts.cfg, opts.log, opts.val_metric,
                   opts.features)
    labels = check_inputs(spec, opts.task_kind)
    seed_everything(opts.cfg.seed)
    with reproducible(opts.device):
        track = open_track(spec, labels, opts.task_kind, opts.device)
        plan = DrivePlan.of(opts.cfg, len(train_images), opts.task_kind, _defers_loss_check(opts.device),
                            on_step=opts.on_step)
        (result,) = drive([track], OneModel(), plan)
    if isinstance(result, Exception):
        raise result
    return result


def predict(model: nn.Module, images: np.ndarray, task_kind: TaskKind, batch_size: int,
            device: torch.device) -> np.ndarray:
    """Probabilities: sigmoid (N,K) for multilabel/binary, softmax (N,C) for multiclass.

    Batches are copied to the device one at a time, so a large test set need not fit there.
    """
    check_task_kind(task_kind)
    check_images(images, "images to predict")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    model.to(device).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = normalise(to_device(images[start:start + batch_size], device))
            with device_autocast(device):
                logits = model(x).float()
            out.append(scores_from_logits(logits, task_kind).cpu())
    if not out:
        n_out = getattr(getattr(model, "head", [None])[-1], "out_features", 0)
        return np.zeros((0, n_out), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)

"""What one model's fit is made of: its inputs, its fit in progress (a *track*) and what it returns.

``train.driver`` moves any number of tracks through stages and rounds: one for ``fit``, K for a
packed fit (``train.packed``), one without validation images for the LR range test. Everything a
track needs is set up here, once, for all three: the checks of the inputs, the device tensors, the
loss, the seeded batch generator and the best-round tracker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..budget import Budget
from ..config import TrainConfig
from ..errors import ConfigError, DataError
from ..evaluate.metrics import macro_auroc
from ..kinds import Strategy, TaskKind
from .augment import normalise, prepare_batch
from .device import batch_layout, cpu_state, place_model
from .inputs import BatchStream, check_images, check_labels, check_task_kind, make_criterion, to_device

NO_VAL_NOTE = "no validation images: the last epoch is kept and early stopping is off"


@dataclass(frozen=True)
class HeadInputs:
    """The frozen backbone's features of a fit's training and validation images (rows aligned with the images):
    given to ``fit``, the head trains on them and the backbone never runs (``train.features``)."""
    train: np.ndarray     # (n_train, F) float32
    val: np.ndarray       # (n_val, F) float32


@dataclass
class FitSpec:
    """One run to train: its model (built with its init), its images and labels, and its own TrainConfig."""
    model: nn.Module
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    cfg: TrainConfig
    log: Callable[[str], None] = print
    val_metric: Callable[[np.ndarray, np.ndarray], float] | None = None
    features: HeadInputs | None = None    # cached backbone features: the head alone trains on them


@dataclass
class FitResult:
    """What a fit returns: the best round's weights, the record of every round and why it stopped."""
    best_state: dict[str, torch.Tensor]    # state_dict at the best val epoch (CPU tensors)
    history: list["EpochRecord"]            # one record per epoch run
    lr_trace: list[list[float]]             # per optimiser step: LR of (early, late, head); 0.0 = frozen
    epochs_run: int
    best_epoch: int
    stopped_reason: str
    notes: list[str] = field(default_factory=list)
    budget: Budget | None = None            # the step plan it trained under


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a fit, as metrics.json's ``history`` stores it (``to_dict``)."""
    epoch: int
    stage: str
    train_loss: float
    val_loss: float
    val_auroc_macro: float
    lrs: list[float]
    seconds: float

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "stage": self.stage, "train_loss": self.train_loss, "val_loss": self.val_loss,
                "val_auroc_macro": self.val_auroc_macro, "lrs": list(self.lrs), "seconds": self.seconds}


class BestEpoch:
    """Keeps the best validation epoch's weights and counts epochs without improvement.

    Best = highest val AUROC, ties broken by lower val loss; with no validation set every
    epoch is "best", so the last one is kept. ``reset_patience`` starts the count anew for a
    new gradual-unfreezing stage (the best weights are kept across stages).
    """

    def __init__(self, has_val: bool):
        self.has_val = has_val
        self.key: tuple[float, float] | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch = 0
        self.stale = 0

    def update(self, model: nn.Module, record: EpochRecord) -> bool:
        auroc, loss = record.val_auroc_macro, record.val_loss
        key = (auroc if math.isfinite(auroc) else -math.inf, -loss if math.isfinite(loss) else -math.inf)
        if not self.has_val or self.key is None or key > self.key:
            self.key, self.state, self.epoch, self.stale = key, cpu_state(model), record.epoch, 0
            return True
        self.stale += 1
        return False

    def out_of_patience(self, patience: int | None) -> bool:
        return self.has_val and patience is not None and self.stale >= patience

    def reset_patience(self) -> None:
        self.stale = 0


class ImageBatches:
    """What a track's inputs are, and how they reach the logits (the loop's one pluggable input path): by default
    uint8 images, normalised (and augmented in training) on the device and passed through the whole model."""

    def train_batch(self, t: "Track", idx: torch.Tensor) -> torch.Tensor:
        return batch_layout(prepare_batch(t.data.x_train[idx], t.cfg.augment, t.data.generator), t.device)

    def eval_batch(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        return batch_layout(normalise(x), device)

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)


class FeatureBatches(ImageBatches):
    """Cached backbone features (``HeadInputs``) in place of images: only the head runs. A frozen backbone stays
    in eval mode throughout a fit (``strategies.set_trainable``), so its features are the same at every step and
    the head's logits, loss and gradients are those of the image path without augmentation."""

    def train_batch(self, t: "Track", idx: torch.Tensor) -> torch.Tensor:
        return t.data.x_train[idx]

    def eval_batch(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        return x

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.head(x)


@dataclass
class FitData:
    """The tensors and objects every round of one track uses (on the device)."""
    x_train: torch.Tensor
    t_train: torch.Tensor
    x_val: torch.Tensor
    t_val: torch.Tensor
    y_val: np.ndarray
    criterion: nn.Module
    generator: torch.Generator     # batches and augmentation draws, seeded with the run's seed
    metric: Callable[[np.ndarray, np.ndarray], float]
    inputs: ImageBatches = field(default_factory=ImageBatches)


@dataclass(eq=False)   # identity: a pack finds a member's slot and a round's losses by the track itself
class Track:
    """One model's fit in progress: what a single fit would keep in local variables, so K can share a driver."""
    spec: FitSpec
    data: FitData
    stream: BatchStream
    best: BestEpoch
    history: list[EpochRecord] = field(default_factory=list)
    lr_trace: list[list[float]] = field(default_factory=list)
    epoch: int = 0
    in_stage: bool = True
    stopped_reason: str | None = None
    stages_cut: list[str] = field(default_factory=list)
    error: Exception | None = None
    optimizer: torch.optim.Optimizer | None = None
    index: list[int | None] | None = None     # param-group index of (early, late, head); None = frozen
    scheduler: object = None                  # None: the LR is set by the step (the range test)

    @property
    def model(self) -> nn.Module:
        return self.spec.model

    @property
    def cfg(self) -> TrainConfig:
        return self.spec.cfg

    @property
    def device(self) -> torch.device:
        return self.data.x_train.device

    def log(self, line: str) -> None:
        self.spec.log(line)

    @property
    def running(self) -> bool:
        """Neither diverged nor stopped early in its last stage."""
        return self.error is None and self.stopped_reason is None

    @property
    def notes(self) -> list[str]:
        return [] if self.best.has_val else [NO_VAL_NOTE]


def check_inputs(spec: FitSpec, task_kind: TaskKind, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Fail before anything trains on images or labels that cannot be used; the labels as the loss wants them.

    ``prefix`` names the run in the messages (a pack member, the range test).
    """
    check_task_kind(task_kind)
    check_images(spec.train_images, f"{prefix}train images")
    check_images(spec.val_images, f"{prefix}val images")
    if len(spec.train_images) == 0:
        raise DataError(f"{prefix}train images: the training subset is empty")
    if len(spec.val_images) and spec.val_images.shape[1:] != spec.train_images.shape[1:]:
        raise DataError(f"{prefix}val images are {spec.val_images.shape[1:]} but train images are "
                        f"{spec.train_images.shape[1:]}")
    if spec.features is not None:
        _check_features(spec, prefix)
    return (check_labels(spec.train_labels, len(spec.train_images), task_kind, f"{prefix}train labels"),
            check_labels(spec.val_labels, len(spec.val_images), task_kind, f"{prefix}val labels"))


def _check_features(spec: FitSpec, prefix: str) -> None:
    """Cached features stand for the images only where the backbone stays frozen and no image is augmented."""
    if spec.cfg.strategy != Strategy.FROZEN or spec.cfg.augment:
        raise ConfigError(f"{prefix}cached backbone features train a head only with train.strategy=frozen and "
                          f"train.augment=false (got {spec.cfg.strategy}, augment={spec.cfg.augment})")
    for split, feats, images in (("train", spec.features.train, spec.train_images),
                                 ("val", spec.features.val, spec.val_images)):
        if np.ndim(feats) != 2 or len(feats) != len(images):
            raise DataError(f"{prefix}{split} features: expected one row per image ({len(images)}), "
                            f"got shape {np.shape(feats)}")


def check_outputs(model: nn.Module, sample: torch.Tensor, labels: np.ndarray, task_kind: TaskKind,
                  inputs: ImageBatches | None = None) -> None:
    """Fail before training when the head does not fit the labels."""
    inputs = inputs or ImageBatches()
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        n_out = inputs.logits(model, inputs.eval_batch(sample, sample.device)).shape[1]
    model.train(was_training)
    if task_kind == TaskKind.MULTICLASS:
        needed = int(labels.max()) + 1 if len(labels) else 0
        if n_out < needed:
            raise ConfigError(f"model has {n_out} outputs but the labels hold class index {needed - 1}")
    elif n_out != labels.shape[1]:
        raise ConfigError(f"model has {n_out} outputs but the task has {labels.shape[1]} label(s)")


def open_track(spec: FitSpec, labels: tuple[np.ndarray, np.ndarray], task_kind: TaskKind,
               device: torch.device) -> Track:
    """The model on the device in its training layout, the images there as one uint8 tensor each, the loss,
    the seeded generator (its draws stay on the device) and the best-round tracker: a track ready to train.

    ``labels``: ``check_inputs``'s (train, val) labels.
    """
    y_train, y_val = labels
    place_model(spec.model, device)
    x_train, x_val = (spec.train_images, spec.val_images) if spec.features is None else \
        (spec.features.train, spec.features.val)
    data = FitData(x_train=to_device(x_train, device), t_train=to_device(y_train, device),
                   x_val=to_device(x_val, device), t_val=to_device(y_val, device), y_val=y_val,
                   criterion=make_criterion(task_kind, y_train, device),
                   generator=torch.Generator(device=device).manual_seed(spec.cfg.seed),
                   metric=spec.val_metric or (lambda y, s: macro_auroc(y, s, task_kind)),
                   inputs=ImageBatches() if spec.features is None else FeatureBatches())
    check_outputs(spec.model, data.x_train[:2], y_train, task_kind, data.inputs)
    return Track(spec=spec, data=data, stream=BatchStream(len(spec.train_images), spec.cfg.batch_size, data.generator),
                 best=BestEpoch(has_val=len(spec.val_images) > 0))

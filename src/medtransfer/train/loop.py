"""The training loop: ``fit`` one model on one train/val split, ``predict`` with it.

Built for small datasets on one device: the images live on the device as one uint8
tensor, batches are seeded index draws into it, normalisation and augmentation happen
on the device. On CUDA the forward pass runs in bf16 autocast with channels_last; on
CPU it runs in fp32 with deterministic algorithms, so the same seed gives the same
numbers (what a recipe comparison needs to be trusted).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError, DataError, TrainingDiverged
from .augment import normalise, prepare_batch
from .device import cpu_state, device_autocast, reproducible, seed_everything
from ..budget import Budget, budget_of
from ..evaluate.metrics import macro_auroc
from .inputs import (BatchStream, check_images, check_labels, check_task_kind, make_criterion,
                     scores_from_logits, to_device)
from .lr_policies import make_scheduler
from .strategies import GROUP_NAMES, N_GROUPS, build_optimizer, group_lr_row, set_trainable, stages


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]    # state_dict at the best val epoch (CPU tensors)
    history: list["EpochRecord"]            # one record per epoch run
    lr_trace: list[list[float]]             # per optimiser step: LR of (early, late, head); 0.0 = frozen
    epochs_run: int
    best_epoch: int
    stopped_reason: str
    notes: list[str] = field(default_factory=list)
    budget: Budget | None = None            # the step plan it trained under


def check_outputs(model: nn.Module, sample: torch.Tensor, labels: np.ndarray, task_kind: str) -> None:
    """Fail before training when the head does not fit the labels."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        n_out = model(normalise(sample)).shape[1]
    model.train(was_training)
    if task_kind == "multiclass":
        needed = int(labels.max()) + 1 if len(labels) else 0
        if n_out < needed:
            raise ConfigError(f"model has {n_out} outputs but the labels hold class index {needed - 1}")
    elif n_out != labels.shape[1]:
        raise ConfigError(f"model has {n_out} outputs but the task has {labels.shape[1]} label(s)")


def _diverged(value: float, epoch: int, step: int, lr: float) -> TrainingDiverged:
    kind = "nan" if math.isnan(value) else "inf"
    return TrainingDiverged(f"loss became {kind} at epoch {epoch} step {step} (lr={lr:.3g})")


def _defers_loss_check(device: torch.device) -> bool:
    """On a GPU, step s's loss is checked after step s+1 is queued: reading it at once would stall."""
    return device.type != "cpu"


def _train_round(model, optimizer, scheduler, index, batches, images, labels, criterion, generator,
                 cfg: TrainConfig, device, epoch: int, lr_trace: list,
                 on_step: Callable[[], None] | None = None) -> float:
    """The optimiser steps of one validation round (``batches``: index tensors); returns the mean training loss."""
    channels_last = device.type == "cuda"
    defer = _defers_loss_check(device)
    pending = None
    weighted, seen = [], 0
    for step, idx in enumerate(batches, 1):
        lrs = group_lr_row(optimizer, index)
        lr_trace.append(lrs)
        idx = idx.to(device, non_blocking=True)
        x = prepare_batch(images[idx], cfg.augment, generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with device_autocast(device):
            logits = model(x)
        loss = criterion(logits.float(), labels[idx])
        if not defer:
            value = loss.item()
            if not math.isfinite(value):
                raise _diverged(value, epoch, step, max(lrs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if defer:
            if pending is not None and not math.isfinite(v := pending[0].item()):
                raise _diverged(v, epoch, *pending[1:])
            pending = (loss.detach(), step, max(lrs))
        weighted.append(loss.detach() * len(idx))
        seen += len(idx)
        if on_step is not None:
            on_step()
    if pending is not None and not math.isfinite(v := pending[0].item()):
        raise _diverged(v, epoch, *pending[1:])
    return torch.stack(weighted).sum().item() / seen


def _evaluate(model, images, labels, criterion, task_kind: str, batch_size: int, device) -> tuple[float, np.ndarray]:
    """Mean loss and scores (probabilities) over a held-out set, no augmentation."""
    model.eval()
    total = torch.zeros((), device=device)
    scores = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = normalise(images[start:start + batch_size])
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with device_autocast(device):
                logits = model(x).float()
            y = labels[start:start + batch_size]
            total += criterion(logits, y) * len(y)
            scores.append(scores_from_logits(logits, task_kind))
    return total.item() / len(images), torch.cat(scores).float().cpu().numpy()


def fit(model: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
        val_images: np.ndarray, val_labels: np.ndarray, *, task_kind: str, cfg: TrainConfig,
        device: torch.device, log: Callable[[str], None] = print,
        val_metric: Callable[[np.ndarray, np.ndarray], float] | None = None,
        on_step: Callable[[int, int], None] | None = None) -> FitResult:
    """Train ``model`` with ``cfg``'s strategy and LR policy; keep and restore its best val epoch.

    ``on_step(done, total)`` is called after every optimiser step (a progress bar's hook;
    ``total`` assumes no early stop).

    The best epoch is the one with the highest val macro AUROC (ties: lower val loss);
    early stopping (``cfg.patience``) ends a stage after that many epochs without
    improvement. Raises TrainingDiverged as soon as the loss is NaN or infinite.
    """
    check_task_kind(task_kind)
    check_images(train_images, "train images")
    check_images(val_images, "val images")
    if len(train_images) == 0:
        raise DataError("train images: the training subset is empty")
    if len(val_images) and val_images.shape[1:] != train_images.shape[1:]:
        raise DataError(f"val images are {val_images.shape[1:]} but train images are {train_images.shape[1:]}")
    y_train = check_labels(train_labels, len(train_images), task_kind, "train labels")
    y_val = check_labels(val_labels, len(val_images), task_kind, "val labels")
    seed_everything(cfg.seed)
    with reproducible(device):
        return _fit(model, train_images, y_train, val_images, y_val, task_kind, cfg, device, log,
                    val_metric or (lambda y, s: macro_auroc(y, s, task_kind)), on_step)


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


@dataclass
class _Batches:
    """The tensors and objects every epoch of one fit uses (on the device)."""
    x_train: torch.Tensor
    t_train: torch.Tensor
    x_val: torch.Tensor
    t_val: torch.Tensor
    y_val: np.ndarray
    criterion: nn.Module
    generator: torch.Generator
    metric: Callable[[np.ndarray, np.ndarray], float]


def validate(model, data: _Batches, task_kind: str, batch_size: int, device, epoch: int,
             lr: float) -> tuple[float, float]:
    """(val loss, val AUROC) after a round, NaN for both without validation images; TrainingDiverged
    when the round's last updates broke the weights."""
    if not len(data.x_val):
        return float("nan"), float("nan")
    val_loss, val_scores = _evaluate(model, data.x_val, data.t_val, data.criterion, task_kind, batch_size, device)
    if not math.isfinite(val_loss):
        kind = "nan" if math.isnan(val_loss) else "inf"
        raise TrainingDiverged(f"validation loss became {kind} at epoch {epoch} (lr={lr:.3g})")
    return val_loss, float(data.metric(data.y_val, val_scores))


def run_round(model, optimizer, scheduler, index, data: _Batches, batches, stage_name: str, epoch: int,
              task_kind: str, cfg: TrainConfig, device, lr_trace: list[list[float]],
              on_step: Callable[[], None] | None = None) -> EpochRecord:
    """One validation round: the optimiser steps of ``batches``, then the validation pass."""
    started = time.perf_counter()
    train_loss = _train_round(model, optimizer, scheduler, index, batches, data.x_train, data.t_train, data.criterion,
                              data.generator, cfg, device, epoch, lr_trace, on_step)
    val_loss, auroc = validate(model, data, task_kind, cfg.batch_size, device, epoch, max(lr_trace[-1]))
    return EpochRecord(epoch=epoch, stage=stage_name, train_loss=train_loss, val_loss=val_loss,
                       val_auroc_macro=auroc, lrs=list(lr_trace[-1]), seconds=time.perf_counter() - started)


def _fit(model, train_images, y_train, val_images, y_val, task_kind, cfg, device, log, metric,
         on_step: Callable[[int, int], None] | None = None) -> FitResult:
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    data = _Batches(x_train=to_device(train_images, device), t_train=to_device(y_train, device),
                    x_val=to_device(val_images, device), t_val=to_device(y_val, device), y_val=y_val,
                    criterion=make_criterion(task_kind, y_train, device),
                    generator=torch.Generator(device=device).manual_seed(cfg.seed),   # draws stay on the device
                    metric=metric)
    check_outputs(model, data.x_train[:2], y_train, task_kind)
    budget = budget_of(len(train_images), cfg)
    log(budget.describe())
    stream = BatchStream(len(train_images), cfg.batch_size, data.generator)
    unit = "epoch" if budget.round_steps == budget.steps_per_epoch else "round"
    plan = stages(cfg)
    total_epochs = sum(s.epochs for s in plan)
    best = BestEpoch(has_val=len(val_images) > 0)
    notes = [] if best.has_val else ["no validation images: the last epoch is kept and early stopping is off"]
    for note in notes:
        log(note)
    total_steps, steps_done = total_epochs * budget.round_steps, 0

    def step_done() -> None:
        nonlocal steps_done
        steps_done += 1
        on_step(steps_done, total_steps)

    history: list[EpochRecord] = []
    lr_trace: list[list[float]] = []
    epoch, stopped_reason, stages_cut = 0, None, []
    for s_i, stage in enumerate(plan):
        set_trainable(model, stage.n_trainable)
        optimizer, index = build_optimizer(model, stage.n_trainable, cfg)
        # schedules are sized in steps: a "cycle epoch" or a step-policy "epoch" is one validation round
        scheduler = make_scheduler(optimizer, cfg.lr_policy, stage.epochs * budget.round_steps, budget.round_steps, cfg)
        if len(plan) > 1:
            log(f"stage {stage.name}: training {'+'.join(GROUP_NAMES[N_GROUPS - stage.n_trainable:])} "
                f"for {stage.epochs} {unit}(s), {stage.epochs * budget.round_steps} steps")
        best.reset_patience()
        for _ in range(stage.epochs):
            epoch += 1
            set_trainable(model, stage.n_trainable)
            record = run_round(model, optimizer, scheduler, index, data, stream.take(budget.round_steps), stage.name,
                               epoch, task_kind, cfg, device, lr_trace, step_done if on_step is not None else None)
            best.update(model, record)
            history.append(record)
            log(f"{unit} {epoch}/{total_epochs} [{stage.name}] train_loss {record.train_loss:.4f} "
                f"val_loss {record.val_loss:.4f} val_auroc {record.val_auroc_macro:.4f} lr {max(record.lrs):.2e} "
                f"{record.seconds:.1f}s")
            if best.out_of_patience(cfg.patience):
                msg = f"no val AUROC gain for {cfg.patience} {unit}(s) (best {unit} {best.epoch})"
                if s_i == len(plan) - 1:
                    stopped_reason = f"early stop at {unit} {epoch}: {msg}"
                else:
                    log(f"stage {stage.name} stopped early at {unit} {epoch}: {msg}")
                    stages_cut.append(f"stage {stage.name} stopped early at {unit} {epoch}")
                break

    model.load_state_dict(best.state)
    if device.type == "cuda":
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    if stopped_reason is None:
        stopped_reason = f"completed {epoch} {unit}s" + "".join(f"; {cut}" for cut in stages_cut)
    log(f"best {unit} {best.epoch} of {epoch} ({stopped_reason})")
    return FitResult(best_state=best.state, history=history, lr_trace=lr_trace, epochs_run=epoch,
                     best_epoch=best.epoch, stopped_reason=stopped_reason, notes=notes, budget=budget)


def predict(model: nn.Module, images: np.ndarray, task_kind: str, batch_size: int,
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

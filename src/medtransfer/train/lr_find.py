"""LR range test (Smith 2015, fastai's lr_find): which peak LR suits this model and data?

The LR grows exponentially from 1e-7 to 10 over a short run; the loss first falls,
then explodes. The suggestion is where the smoothed loss falls fastest. The model's
weights, requires_grad flags and train/eval mode are restored afterwards, so the test
can run right before ``fit`` on the same model.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError, DataError
from .augment import prepare_batch
from .inputs import batch_indices, check_images, check_labels, check_task_kind, make_criterion, to_device
from .loop import check_outputs, cpu_state, device_autocast, reproducible, seed_everything
from .strategies import build_optimizer, set_trainable, stages

STOP_FACTOR = 4.0     # stop once the smoothed loss exceeds 4x its minimum


def _default_steps(steps_per_epoch: int, max_steps: int = 100) -> int:
    """fastai's 100 steps; 50 for a dataset of a few batches, which more steps would only memorise."""
    return int(min(max_steps, max(50, 10 * steps_per_epoch)))


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> float:
    """Steepest descent of the smoothed loss against log LR, before its minimum.

    The first tenth of the points is skipped (the moving average is still settling);
    with fewer than 5 points left, falls back to the LR at the minimum / 10.
    """
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    n = len(lrs)
    if n == 0:
        return float("nan")
    lo = min(n // 10, 10)
    i_min = lo + int(np.nanargmin(losses[lo:]))
    if i_min + 1 - lo < 5:
        return float(lrs[i_min] / 10)
    slope = np.gradient(losses[lo:i_min + 1], np.log(lrs[lo:i_min + 1]))
    return float(lrs[lo + int(np.nanargmin(slope))])


def lr_find(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, task_kind: str, cfg: TrainConfig,
            device: torch.device, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int | None = None,
            log: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray, float]:
    """Run the range test on the groups the first stage of ``cfg.strategy`` trains.

    Returns (lrs, smoothed losses, suggested peak LR). Discriminative ratios are kept:
    the reported LR is the head's.
    """
    check_task_kind(task_kind)
    check_images(images, "lr_find images")
    if len(images) == 0:
        raise DataError("lr_find images: no images")
    y = check_labels(labels, len(images), task_kind, "lr_find labels")
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr_find: need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    steps_per_epoch = -(-len(images) // cfg.batch_size)
    n_steps = num_steps or _default_steps(steps_per_epoch)
    saved_state = cpu_state(model)
    saved_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    saved_mode = {name: m.training for name, m in model.named_modules()}
    seed_everything(cfg.seed)
    try:
        with reproducible(device):
            lrs, losses = _range_test(model, images, y, task_kind, cfg, device, start_lr, end_lr, n_steps)
    finally:
        model.load_state_dict(saved_state)
        for name, p in model.named_parameters():
            p.requires_grad_(saved_grad[name])
        for name, m in model.named_modules():
            m.training = saved_mode[name]
    suggested = suggest_lr(lrs, losses)
    log(f"lr_find: {len(lrs)} steps, suggested lr {suggested:.2e}")
    return lrs, losses, suggested


def _range_test(model, images, y, task_kind, cfg, device, start_lr, end_lr, n_steps):
    model.to(device)
    x_all, t_all = to_device(images, device), to_device(y, device)
    check_outputs(model, x_all[:2], y, task_kind)
    criterion = make_criterion(task_kind, y, device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)   # draws stay on the device
    n_trainable = stages(cfg)[0].n_trainable
    set_trainable(model, n_trainable)
    optimizer, _ = build_optimizer(model, n_trainable, cfg)
    ratios = [g["lr"] / cfg.lr for g in optimizer.param_groups]   # discriminative spread, head = 1
    growth = (end_lr / start_lr) ** (1.0 / max(1, n_steps - 1))
    beta = 1.0 - 2.0 / max(n_steps, 4)   # loss smoothing: fastai's 0.98 at 100 steps
    lrs, losses = [], []
    avg, best, step = 0.0, math.inf, 0
    batches: list[torch.Tensor] = []
    while step < n_steps:
        if not batches:
            batches = list(batch_indices(len(images), cfg.batch_size, generator))
        idx = batches.pop(0).to(device)
        lr = start_lr * growth ** step
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        x = prepare_batch(x_all[idx], cfg.augment, generator)
        with device_autocast(device):
            logits = model(x)
        loss = criterion(logits.float(), t_all[idx])
        value = loss.item()
        step += 1
        if not math.isfinite(value):
            break
        avg = beta * avg + (1 - beta) * value
        smoothed = avg / (1 - beta ** step)
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > STOP_FACTOR * best:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return np.array(lrs), np.array(losses)


def plot_lr_find(lrs, losses, suggested: float, path: str | Path) -> Path:
    """Save the loss-vs-LR curve with the suggestion marked (PNG/PDF/SVG by suffix)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    if suggested and math.isfinite(suggested):
        ax.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested {suggested:.1e}")
        ax.legend()
    ax.set_xlabel("learning rate (head)")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("LR range test")
    fig.tight_layout()
    fig.savefig(path)
    return path

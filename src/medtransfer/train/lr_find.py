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
from .lr_suggest import LRSuggestion, suggest
from .device import cpu_state, device_autocast, reproducible, seed_everything
from .loop import check_outputs
from .strategies import build_optimizer, set_trainable, stages

STOP_FACTOR = 4.0     # stop once the smoothed loss exceeds 4x its minimum


def _default_steps(steps_per_epoch: int, max_steps: int = 100) -> int:
    """fastai's 100 steps; 50 for a dataset of a few batches, which more steps would only memorise."""
    return int(min(max_steps, max(50, 10 * steps_per_epoch)))


def lr_find(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, task_kind: str, cfg: TrainConfig,
            device: torch.device, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int | None = None,
            log: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray, LRSuggestion]:
    """Run the range test on the groups the first stage of ``cfg.strategy`` trains.

    Returns (lrs, smoothed losses, the suggestion: valley, steepest, minimum/10 and warnings).
    Discriminative ratios are kept: the reported LR is the head's.
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
    suggestion = suggest(lrs, losses)
    log(f"lr_find: {len(lrs)} steps, suggested lr {suggestion.suggested:.2e} (valley; steepest "
        f"{suggestion.steepest:.2e}, minimum/10 {suggestion.minimum_tenth:.2e})")
    for warning in suggestion.warnings:
        log(f"lr_find warning: {warning}")
    return lrs, losses, suggestion


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


def plot_lr_find(lrs, losses, suggestion: LRSuggestion, path: str | Path) -> Path:
    """Save the loss-vs-LR curve with the valley shaded and the three readings marked (PNG/PDF/SVG by suffix)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(lrs, losses, color="0.2")
    ax.set_xscale("log")
    if math.isfinite(suggestion.suggested):
        ax.axvspan(*suggestion.valley, color="tab:green", alpha=0.12, label="valley (longest descent)")
        for value, colour, style, name in ((suggestion.suggested, "tab:red", "-", "suggested (valley)"),
                                           (suggestion.steepest, "tab:orange", "--", "steepest"),
                                           (suggestion.minimum_tenth, "tab:blue", ":", "minimum / 10")):
            ax.axvline(value, color=colour, linestyle=style, label=f"{name} {value:.1e}")
        ax.legend(fontsize=8)
    if suggestion.warnings:
        ax.text(0.01, 0.01, "\n".join(f"! {w[:90]}" for w in suggestion.warnings), transform=ax.transAxes,
                fontsize=7, color="tab:red", va="bottom")
    ax.set_xlabel("learning rate (head)")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("LR range test")
    fig.tight_layout()
    fig.savefig(path)
    return path

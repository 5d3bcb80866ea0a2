"""LR range test (Smith 2015, fastai's lr_find): which peak LR suits this model and data?

The LR grows exponentially from 1e-7 to 10 over a short run; the loss first falls,
then explodes. The suggestion is where the smoothed loss falls fastest. The model's
weights, requires_grad flags and train/eval mode are restored afterwards, so the test
can run right before ``fit`` on the same model.

Its steps are ``fit``'s: ``RangeTest`` is the one-model step with the LR ramp added, driven by
``train.driver.run_steps`` on a track set up as ``fit`` sets one up (same device layout, same
batches for the same seed, same divergence check).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure   # the OO API renders with Agg and leaves pyplot alone
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError
from ..kinds import TaskKind
from .device import cpu_state, release_model, reproducible, seed_everything
from .driver import LossCheck, run_steps
from .loop import OneModel
from .lr_suggest import LRSuggestion, suggest
from .strategies import build_optimizer, set_trainable, stages
from .tracks import FitSpec, Track, check_inputs, open_track

STOP_FACTOR = 4.0     # stop once the smoothed loss exceeds 4x its minimum


def _default_steps(steps_per_epoch: int, max_steps: int = 100) -> int:
    """fastai's 100 steps; 50 for a dataset of a few batches, which more steps would only memorise."""
    return int(min(max_steps, max(50, 10 * steps_per_epoch)))


@dataclass(frozen=True, kw_only=True)
class RangeTestOptions:
    """``lr_find``'s keyword arguments."""
    task_kind: TaskKind
    cfg: TrainConfig
    device: torch.device
    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_steps: int | None = None
    log: Callable[[str], None] = print


def lr_find(model: nn.Module, images: np.ndarray, labels: np.ndarray,
            **options) -> tuple[np.ndarray, np.ndarray, LRSuggestion]:
    """Run the range test on the groups the first stage of ``cfg.strategy`` trains.

    ``options`` (``RangeTestOptions``): ``task_kind``, ``cfg`` (TrainConfig) and ``device`` are required;
    ``start_lr`` (1e-7), ``end_lr`` (10), ``num_steps`` (default: fastai's 100, fewer for a few batches)
    and ``log`` (print).

    Returns (lrs, smoothed losses, the suggestion: valley, steepest, minimum/10 and warnings).
    Discriminative ratios are kept: the reported LR is the head's.
    """
    opts = RangeTestOptions(**options)
    cfg = opts.cfg
    spec = FitSpec(model, images, labels, np.asarray(images)[:0], np.asarray(labels)[:0], cfg, opts.log)   # nothing to validate
    y = check_inputs(spec, opts.task_kind, "lr_find ")
    if not 0 < opts.start_lr < opts.end_lr:
        raise ConfigError(f"lr_find: need 0 < start_lr < end_lr, got {opts.start_lr} and {opts.end_lr}")
    n_steps = opts.num_steps or _default_steps(-(-len(images) // cfg.batch_size))
    saved_state = cpu_state(model)
    saved_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    saved_mode = {name: m.training for name, m in model.named_modules()}
    seed_everything(cfg.seed)
    try:
        with reproducible(opts.device):
            test = RangeTest(opts.start_lr, opts.end_lr, n_steps)
            test.run(open_track(spec, y, opts.task_kind, opts.device))
    finally:
        release_model(model, opts.device)
        model.load_state_dict(saved_state)
        for name, p in model.named_parameters():
            p.requires_grad_(saved_grad[name])
        for name, m in model.named_modules():
            m.training = saved_mode[name]
    lrs, losses = np.array(test.lrs), np.array(test.smoothed)
    suggestion = suggest(lrs, losses)
    opts.log(f"lr_find: {len(lrs)} steps, suggested lr {suggestion.suggested:.2e} (valley; steepest "
             f"{suggestion.steepest:.2e}, minimum/10 {suggestion.minimum_tenth:.2e})")
    for warning in suggestion.warnings:
        opts.log(f"lr_find warning: {warning}")
    return lrs, losses, suggestion


class RangeTest(OneModel):
    """The range test's step: ``fit``'s step of one model, its LR set on an exponential ramp from ``start_lr``
    to ``end_lr`` before each step, its losses smoothed; it ends at a non-finite loss (the driver's check)
    or once the smoothed loss exceeds ``STOP_FACTOR`` times its minimum, before that step's update."""

    def __init__(self, start_lr: float, end_lr: float, n_steps: int):
        self.start_lr, self.n_steps = start_lr, n_steps
        self.growth = (end_lr / start_lr) ** (1.0 / max(1, n_steps - 1))
        self.beta = 1.0 - 2.0 / max(n_steps, 4)   # loss smoothing: fastai's 0.98 at 100 steps
        self.ratios: list[float] = []
        self.lrs: list[float] = []
        self.smoothed: list[float] = []
        self.lr, self.step, self.avg, self.best = start_lr, 0, 0.0, math.inf

    def run(self, track: Track) -> None:
        """The test on the layer groups the first stage of ``track.cfg.strategy`` trains, without a schedule."""
        n_trainable = stages(track.cfg)[0].n_trainable
        set_trainable(track.model, n_trainable)
        track.optimizer, track.index = build_optimizer(track.model, n_trainable, track.cfg)
        self.ratios = [g["lr"] / track.cfg.lr for g in track.optimizer.param_groups]   # discriminative, head = 1
        run_steps(self, [track], self.n_steps, LossCheck(deferred=False))   # the smoothing reads every loss

    def before(self, tracks: list[Track], step: int) -> None:
        self.step = step
        self.lr = self.start_lr * self.growth ** (step - 1)
        for t in tracks:
            for group, ratio in zip(t.optimizer.param_groups, self.ratios):
                group["lr"] = self.lr * ratio

    def accept(self, track: Track, value: float | None) -> bool:
        self.avg = self.beta * self.avg + (1 - self.beta) * value
        smoothed = self.avg / (1 - self.beta ** self.step)
        self.lrs.append(self.lr)
        self.smoothed.append(smoothed)
        self.best = min(self.best, smoothed)
        return smoothed <= STOP_FACTOR * self.best


def plot_lr_find(lrs, losses, suggestion: LRSuggestion, path: str | Path) -> Path:
    """Save the loss-vs-LR curve with the valley shaded and the three readings marked (PNG/PDF/SVG by suffix)."""
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

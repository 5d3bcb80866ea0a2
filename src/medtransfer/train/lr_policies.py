"""Learning-rate policies as pure per-step multipliers, driven by torch's LambdaLR.

Each policy is a function ``step -> factor`` of the peak LR, so the exact LR of every
optimiser step is known in closed form (testable, no float drift) and each parameter
group keeps its own (discriminative) peak. torch's OneCycleLR is not used because it
divides by zero for short schedules (e.g. 4 steps), which small medical datasets hit.
"""
from __future__ import annotations

import math
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainConfig
from ..errors import ConfigError

POLICIES = ("constant", "step", "cosine", "cyclic", "one_cycle")

# one_cycle constants (fastai / Smith 2018): start at lr/25, peak lr, end lr/1e4.
ONE_CYCLE_WARMUP = 0.25
ONE_CYCLE_DIV = 25.0
ONE_CYCLE_FINAL = 1e-4
MOMENTUM_RANGE = (0.95, 0.85)
CYCLIC_BASE = 0.1   # cyclic policy: triangle between lr/10 and lr


def group_lrs(lr: float, ratio: float, n_groups: int = 3) -> list[float]:
    """Discriminative LRs: geometric from ``lr*ratio`` (first group) to ``lr`` (head).

    Early layers hold generic features worth keeping, so they move slowest
    (fastai's ``slice(lr*ratio, lr)``); ratio=1 gives every group the same LR.
    """
    if not 0 < ratio <= 1:
        raise ConfigError(f"train.discriminative must be in (0, 1], got {ratio}")
    if n_groups == 1:
        return [float(lr)]
    return [float(lr * ratio ** ((n_groups - 1 - i) / (n_groups - 1))) for i in range(n_groups)]


def _cos_interp(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def constant(total_steps: int) -> Callable[[int], float]:
    return lambda step: 1.0


def step_decay(total_steps: int, steps_per_epoch: int, gamma: float, every_epochs: int) -> Callable[[int], float]:
    """Multiply by ``gamma`` every ``every_epochs`` epochs (0 = a third of the epochs)."""
    epochs = max(1, round(total_steps / max(1, steps_per_epoch)))
    every = every_epochs or max(1, round(epochs / 3))
    period = every * steps_per_epoch
    return lambda step: gamma ** (step // period)


def cosine(total_steps: int) -> Callable[[int], float]:
    """Half-cosine from the peak to 0 over the run (torch CosineAnnealingLR, eta_min=0)."""
    return lambda step: _cos_interp(1.0, 0.0, step / total_steps)


def cyclic(total_steps: int, steps_per_epoch: int, cycle_epochs: int) -> Callable[[int], float]:
    """Triangular cycles between lr/10 and lr, ``cycle_epochs`` epochs each (torch CyclicLR)."""
    period = max(2, cycle_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        pos = (step % period) / period
        return CYCLIC_BASE + (1.0 - CYCLIC_BASE) * (1.0 - abs(1.0 - 2.0 * pos))
    return factor


def _one_cycle_phase(step: int, total_steps: int) -> tuple[int, float]:
    """(phase, progress in [0,1]): phase 0 = warm-up, phase 1 = anneal."""
    warm = min(int(ONE_CYCLE_WARMUP * total_steps + 0.5), total_steps - 1)
    if step < warm:
        return 0, step / warm
    return 1, (step - warm) / max(1, total_steps - 1 - warm)


def one_cycle(total_steps: int) -> Callable[[int], float]:
    """Warm up from lr/25 to lr over the first quarter, then cosine-anneal to lr/1e4."""
    def factor(step: int) -> float:
        phase, pct = _one_cycle_phase(step, total_steps)
        if phase == 0:
            return _cos_interp(1.0 / ONE_CYCLE_DIV, 1.0, pct)
        return _cos_interp(1.0, ONE_CYCLE_FINAL, pct)
    return factor


def one_cycle_momentum(step: int, total_steps: int) -> float:
    """Momentum / beta1 moves opposite to the LR: 0.95 -> 0.85 -> 0.95."""
    high, low = MOMENTUM_RANGE
    phase, pct = _one_cycle_phase(step, total_steps)
    return _cos_interp(high, low, pct) if phase == 0 else _cos_interp(low, high, pct)


def lr_factor(policy: str, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> Callable[[int], float]:
    """The multiplier function of ``policy`` for a run of ``total_steps`` optimiser steps."""
    total_steps = max(1, int(total_steps))
    if policy == "constant":
        return constant(total_steps)
    if policy == "step":
        return step_decay(total_steps, steps_per_epoch, cfg.step_gamma, cfg.step_every)
    if policy == "cosine":
        return cosine(total_steps)
    if policy == "cyclic":
        return cyclic(total_steps, steps_per_epoch, cfg.cycle_epochs)
    if policy == "one_cycle":
        return one_cycle(total_steps)
    raise ConfigError(f"train.lr_policy must be one of {', '.join(POLICIES)}, got {policy!r}")


def _momentum_key(optimizer: Optimizer) -> str | None:
    group = optimizer.param_groups[0]
    if "betas" in group:
        return "betas"
    if group.get("momentum", 0) > 0:
        return "momentum"
    return None   # plain SGD without momentum: nothing to cycle


class _OneCycleLR(LambdaLR):
    """LambdaLR plus fastai-style momentum cycling, robust for any number of steps."""

    def __init__(self, optimizer: Optimizer, total_steps: int):
        self.total_steps = max(1, int(total_steps))
        self._momentum_key = _momentum_key(optimizer)
        super().__init__(optimizer, one_cycle(self.total_steps))
        self._set_momentum()

    def _set_momentum(self) -> None:
        if self._momentum_key is None:
            return
        m = one_cycle_momentum(min(self.last_epoch, self.total_steps - 1), self.total_steps)
        for group in self.optimizer.param_groups:
            if self._momentum_key == "betas":
                group["betas"] = (m, *group["betas"][1:])
            else:
                group["momentum"] = m

    def step(self, epoch=None):  # noqa: D102 - same as LambdaLR.step
        super().step(epoch)
        self._set_momentum()


def make_scheduler(optimizer: Optimizer, policy: str, total_steps: int, steps_per_epoch: int,
                   cfg: TrainConfig) -> LambdaLR:
    """A scheduler to ``.step()`` after every optimiser step; each group's initial LR is its peak."""
    if policy == "one_cycle":
        return _OneCycleLR(optimizer, total_steps)
    return LambdaLR(optimizer, lr_factor(policy, total_steps, steps_per_epoch, cfg))

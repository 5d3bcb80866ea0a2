"""LR policies (registered in ``medtransfer.schedules``) driven by torch's LambdaLR, and discriminative LRs.

Each parameter group keeps its own (discriminative) peak; the policy's multiplier scales it.
torch's OneCycleLR is not used because it divides by zero for short schedules (e.g. 4 steps),
which small medical datasets hit.
"""
from __future__ import annotations

from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainConfig
from ..errors import ConfigError
from ..schedules import get_policy


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


def lr_factor(policy: str, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> Callable[[int], float]:
    """The multiplier function of ``policy`` for a run of ``total_steps`` optimiser steps."""
    try:
        chosen = get_policy(policy)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return chosen.factor(max(1, int(total_steps)), steps_per_epoch, cfg)


def _momentum_key(optimizer: Optimizer) -> str | None:
    group = optimizer.param_groups[0]
    if "betas" in group:
        return "betas"
    if group.get("momentum", 0) > 0:
        return "momentum"
    return None   # plain SGD without momentum: nothing to cycle


class _MomentumCyclingLR(LambdaLR):
    """LambdaLR plus a policy's momentum schedule (fastai's one-cycle), robust for any number of steps."""

    def __init__(self, optimizer: Optimizer, factor: Callable[[int], float], total_steps: int,
                 momentum: Callable[[int, int], float]):
        self.total_steps = max(1, int(total_steps))
        self._momentum_key = _momentum_key(optimizer)
        self._momentum = momentum
        super().__init__(optimizer, factor)
        self._set_momentum()

    def _set_momentum(self) -> None:
        if self._momentum_key is None:
            return
        m = self._momentum(min(self.last_epoch, self.total_steps - 1), self.total_steps)
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
    factor = lr_factor(policy, total_steps, steps_per_epoch, cfg)
    momentum = get_policy(policy).momentum
    if momentum is not None:
        return _MomentumCyclingLR(optimizer, factor, total_steps, momentum)
    return LambdaLR(optimizer, factor)

"""Learning-rate policies: a registry of tiny schedule functions, free of torch so the config can validate names.

A policy is a factory ``(total_steps, steps_per_epoch, train_cfg) -> (step -> factor of the peak LR)``,
registered by name with ``@lr_policy("name")`` (fastai's schedule.py style: each schedule a small
composable function). ``train.lr_policy`` is checked against this registry, and
``medtransfer.train.lr_policies`` drives torch's LambdaLR with it; so a new policy is one function
here and nothing else. A policy that also cycles momentum (one-cycle) says so when it registers.
The exact LR of every optimiser step is known in closed form (testable, no float drift).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

Schedule = Callable[[int], float]
ScheduleFactory = Callable[[int, int, Any], Schedule]   # (total_steps, steps_per_epoch, TrainConfig)

# one_cycle constants (fastai / Smith 2018): start at lr/25, peak lr, end lr/1e4.
ONE_CYCLE_WARMUP = 0.25
ONE_CYCLE_DIV = 25.0
ONE_CYCLE_FINAL = 1e-4
MOMENTUM_RANGE = (0.95, 0.85)
CYCLIC_BASE = 0.1   # cyclic policy: triangle between lr/10 and lr


@dataclass(frozen=True)
class LRPolicy:
    name: str
    factor: ScheduleFactory
    momentum: Callable[[int, int], float] | None = None   # (step, total_steps) -> momentum / beta1


LR_POLICIES: dict[str, LRPolicy] = {}


def lr_policy(name: str, momentum: Callable[[int, int], float] | None = None):
    """Register a schedule factory under ``name`` (decorator)."""
    def decorator(factory: ScheduleFactory) -> ScheduleFactory:
        LR_POLICIES[name] = LRPolicy(name, factory, momentum)
        return factory
    return decorator


def policy_names() -> list[str]:
    return list(LR_POLICIES)


def get_policy(name: str) -> LRPolicy:
    """The registered policy, or a ValueError listing the known ones (the config turns it into one line)."""
    try:
        return LR_POLICIES[name]
    except KeyError:
        raise ValueError(f"train.lr_policy must be one of {', '.join(LR_POLICIES)}, got {name!r}") from None


def cos_interp(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


@lr_policy("constant")
def constant(total_steps: int, steps_per_epoch: int = 1, cfg: Any = None) -> Schedule:
    return lambda step: 1.0


@lr_policy("step")
def step_decay(total_steps: int, steps_per_epoch: int, cfg: Any) -> Schedule:
    """Multiply by ``train.step_gamma`` every ``train.step_every`` epochs (0 = a third of the epochs)."""
    epochs = max(1, round(total_steps / max(1, steps_per_epoch)))
    every = cfg.step_every or max(1, round(epochs / 3))
    period = every * steps_per_epoch
    gamma = cfg.step_gamma
    return lambda step: gamma ** (step // period)


@lr_policy("cosine")
def cosine(total_steps: int, steps_per_epoch: int = 1, cfg: Any = None) -> Schedule:
    """Half-cosine from the peak to 0 over the run (torch CosineAnnealingLR, eta_min=0)."""
    return lambda step: cos_interp(1.0, 0.0, step / total_steps)


@lr_policy("cyclic")
def cyclic(total_steps: int, steps_per_epoch: int, cfg: Any) -> Schedule:
    """Triangular cycles between lr/10 and lr, ``train.cycle_epochs`` epochs each (torch CyclicLR)."""
    period = max(2, cfg.cycle_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        pos = (step % period) / period
        return CYCLIC_BASE + (1.0 - CYCLIC_BASE) * (1.0 - abs(1.0 - 2.0 * pos))
    return factor


def one_cycle_phase(step: int, total_steps: int) -> tuple[int, float]:
    """(phase, progress in [0,1]): phase 0 = warm-up, phase 1 = anneal."""
    warm = min(int(ONE_CYCLE_WARMUP * total_steps + 0.5), total_steps - 1)
    if step < warm:
        return 0, step / warm
    return 1, (step - warm) / max(1, total_steps - 1 - warm)


def one_cycle_momentum(step: int, total_steps: int) -> float:
    """Momentum / beta1 moves opposite to the LR: 0.95 -> 0.85 -> 0.95."""
    high, low = MOMENTUM_RANGE
    phase, pct = one_cycle_phase(step, total_steps)
    return cos_interp(high, low, pct) if phase == 0 else cos_interp(low, high, pct)


@lr_policy("one_cycle", momentum=one_cycle_momentum)
def one_cycle(total_steps: int, steps_per_epoch: int = 1, cfg: Any = None) -> Schedule:
    """Warm up from lr/25 to lr over the first quarter, then cosine-anneal to lr/1e4."""
    def factor(step: int) -> float:
        phase, pct = one_cycle_phase(step, total_steps)
        if phase == 0:
            return cos_interp(1.0 / ONE_CYCLE_DIV, 1.0, pct)
        return cos_interp(1.0, ONE_CYCLE_FINAL, pct)
    return factor

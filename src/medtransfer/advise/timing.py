"""What a search step costs on this machine now, measured within 5% of ``--budget``, and how many CPU threads to train on.

Two measurements, both taken before the search is planned:

* ``choose_threads``: on a CPU, a run whose config leaves ``train.threads`` unset trains on the cores the
  machine's other work leaves free (``busy_cores`` reads /proc/stat over half a second). Measured on 2 cores
  with other processes keeping both busy (load average 7-8): a ResNet-18 step at 32 px took 1.7-3.1 s on
  torch's default 2 threads and 0.3 s on 1 (two threads' lock-step waits on a core someone else holds), so
  the thread count decides more of a loaded machine's speed than anything the plan can shrink.
* ``probe_cost``: one training run of the top-ranked recipe that stops itself after a few optimiser steps
  (a wall-clock cap checked after every step, at least ``MIN_PROBE_STEPS``), then a validation pass on as
  many validation images as the rest of its ``PROBE_SHARE`` of the budget allows. The median step, the
  run's setup and the validation pass give the cost model the plan is sized from. The old probe trained three whole short runs (every
  validation round included) and took 3 min 19 s of a 5 min budget on a loaded machine.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np

from ..errors import MedtransferError, reason_of
from .plan import Arm, CostModel, recipe_config
from .search import SearchData

PROBE_SHARE = 0.05        # the timing probe's share of --budget
MIN_PROBE_STEPS = 3       # one step whose time includes the first-call costs, then two timed intervals
MAX_PROBE_STEPS = 30      # the median of more steps hardly changes
BUSY_SAMPLE_SECONDS = 0.5
VAL_SHARE = 0.25          # of the probe's seconds, kept for timing the validation pass
MIN_VAL_IMAGES = 64       # the probe's validation pass covers at least one batch


class _Enough(Exception):
    """Raised from the probe's step hook to end its run once it has timed enough steps."""


def busy_cores(sample_seconds: float = BUSY_SAMPLE_SECONDS, stat_path: str = "/proc/stat") -> float | None:
    """Cores kept busy (by every process) over ``sample_seconds``, from the kernel's CPU counters; the
    1-minute load average where /proc/stat cannot be read (it lags, but it is the only other signal); None
    when neither exists."""
    def ticks() -> tuple[int, int] | None:
        try:
            with open(stat_path) as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
        return sum(fields), idle

    first = ticks()
    if first is None:
        try:
            return float(os.getloadavg()[0])
        except (AttributeError, OSError):
            return None
    time.sleep(sample_seconds)
    second = ticks()
    total, idle = second[0] - first[0], second[1] - first[1]
    cores = os.cpu_count() or 1
    return cores * (total - idle) / total if total > 0 else 0.0


def choose_threads(cores: int, busy: float | None) -> int:
    """The CPU threads a run trains on: the cores the machine's other work leaves free, at least one and
    at most all of them (all when the load is unknown: torch's own default)."""
    if busy is None or not math.isfinite(busy):
        return max(int(cores), 1)
    return int(min(max(round(cores - busy), 1), max(int(cores), 1)))


def probe_cost(data: SearchData, arm: Arm, base, device, seconds: float, *, val_guess_seconds: float = 0.0,
               final_extra_seconds: float = 0.0, clock: Callable[[], float] = time.perf_counter) -> CostModel:
    """The cost model from one capped run of ``arm`` within ``seconds``: optimiser steps until
    1 - VAL_SHARE of them are used (at least MIN_PROBE_STEPS), then the validation pass, timed on as many
    validation images as the rest allows at the expected speed (``val_guess_seconds`` for all of them: the
    ranking's forward pass) and scaled to all.

    A run's fixed part is its model build and setup; the validation pass is counted per round (and once
    after the run: ``train_arm`` scores the validation images once more) by ``CostModel.run_seconds``.
    """
    from ..models import create_model                 # lazy (torch): as search.train_arm
    from ..models.init_resolve import resolve_init
    from ..train import fit, predict
    from ..train.device import seed_everything

    started = clock()
    cfg = recipe_config(base, arm, MAX_PROBE_STEPS + 1)
    cfg.train.epochs = 1                              # one round: no validation pass among the timed steps
    stamps: list[float] = []

    def on_step(_done: int, _total: int) -> None:
        stamps.append(clock())
        if len(stamps) >= MAX_PROBE_STEPS or (len(stamps) >= MIN_PROBE_STEPS
                                              and stamps[-1] - started >= (1 - VAL_SHARE) * seconds):
            raise _Enough

    try:
        seed_everything(cfg.train.seed)
        model = create_model(arm.arch, data.n_outputs, init=resolve_init(arm.init), dropout=cfg.model.dropout,
                             log=lambda _line: None)
        built = clock()
        try:
            fit(model, data.train.images, data.train.labels, data.val.images, data.val.labels,
                task_kind=data.task_kind, cfg=cfg.train, device=device, log=lambda _line: None, on_step=on_step)
        except _Enough:
            pass
        before_val = clock()
        n = _val_images(len(data.val), seconds - (before_val - started), val_guess_seconds)
        predict(model, data.val.images[:n], data.task_kind, max(cfg.train.batch_size, 128), device)
        val_pass = (clock() - before_val) * len(data.val) / n
    except (MedtransferError, RuntimeError, ValueError) as err:
        raise MedtransferError(f"the timing probe could not train {arm.label}: {reason_of(err)}") from None
    return cost_from_stamps(stamps, built - started, stamps[0] - built if stamps else 0.0, val_pass,
                            final_extra_seconds)


def _val_images(n_val: int, seconds_left: float, guess_all: float) -> int:
    """How many validation images the probe times its pass on: all when the guess fits what is left, else
    the share that does, but at least one batch (64) where there are that many."""
    if guess_all <= seconds_left or n_val <= MIN_VAL_IMAGES:
        return n_val
    return max(MIN_VAL_IMAGES, int(n_val * max(seconds_left, 0.0) / guess_all))


def cost_from_stamps(stamps: list[float], build_seconds: float, to_first_step: float, val_pass: float,
                     final_extra_seconds: float = 0.0) -> CostModel:
    """A CostModel from the probe's step time stamps: the step is the median interval between steps (the
    first step, with its first-call costs, counts as setup), the fixed part the build and the setup."""
    if len(stamps) < 2:
        raise MedtransferError(f"the timing probe timed {len(stamps)} optimiser step(s): it needs 2")
    step = max(float(np.median(np.diff(stamps))), 1e-4)
    setup = max(to_first_step - step, 0.0)
    return CostModel(step, build_seconds + setup, final_extra_seconds, val_pass)

"""How long a fit trains (torch-free: the dry run and the config use it too), in optimiser steps, and when it is validated.

A budget fixed in epochs gives a 50-image run 6 optimiser steps and an 800-image run 75:
the small runs are barely trained, one-cycle never anneals, and pretrained inits (which
converge faster) win partly by being quicker, not by being better with little data. So
the budget is counted in optimiser steps:

* ``train.steps`` set: exactly that many steps (rounded up to whole validation rounds);
* otherwise ``max(train.epochs x steps per epoch, train.min_steps)``: large N trains its
  epochs, small N trains at least ``min_steps`` steps, passing over its images many times.

``train.epochs`` also fixes how often the model is validated: the budget is cut into
``epochs`` *rounds* of equal length, and the model is scored on the validation set after
each round (the best round's weights are kept; patience counts rounds). When the epochs
alone set the budget a round is exactly one epoch, as before; when ``min_steps`` or
``steps`` sets it, validation costs the same as with epochs while training gets longer.
Gradual-unfreezing stages and LR schedules are sized in these rounds, hence in steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """The step plan of one fit: ``rounds`` validation rounds of ``round_steps`` optimiser steps each."""
    steps_per_epoch: int   # batches in one pass over the training images
    round_steps: int       # optimiser steps between two validation passes
    rounds: int            # validation passes (train.epochs)
    set_by: str            # "epochs", "min_steps" or "steps": which key fixed the length

    @property
    def total_steps(self) -> int:
        return self.round_steps * self.rounds

    @property
    def passes(self) -> float:
        """Passes over the training images the whole budget makes."""
        return self.total_steps / self.steps_per_epoch

    def describe(self) -> str:
        """One log line: the budget and why it is that long."""
        why = {"epochs": f"train.epochs={self.rounds}",
               "min_steps": "train.min_steps (the epochs alone give fewer)",
               "steps": "train.steps"}[self.set_by]
        return (f"budget: {self.total_steps} optimiser steps, set by {why}; validated every {self.round_steps} steps "
                f"({self.rounds} rounds); {self.steps_per_epoch} steps per pass over the training images "
                f"({self.passes:.3g} passes)")


def plan_budget(n_images: int, batch_size: int, epochs: int, min_steps: int = 0,
                steps: int | None = None) -> Budget:
    """The budget for ``n_images`` training images (see the module docstring)."""
    if n_images < 1 or batch_size < 1 or epochs < 1:
        raise ValueError(f"plan_budget needs n_images, batch_size and epochs >= 1, got {n_images}, {batch_size}, {epochs}")
    per_epoch = -(-n_images // batch_size)
    if steps is not None:
        return Budget(per_epoch, max(1, math.ceil(steps / epochs)), epochs, "steps")
    if epochs * per_epoch >= min_steps:
        return Budget(per_epoch, per_epoch, epochs, "epochs")
    return Budget(per_epoch, math.ceil(min_steps / epochs), epochs, "min_steps")


def budget_of(n_images: int, cfg) -> Budget:
    """``plan_budget`` from a TrainConfig."""
    return plan_budget(n_images, cfg.batch_size, cfg.epochs, cfg.min_steps, cfg.steps)

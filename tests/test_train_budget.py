"""Budgets in optimiser steps: small N is trained, schedules are sized in steps, rounds validate."""
import numpy as np
import pytest
import torch

from medtransfer.budget import plan_budget
from medtransfer.config import DEFAULT_MIN_STEPS, TrainConfig
from medtransfer.schedules import ONE_CYCLE_FINAL
from medtransfer.train import fit
from medtransfer.train.inputs import BatchStream, batch_indices

from test_train_fit import CPU, make_data, new_model, quiet


def test_small_n_gets_min_steps_and_large_n_its_epochs():
    small = plan_budget(50, 32, epochs=3, min_steps=100)
    assert small.set_by == "min_steps" and small.total_steps >= 100 and small.rounds == 3
    assert small.round_steps == 34 and small.steps_per_epoch == 2
    large = plan_budget(5000, 32, epochs=3, min_steps=100)
    assert large.set_by == "epochs" and large.round_steps == large.steps_per_epoch == 157
    assert large.total_steps == 3 * 157
    exact = plan_budget(50, 32, epochs=4, min_steps=100, steps=20)
    assert exact.set_by == "steps" and exact.total_steps == 20 and exact.round_steps == 5
    assert "min_steps" in small.describe() and "34 steps" in small.describe()


def test_default_config_trains_n50_at_least_min_steps():
    cfg = TrainConfig(epochs=3, batch_size=32)
    assert cfg.min_steps == DEFAULT_MIN_STEPS >= 50
    assert plan_budget(50, 32, 3, cfg.min_steps).total_steps >= cfg.min_steps


def test_stream_uses_every_image_once_per_pass_across_round_boundaries():
    g = torch.Generator().manual_seed(3)
    stream = BatchStream(10, 4, g)                 # 3 batches a pass; rounds of 2 steps cut passes
    drawn = [b for _ in range(3) for b in stream.take(2)]
    assert len(drawn) == 6
    first, second = torch.cat(drawn[:3]), torch.cat(drawn[3:])
    assert sorted(first.tolist()) == list(range(10)) and sorted(second.tolist()) == list(range(10))
    # rounds of one pass draw exactly what one shuffle per epoch drew
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    per_epoch = [t for _ in range(2) for t in batch_indices(10, 4, a)]
    stream = BatchStream(10, 4, b)
    streamed = list(stream.take(3)) + list(stream.take(3))
    assert all(torch.equal(x, y) for x, y in zip(per_epoch, streamed))


def fit_small(**kw):
    x, y = make_data(50, 0)
    xv, yv = make_data(24, 1)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 32, "lr": 1e-2, "augment": False, **kw})
    return fit(new_model(), x, y, xv, yv, task_kind="multilabel", cfg=cfg, device=CPU, log=quiet)


def test_n50_fit_takes_min_steps_and_one_cycle_anneals_to_its_floor():
    result = fit_small(min_steps=60, lr_policy="one_cycle")
    assert len(result.lr_trace) == 60 and result.budget.total_steps == 60
    head = np.array([row[2] for row in result.lr_trace])
    assert head.max() == pytest.approx(1e-2)
    assert head[-1] == pytest.approx(1e-2 * ONE_CYCLE_FINAL)   # the last step runs at the floor
    assert len(result.history) == 3                              # validated once per round, not per pass


def test_without_min_steps_n50_trains_only_its_epochs():
    result = fit_small(min_steps=0)
    assert len(result.lr_trace) == 3 * 2


def test_gradual_stages_are_sized_in_steps():
    result = fit_small(min_steps=60, strategy="gradual", lr_policy="constant")
    assert len(result.lr_trace) == 60
    frozen_early = [row[0] == 0.0 for row in result.lr_trace]
    assert frozen_early[:40] == [True] * 40 and not any(frozen_early[40:])   # head, head+late: 20 steps each


def test_cyclic_cycles_per_round_when_min_steps_sets_the_budget():
    result = fit_small(min_steps=60, lr_policy="cyclic", cycle_epochs=1)
    head = np.array([row[2] for row in result.lr_trace])
    assert np.isclose(head, head.min()).sum() == 3                  # one cycle (starting low) per 20-step round

"""Packed runs (issue 12): a member trained in a fused pack equals its unpacked run.

Small networks trained from scratch at a full learning rate are chaotic: a 1e-7 relative
nudge to the weights grows to O(1) differences within ~20 Adam steps (measured with the
unpacked loop alone), so no fused kernel can match an unpacked run bit for bit for long.
These tests therefore train at a small LR, where float rounding stays below 1e-6 while the
weights still move the predictions by far more than the tolerance; a wrong batch, augmentation
draw, dropout mask, BatchNorm statistic, LR schedule or stage would show at once.
"""
import copy

import numpy as np
import pytest
import torch

from medtransfer.config import TrainConfig
from medtransfer.errors import ConfigError
from medtransfer.models.registry import create_model
from medtransfer.train.device import seed_everything
from medtransfer.train.loop import fit, predict
from medtransfer.train.packed import PackMember, fit_packed, pack_key

CPU = torch.device("cpu")
TOL = 1e-4


def images(n: int, seed: int, noisy_labels: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 120, (n, 32, 32)).astype(np.uint8)
    x[y == 1, 8:20, 8:20] += 100
    if noisy_labels:
        y = rng.integers(0, 2, n)
    return x, y[:, None].astype(np.float32)


TEST_X, TEST_Y = images(120, 999)


def member(i: int, strategy: str, *, dropout: float = 0.0, val_noise: bool = False, **train):
    # a frozen backbone is not chaotic (only the head trains): 12 steps; training the backbone is, so 4
    cfg = TrainConfig(**{"epochs": 4, "steps": 12 if strategy == "frozen" else 4, "batch_size": 16, "lr": 2e-4,
                         "seed": 10 + i, "strategy": strategy, **train})
    x, y = images(50, i)
    xv, yv = images(14, 100 + i, noisy_labels=val_noise)
    seed_everything(cfg.seed)
    model = create_model("resnet18", 1, dropout=dropout, log=lambda s: None)
    return PackMember(model, x, y, xv, yv, cfg, log=lambda s: None)


def unpacked(m: PackMember):
    twin = copy.deepcopy(m.model)
    start = predict(twin, TEST_X, "binary", 64, CPU)
    result = fit(twin, m.train_images, m.train_labels, m.val_images, m.val_labels, task_kind="binary", cfg=m.cfg,
                 device=CPU, log=lambda s: None)
    return result, predict(twin, TEST_X, "binary", 64, CPU), start


def members_for(strategy: str) -> list[PackMember]:
    return [member(0, strategy, lr_policy="constant"),
            member(1, strategy, lr_policy="one_cycle", dropout=0.3, discriminative=0.1),
            member(2, strategy, lr_policy="cyclic", cycle_epochs=2, lr=3e-4, val_noise=True, patience=1),
            member(3, strategy, lr_policy="step", step_every=2, dropout=0.5, optimizer="sgd", lr=1e-3)]


@pytest.mark.parametrize("strategy", ["frozen", "full", "gradual"])
def test_a_packed_member_equals_its_unpacked_run(strategy):
    torch.set_num_threads(1)
    members = members_for(strategy)
    alone = [unpacked(m) for m in members]
    packed = fit_packed(members, task_kind="binary", device=CPU, log=lambda s: None)
    stopped_early = 0
    for m, got, (want, want_pred, start_pred) in zip(members, packed, alone, strict=True):
        assert not isinstance(got, Exception), got
        pred = predict(m.model, TEST_X, "binary", 64, CPU)
        assert np.abs(want_pred - start_pred).max() > 10 * TOL         # training moved it: the check has teeth
        np.testing.assert_allclose(pred, want_pred, atol=TOL)
        assert (got.best_epoch, got.epochs_run, got.stopped_reason) == (want.best_epoch, want.epochs_run,
                                                                          want.stopped_reason)
        assert [h.stage for h in got.history] == [h.stage for h in want.history]
        np.testing.assert_allclose([h.val_auroc_macro for h in got.history],
                                   [h.val_auroc_macro for h in want.history], atol=TOL)
        np.testing.assert_allclose(got.lr_trace, want.lr_trace, rtol=1e-6)
        stopped_early += got.epochs_run < 4 or "stopped early" in got.stopped_reason
    assert stopped_early >= 1                                          # early stopping happened inside the pack


def test_pack_refuses_members_whose_steps_do_not_line_up():
    a, b = member(0, "full"), member(1, "full", batch_size=8)
    assert pack_key(a.model, 50, (32, 32), a.cfg) != pack_key(b.model, 50, (32, 32), b.cfg)
    with pytest.raises(ConfigError, match="member 1 cannot share a pack"):
        fit_packed([a, b], task_kind="binary", device=CPU, log=lambda s: None)
    c = member(2, "gradual")
    with pytest.raises(ConfigError, match="member 1 cannot share a pack"):
        fit_packed([a, c], task_kind="binary", device=CPU, log=lambda s: None)


def test_a_diverging_member_leaves_the_pack_without_stopping_the_others():
    torch.set_num_threads(1)
    good, bad = member(0, "full"), member(1, "full", lr=1e12, optimizer="sgd")
    want, want_pred, _ = unpacked(good)
    out = fit_packed([good, bad], task_kind="binary", device=CPU, log=lambda s: None)
    assert isinstance(out[1], Exception) and ("nan" in str(out[1]).lower() or "inf" in str(out[1]).lower())
    assert not isinstance(out[0], Exception)
    np.testing.assert_allclose(predict(good.model, TEST_X, "binary", 64, CPU), want_pred, atol=TOL)


def test_a_round_in_which_every_member_diverges_ends_the_pack_without_crashing():
    torch.set_num_threads(1)
    bad = [member(i, "full", lr=1e12, optimizer="sgd") for i in (0, 1)]
    out = fit_packed(bad, task_kind="binary", device=CPU, log=lambda s: None)
    assert all(isinstance(o, Exception) and ("nan" in str(o).lower() or "inf" in str(o).lower()) for o in out)

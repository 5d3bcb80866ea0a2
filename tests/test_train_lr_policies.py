"""LR policies, discriminative LRs and strategy stages, without training anything."""
import math

import numpy as np
import pytest
import torch

from medtransfer.config import TrainConfig
from medtransfer.errors import ConfigError
from medtransfer.train import group_lrs, make_scheduler
from medtransfer.train.lr_policies import lr_factor
from medtransfer.train.strategies import split_epochs, stages


def _trace(policy, total, spe, optimizer="adamw", **cfg_kw):
    """(lr, momentum-or-beta1) the optimiser sees at every step, one param group at lr=1."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = (torch.optim.AdamW([p], lr=1.0) if optimizer == "adamw"
           else torch.optim.SGD([p], lr=1.0, momentum=0.9))
    sched = make_scheduler(opt, policy, total, spe, TrainConfig(lr_policy=policy, **cfg_kw))
    out = []
    for _ in range(total):
        g = opt.param_groups[0]
        out.append((g["lr"], g["betas"][0] if "betas" in g else g["momentum"]))
        opt.step()
        sched.step()
    return np.array(out)


def test_group_lrs_are_geometric_from_ratio_to_head():
    assert group_lrs(1e-2, 0.01) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert group_lrs(3e-4, 1.0) == pytest.approx([3e-4] * 3)
    lrs = group_lrs(1.0, 0.2)
    assert lrs[1] / lrs[0] == pytest.approx(lrs[2] / lrs[1])
    with pytest.raises(ConfigError):
        group_lrs(1.0, 0.0)


def test_constant_is_flat():
    lr = _trace("constant", 30, 10)[:, 0]
    assert np.all(lr == 1.0)


def test_step_drops_by_gamma_at_epoch_boundaries():
    lr = _trace("step", 60, 10, step_gamma=0.5, step_every=2)[:, 0]
    expected = 0.5 ** (np.arange(60) // 20)
    np.testing.assert_allclose(lr, expected)
    # step_every=0: a third of the epochs (9 epochs -> every 3)
    lr = _trace("step", 90, 10, step_gamma=0.1, step_every=0)[:, 0]
    np.testing.assert_allclose(lr, 0.1 ** (np.arange(90) // 30))


def test_cosine_decreases_monotonically_to_about_zero():
    lr = _trace("cosine", 100, 10)[:, 0]
    assert lr[0] == 1.0
    assert np.all(np.diff(lr) < 0)
    assert lr[-1] < 1e-3


def test_cyclic_is_triangular_between_lr_over_10_and_lr():
    lr = _trace("cyclic", 60, 10, cycle_epochs=2)[:, 0]   # period 20 steps
    np.testing.assert_allclose(lr[[0, 20, 40]], 0.1)
    np.testing.assert_allclose(lr[[10, 30, 50]], 1.0)
    assert np.all(np.diff(lr[0:11]) > 0) and np.all(np.diff(lr[10:21]) < 0)
    np.testing.assert_allclose(lr[:20], lr[20:40])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_one_cycle_warms_up_then_anneals_with_inverse_momentum(optimizer):
    tr = _trace("one_cycle", 100, 10, optimizer=optimizer)
    lr, mom = tr[:, 0], tr[:, 1]
    peak = int(np.argmax(lr))
    assert 0.2 <= peak / len(lr) <= 0.3
    assert lr[0] == pytest.approx(1 / 25)
    assert lr[peak] == pytest.approx(1.0)
    assert lr[-1] == pytest.approx(1e-4)
    assert np.all(np.diff(lr[:peak + 1]) > 0) and np.all(np.diff(lr[peak:]) < 0)
    assert mom[0] == pytest.approx(0.95) and mom[peak] == pytest.approx(0.85) and mom[-1] == pytest.approx(0.95)


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 7])
def test_one_cycle_handles_very_short_runs(total):
    # torch's OneCycleLR divides by zero at 4 steps; small datasets hit such lengths.
    lr = _trace("one_cycle", total, 1)[:, 0]
    assert np.all(np.isfinite(lr)) and lr.max() <= 1.0 and lr.min() > 0


def test_every_policy_factor_is_finite_and_positive():
    cfg = TrainConfig()
    for policy in ("constant", "step", "cosine", "cyclic", "one_cycle"):
        f = lr_factor(policy, 37, 5, cfg)
        assert all(math.isfinite(f(s)) and f(s) >= 0 for s in range(37))
    with pytest.raises(ConfigError):
        lr_factor("warp", 10, 1, cfg)


def test_gradual_stages_split_epochs():
    assert split_epochs(10) == [3, 3, 4]
    assert split_epochs(2) == [0, 1, 1]
    plan = stages(TrainConfig(strategy="gradual", epochs=7))
    assert [(s.name, s.n_trainable, s.epochs) for s in plan] == [("head", 1, 2), ("head+late", 2, 2), ("all", 3, 3)]
    plan = stages(TrainConfig(strategy="gradual", gradual_epochs=[1, 0, 5]))
    assert [(s.n_trainable, s.epochs) for s in plan] == [(1, 1), (3, 5)]
    assert [(s.n_trainable, s.epochs) for s in stages(TrainConfig(strategy="frozen", epochs=4))] == [(1, 4)]
    assert [(s.n_trainable, s.epochs) for s in stages(TrainConfig(strategy="full", epochs=4))] == [(3, 4)]


def test_a_registered_policy_is_a_valid_config_value_and_an_unknown_one_lists_the_registry(monkeypatch):
    from medtransfer import schedules
    from medtransfer.config import config_from_dict

    monkeypatch.setitem(schedules.LR_POLICIES, "halfway_drop",
                        schedules.LRPolicy("halfway_drop", lambda total, per_epoch, cfg: lambda s: 1.0 if s < total / 2 else 0.1))
    base = {"data": {"source": "medmnist", "name": "pneumoniamnist"}, "task": {"kind": "binary"}}
    cfg = config_from_dict(base, ["train.lr_policy=halfway_drop"])
    f = lr_factor(cfg.train.lr_policy, 10, 2, cfg.train)
    assert (f(0), f(9)) == (1.0, 0.1)
    with pytest.raises(ConfigError, match="one of constant, step, cosine, cyclic, one_cycle, halfway_drop, got 'warp'"):
        config_from_dict(base, ["train.lr_policy=warp"])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_optimiser_is_torchs_fused_kernel_and_steps_like_the_per_tensor_loop(optimizer):
    """On a CPU torch defaults to a per-tensor loop (a third of a small step's time); runs get the fused
    kernel, which must take the same step."""
    import copy

    import torch

    from medtransfer.config import TrainConfig
    from medtransfer.train.strategies import N_GROUPS, build_optimizer

    from medtransfer.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", 1, log=lambda line: None)
    reference = copy.deepcopy(model)
    cfg = TrainConfig(lr=1e-2, optimizer=optimizer, weight_decay=1e-2)
    opt, _ = build_optimizer(model, N_GROUPS, cfg)
    assert opt.defaults["fused"] is True
    loop = type(opt)(reference.parameters(), lr=1e-2, weight_decay=1e-2, foreach=False,
                     **({"momentum": cfg.momentum} if optimizer == "sgd" else {}))
    x = torch.randn(4, 1, 32, 32)
    for _ in range(2):   # the second step uses the moments / momentum the first one stored
        for net, o in ((model, opt), (reference, loop)):
            o.zero_grad()
            net(x).square().mean().backward()
            o.step()
    diff = torch.cat([(a - b).abs().flatten() for a, b in zip(model.parameters(), reference.parameters())])
    # rounding-sized on average (4e-9 measured): leaving the weight decay out moves the weights by 5e-6 on
    # average. Not elementwise: Adam's second step moves a weight whose gradient is ~0 by +-LR on its sign.
    assert diff.mean() <= 1e-7, diff.mean()

"""The one training driver (issue 22): ordinary fits, packed fits and the LR range test share one step loop,
so what one path does (channels_last, the divergence check, the log lines) the others do too (CPU)."""
import re

import numpy as np
import pytest
import torch

from medtransfer.config import TrainConfig
from medtransfer.errors import TrainingDiverged
from medtransfer.train import FitResult, fit, lr_find, predict
from medtransfer.train.driver import LossCheck
from medtransfer.train.packed import PackMember, fit_packed
from test_train_fit import make_data, new_model, quiet

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return make_data(48, 0) + make_data(24, 1)


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 1e-3, "lr_policy": "constant", "min_steps": 0, **kw})


def run_path(path, models, data, config, log=quiet):
    """Train ``models[0]`` (and ``models[1]`` for a pack) the way ``path`` does."""
    if path == "fit":
        return fit(models[0], *data, task_kind="multilabel", cfg=config, device=CPU, log=log)
    if path == "packed":
        return fit_packed([PackMember(m, *data, config, log=log) for m in models[:2]], task_kind="multilabel",
                          device=CPU, log=quiet)
    return lr_find(models[0], data[0], data[1], task_kind="multilabel", cfg=config, device=CPU, num_steps=6, log=log)


@pytest.mark.filterwarnings("error::UserWarning")   # e.g. the pack's fused forward falling back to per-sample kernels
@pytest.mark.parametrize("path", ["fit", "packed", "lr_find"])
def test_every_path_trains_channels_last_where_fit_does_and_hands_back_ordinary_weights(data, monkeypatch, path):
    # the packed path and the range test used to keep the default layout on CUDA, where fit trains channels_last
    monkeypatch.setattr("medtransfer.train.device.uses_channels_last", lambda device: True)
    models = [new_model(0), new_model(1)]
    seen = []
    def spy(owner):
        def hook(module, args):
            if module is owner:   # the pack's fused template is a copy of member 0, hooks and all
                seen.append((owner.weight.is_contiguous(memory_format=torch.channels_last),
                             owner.weight.is_contiguous()))
        return hook

    hooks = [m.backbone[3].register_forward_pre_hook(spy(m.backbone[3])) for m in models]   # (8,4,3,3): layouts differ
    out = run_path(path, models, data, cfg())
    for hook in hooks:
        hook.remove()
    assert seen and set(seen) == {(True, False)}   # every forward on a member's own module ran channels_last
    assert all(p.is_contiguous() for m in models for p in m.parameters())
    assert not any(isinstance(r, Exception) for r in (out if path == "packed" else [out]))


@pytest.mark.parametrize("deferred", [False, True])
def test_a_diverging_run_is_caught_at_the_same_step_and_said_the_same_way_packed_or_not(data, monkeypatch, deferred):
    # deferred = the GPU's check (step s's loss read after step s+1 is queued); the pack used to skip it and
    # report only "training loss became nan in epoch 1" once the whole round had trained on NaN weights
    monkeypatch.setattr("medtransfer.train.loop._defers_loss_check", lambda device: deferred)
    monkeypatch.setattr("medtransfer.train.packed.defers_loss_check", lambda device: deferred)
    good, bad = cfg(lr=2e-4), cfg(lr=1e30, optimizer="sgd")
    with pytest.raises(TrainingDiverged) as alone:
        fit(new_model(1), *data, task_kind="multilabel", cfg=bad, device=CPU, log=quiet)
    twin = new_model(0)
    want = fit(twin, *data, task_kind="multilabel", cfg=good, device=CPU, log=quiet)
    logs = [[], []]
    models = [new_model(0), new_model(1)]
    out = fit_packed([PackMember(models[0], *data, good, log=logs[0].append),
                      PackMember(models[1], *data, bad, log=logs[1].append)],
                     task_kind="multilabel", device=CPU, log=quiet)
    assert re.fullmatch(r"loss became (nan|inf) at epoch 1 step \d \(lr=1e\+30\)", str(alone.value))
    assert isinstance(out[1], TrainingDiverged) and str(out[1]) == str(alone.value)
    assert logs[1][-1] == f"diverged: {alone.value} (packed)"
    assert isinstance(out[0], FitResult)   # the diverging member did not take the other one with it
    assert out[0].epochs_run == want.epochs_run
    np.testing.assert_allclose(predict(models[0], data[2], "multilabel", 16, CPU),
                               predict(twin, data[2], "multilabel", 16, CPU), atol=1e-4)


def masked(lines):
    """Log lines without their numbers and the pack's own notes."""
    plain = [re.sub(r" \(packed( with \d+ other run\(s\))?\)$", "", line) for line in lines]
    return [re.sub(r"\d+(\.\d+)?(e[-+]\d+)?", "#", line) for line in plain]


def test_a_packed_member_logs_what_its_unpacked_fit_logs(data):
    # gradual stages, a stage cut by patience, an early stop: the pack used to leave out the stage lines
    def scripted():
        values = iter([0.5, 0.4, 0.6, 0.7, 0.65])
        return lambda y, s: next(values)

    config = cfg(strategy="gradual", gradual_epochs=[2, 1, 2], patience=1)
    alone, packed = [], []
    fit(new_model(0), *data, task_kind="multilabel", cfg=config, device=CPU, log=alone.append, val_metric=scripted())
    fit_packed([PackMember(new_model(0), *data, config, log=packed.append, val_metric=scripted()),
                PackMember(new_model(1), *data, config, log=quiet)], task_kind="multilabel", device=CPU, log=quiet)
    assert any(line.startswith("stage head stopped early") for line in alone)
    assert sum(line.startswith("stage ") for line in alone) == 4
    assert masked(packed) == masked(alone)
    assert all(line.endswith("(packed)") for line in packed if line.startswith("epoch "))


def test_no_validation_images_is_said_once_the_same_way_on_every_path(data):
    xt, yt, xv, yv = data
    no_val = (xt, yt, xv[:0], yv[:0])
    logs = {"fit": [], "packed": []}
    results = {p: run_path(p, [new_model(0), new_model(1)], no_val, cfg(patience=1), log=logs[p].append)
               for p in logs}
    notes = {p: [line for line in lines if line.startswith("no validation images")] for p, lines in logs.items()}
    assert len(notes["fit"]) == 1 and notes["packed"] == notes["fit"] * 2   # both members log to one list
    assert results["fit"].notes == results["packed"][0].notes == notes["fit"]


def test_every_path_checks_its_losses_in_the_one_step_loop(data, monkeypatch):
    calls = []
    check = LossCheck.now
    monkeypatch.setattr(LossCheck, "now", lambda self, tracks, losses, step: calls.append(len(tracks))
                        or check(self, tracks, losses, step))
    steps = {}
    for path in ("fit", "packed", "lr_find"):
        calls.clear()
        run_path(path, [new_model(0), new_model(1)], data, cfg())
        steps[path] = list(calls)
    assert steps["fit"] == [1] * 6                   # 48 images / batch 16 = 3 steps x 2 epochs
    assert steps["packed"] == [2] * 6                # one fused step for both members
    assert steps["lr_find"] and set(steps["lr_find"]) == {1} and len(steps["lr_find"]) <= 6


"""fit / predict / lr_find on a tiny stand-in Classifier and tiny synthetic images (CPU)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.config import TrainConfig
from medtransfer.errors import ConfigError, DataError, TrainingDiverged
from medtransfer.train import fit, lr_find, plot_lr_find, predict, resolve_device, set_trainable
from medtransfer.train.inputs import make_criterion, pos_weight

CPU = torch.device("cpu")


class TinyNet(nn.Module):
    """Same shape as models.Classifier: backbone -> (B,F), head = [Dropout, Linear], 3 layer groups."""

    def __init__(self, num_outputs=2, dropout=0.1):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8, num_outputs))

    def forward(self, x):
        return self.head(self.backbone(x))

    def layer_groups(self):
        b = self.backbone
        return [[b[0], b[1]], [b[3], b[4]], [self.head]]


def make_data(n, seed, k=2, size=16, multiclass=False):
    """Labels change the brightness of image halves, so a tiny net can learn them."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 100, (n, size, size)).astype(np.uint8)
    if multiclass:
        y = rng.integers(0, k, n).astype(np.int64)
        for c in range(k):
            x[y == c, : size * (c + 1) // k] += 100
        return x, y
    y = (rng.random((n, k)) < 0.4).astype(np.float32)
    y[0], y[1] = 1, 0                      # both outcomes present in every column
    half = size // k
    for j in range(k):
        x[:, j * half:(j + 1) * half] += (y[:, j] * 100).astype(np.uint8)[:, None, None]
    return x, y


@pytest.fixture(scope="module")
def data():
    return make_data(48, 0) + make_data(24, 1)


def quiet(_):
    pass


def new_model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyNet(**kw)


def run(data, model=None, log=quiet, **cfg_kw):
    # min_steps 0: these tests pin per-epoch behaviour; tests/test_train_budget.py covers step budgets
    cfg_kw = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "lr_policy": "constant", "min_steps": 0, **cfg_kw}
    model = model or new_model()
    result = fit(model, *data, task_kind="multilabel", cfg=TrainConfig(**cfg_kw), device=CPU, log=log)
    return model, result


def state_copy(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_frozen_leaves_backbone_bit_identical_and_trains_head(data):
    model = new_model()
    before = state_copy(model)
    model, result = run(data, model, strategy="frozen", epochs=3)
    after = model.state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    for k in backbone:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    assert all(row[:2] == [0.0, 0.0] and row[2] > 0 for row in result.lr_trace)


def test_full_trains_everything_including_batchnorm_stats(data):
    model = new_model()
    before = state_copy(model)
    model, _ = run(data, model, strategy="full")
    after = model.state_dict()
    for k in ("backbone.0.weight", "backbone.1.running_mean", "backbone.3.weight", "head.1.weight"):
        assert not torch.equal(before[k], after[k]), k


def test_set_trainable_freezes_grads_and_batchnorm_mode():
    model = new_model()
    set_trainable(model, 1)
    assert not model.backbone[1].training and not model.backbone[4].training and model.head.training
    assert [p.requires_grad for p in model.parameters()] == [False] * 8 + [True] * 2
    set_trainable(model, 2)
    assert not model.backbone[1].training and model.backbone[4].training
    set_trainable(model, 3)
    assert all(m.training for m in model.modules()) and all(p.requires_grad for p in model.parameters())


def test_gradual_unfreezes_one_group_per_stage(data):
    model = new_model()
    seen = []

    def log(line):   # the stage line is logged right after the stage's groups are set
        if line.startswith("stage "):
            groups = model.layer_groups()
            seen.append([all(p.requires_grad for m in g for p in m.parameters()) for g in groups])

    _, result = run(data, model, log=log, strategy="gradual", epochs=3)
    assert seen == [[False, False, True], [False, True, True], [True, True, True]]
    assert [h.stage for h in result.history] == ["head", "head+late", "all"]
    per_epoch = len(result.lr_trace) // 3
    zeros = [tuple(v == 0.0 for v in result.lr_trace[i * per_epoch]) for i in range(3)]
    assert zeros == [(True, True, False), (True, False, False), (False, False, False)]


@pytest.mark.parametrize("policy", ["constant", "step", "cosine", "cyclic", "one_cycle"])
def test_logged_lr_has_the_policy_shape(data, policy):
    # 48 images / batch 8 = 6 steps per epoch, 6 epochs = 36 steps
    _, result = run(data, lr_policy=policy, epochs=6, batch_size=8, augment=False,
                    step_gamma=0.5, step_every=2, cycle_epochs=2)
    lr = np.array([row[2] for row in result.lr_trace])
    assert len(lr) == 36 and [h.lrs for h in result.history][-1] == result.lr_trace[-1]
    if policy == "constant":
        assert np.all(lr == 1e-2)
    elif policy == "step":
        np.testing.assert_allclose(lr, 1e-2 * 0.5 ** (np.arange(36) // 12))
    elif policy == "cosine":
        assert lr[0] == pytest.approx(1e-2) and np.all(np.diff(lr) < 0) and lr[-1] < 1e-4
    elif policy == "cyclic":
        np.testing.assert_allclose(lr[[0, 12, 24]], 1e-3)
        np.testing.assert_allclose(lr[[6, 18, 30]], 1e-2)
    else:
        peak = int(np.argmax(lr))
        assert 0.2 <= peak / 36 <= 0.3 and lr[peak] == pytest.approx(1e-2)
        assert lr[0] == pytest.approx(1e-2 / 25) and lr[-1] == pytest.approx(1e-6)


def test_discriminative_lrs_are_geometric_across_groups(data):
    _, result = run(data, strategy="full", discriminative=0.01, lr_policy="cosine")
    for early, late, head in result.lr_trace[:-1]:
        assert late / early == pytest.approx(10) and head / late == pytest.approx(10)


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("bad_step", [2, 3])
def test_nan_loss_raises_training_diverged(data, monkeypatch, deferred, bad_step):
    # deferred = the GPU path, which reads step s's loss after queueing step s+1
    monkeypatch.setattr("medtransfer.train.loop._defers_loss_check", lambda device: deferred)
    model = new_model()
    calls = []

    def poison(module, inputs, output):
        calls.append(1)   # call 1 is fit's output-shape check
        return output * float("nan") if len(calls) == bad_step + 1 else output

    model.head.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=rf"loss became nan at epoch 1 step {bad_step} \(lr="):
        run(data, model)   # 48 images / batch 16 = 3 steps per epoch


def test_huge_lr_diverges(data):
    with pytest.raises(TrainingDiverged, match="loss became"):
        run(data, lr=1e10, epochs=3)


def test_same_seed_reproduces_metrics_and_predictions_exactly(data):
    runs = []
    for _ in range(2):
        model, result = run(data, new_model(), strategy="gradual", epochs=3, lr_policy="one_cycle", seed=7)
        runs.append((result, predict(model, data[2], "multilabel", 16, CPU)))
    (r1, p1), (r2, p2) = runs
    strip = [[{k: v for k, v in h.to_dict().items() if k != "seconds"} for h in r.history] for r in (r1, r2)]
    assert strip[0] == strip[1]
    assert np.array_equal(p1, p2)
    _, r3 = run(data, new_model(), strategy="gradual", epochs=3, lr_policy="one_cycle", seed=8)
    assert r3.history[-1].train_loss != r1.history[-1].train_loss


def test_early_stopping_stops_and_restores_the_best_epoch(data):
    model = new_model()
    scripted = iter([0.6, 0.8, 0.7, 0.75, 0.9, 0.95])
    states = []

    def metric(y_true, scores):
        states.append(state_copy(model))
        return next(scripted)

    result = fit(model, *data, task_kind="multilabel", device=CPU, log=quiet, val_metric=metric,
                 cfg=TrainConfig(epochs=6, batch_size=16, lr=1e-2, patience=2, lr_policy="constant", min_steps=0))
    assert result.epochs_run == 4 and result.best_epoch == 2
    assert result.stopped_reason.startswith("early stop at epoch 4")
    assert [h.val_auroc_macro for h in result.history] == [0.6, 0.8, 0.7, 0.75]
    for k, v in states[1].items():
        assert torch.equal(model.state_dict()[k], v), k
        assert torch.equal(result.best_state[k], v), k
    assert not torch.equal(states[3]["head.1.weight"], states[1]["head.1.weight"])


def test_early_stop_in_a_gradual_stage_moves_on_to_the_next(data):
    scripted = iter([0.5, 0.4, 0.6, 0.7])
    result = fit(new_model(), *data, task_kind="multilabel", device=CPU, log=quiet,
                 val_metric=lambda y, s: next(scripted),
                 cfg=TrainConfig(strategy="gradual", gradual_epochs=[3, 0, 2], patience=1, batch_size=16, min_steps=0))
    assert [h.stage for h in result.history] == ["head", "head", "all", "all"]
    assert result.best_epoch == 4
    assert result.stopped_reason == "completed 4 epochs; stage head stopped early at epoch 2"


def test_without_validation_images_the_last_epoch_is_kept(data):
    xt, yt, xv, yv = data
    model, result = run((xt, yt, xv[:0], yv[:0]), epochs=3, patience=1)
    assert result.best_epoch == 3 and result.epochs_run == 3 and result.notes
    assert math.isnan(result.history[-1].val_auroc_macro)


def test_builtin_val_auroc_learns_the_toy_task(data):
    _, result = run(data, strategy="full", epochs=6, lr_policy="one_cycle", augment=False)
    h = result.history
    assert all(math.isfinite(e.val_loss) and e.seconds >= 0 for e in h)
    assert max(e.val_auroc_macro for e in h) > 0.8
    # best = highest val AUROC, ties (a toy task reaches 1.0 more than once) broken by the lower val loss
    best = max(h, key=lambda e: (e.val_auroc_macro, -e.val_loss))
    assert result.best_epoch == best.epoch


def test_pos_weight_is_negatives_over_positives():
    y = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(pos_weight(y), [3.0, 1.0, 1 / 3])
    many = np.zeros((1000, 1), np.float32)
    many[0] = 1
    assert pos_weight(many)[0] == 100.0           # clamped
    crit = make_criterion("multilabel", y, CPU)
    np.testing.assert_allclose(crit.pos_weight.numpy(), [3.0, 1.0, 1 / 3])
    assert isinstance(make_criterion("multiclass", np.array([0, 1]), CPU), nn.CrossEntropyLoss)


def test_multiclass_and_binary_predict_probabilities():
    xt, yt = make_data(30, 0, k=3, multiclass=True)
    xv, yv = make_data(15, 1, k=3, multiclass=True)
    model = new_model(num_outputs=3)
    result = fit(model, xt, yt, xv, yv, task_kind="multiclass", device=CPU, log=quiet,
                 cfg=TrainConfig(epochs=2, batch_size=8, lr=1e-2))
    assert math.isfinite(result.history[-1].val_auroc_macro)
    p = predict(model, xv, "multiclass", 4, CPU)
    assert p.shape == (15, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    xb, yb = make_data(20, 2, k=1)
    model = new_model(num_outputs=1)
    fit(model, xb, yb[:, 0], xb, yb, task_kind="binary", device=CPU, log=quiet, cfg=TrainConfig(epochs=1))
    p = predict(model, xb, "binary", 64, CPU)
    assert p.shape == (20, 1) and ((p > 0) & (p < 1)).all()


def test_bad_inputs_raise_clear_errors(data):
    xt, yt, xv, yv = data
    with pytest.raises(DataError, match="uint8"):
        fit(new_model(), xt.astype(np.float32), yt, xv, yv, task_kind="multilabel", cfg=TrainConfig(), device=CPU)
    with pytest.raises(DataError, match="labels for"):
        fit(new_model(), xt, yt[:5], xv, yv, task_kind="multilabel", cfg=TrainConfig(), device=CPU)
    with pytest.raises(ConfigError, match="3 outputs but the task has 2"):
        fit(new_model(num_outputs=3), xt, yt, xv, yv, task_kind="multilabel", cfg=TrainConfig(), device=CPU)
    with pytest.raises(DataError, match="task kind"):
        predict(new_model(), xv, "regression", 8, CPU)


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="train.device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda:0")


def test_lr_find_suggests_a_sensible_lr_and_restores_the_model(data, tmp_path):
    model = new_model()
    set_trainable(model, 3)
    before = state_copy(model)
    cfg = TrainConfig(batch_size=16, strategy="full", augment=False)
    lrs, losses, suggestion = lr_find(model, data[0], data[1], task_kind="multilabel", cfg=cfg, device=CPU, log=quiet)
    suggested = suggestion.suggested
    assert len(lrs) == len(losses) >= 20 and np.all(np.diff(lrs) > 0) and np.all(np.isfinite(losses))
    assert lrs[0] == pytest.approx(1e-7)
    assert 1e-4 < suggested < 5 and suggested < lrs[int(np.argmin(losses))]
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert all(p.requires_grad for p in model.parameters()) and model.training
    out = plot_lr_find(lrs, losses, suggestion, tmp_path / "lr_find.png")
    assert out.stat().st_size > 1000


def test_frozen_real_resnet18_keeps_its_backbone(data):
    models = pytest.importorskip("medtransfer.models")
    model = models.create_model("resnet18", num_outputs=2, init="scratch", log=quiet)
    xt, yt = make_data(16, 0, size=32)
    xv, yv = make_data(8, 1, size=32)
    before = state_copy(model)
    result = fit(model, xt, yt, xv, yv, task_kind="multilabel", device=CPU, log=quiet,
                 cfg=TrainConfig(strategy="frozen", epochs=1, batch_size=8, min_steps=0))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    assert len(result.lr_trace) == 2 and result.lr_trace[0][:2] == [0.0, 0.0]
    model, result = run((xt, yt, xv, yv), model, strategy="gradual", epochs=3, batch_size=8, discriminative=0.1)
    assert [h.stage for h in result.history] == ["head", "head+late", "all"]
    assert predict(model, xv, "multilabel", 4, CPU).shape == (8, 2)


def test_best_epoch_tracker_breaks_ties_by_val_loss_and_counts_patience():
    from medtransfer.train.tracks import BestEpoch, EpochRecord

    model = torch.nn.Linear(2, 1)
    best = BestEpoch(has_val=True)
    rec = lambda e, auc, loss: EpochRecord(e, "all", 0.5, loss, auc, [1e-3], 0.1)   # noqa: E731
    assert best.update(model, rec(1, 0.7, 0.6))
    assert best.update(model, rec(2, 0.7, 0.5))          # same AUROC, lower loss: better
    assert not best.update(model, rec(3, 0.7, 0.55))
    assert not best.update(model, rec(4, 0.6, 0.1))
    assert best.epoch == 2 and best.out_of_patience(2) and not best.out_of_patience(3)
    best.reset_patience()
    assert not best.out_of_patience(1)
    no_val = BestEpoch(has_val=False)
    for e in (1, 2, 3):
        no_val.update(model, rec(e, float("nan"), float("nan")))
    assert no_val.epoch == 3 and not no_val.out_of_patience(1)


def test_step_hook_counts_every_optimiser_step_against_the_planned_total(data):
    xt, yt, xv, yv = data
    calls = []
    fit(new_model(), xt, yt, xv, yv, task_kind="multilabel", device=CPU, log=quiet,
        cfg=TrainConfig(epochs=3, batch_size=16, lr=1e-2, lr_policy="constant", min_steps=0),
        on_step=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 9) for k in range(1, 10)]        # 48 images / 16 = 3 steps x 3 epochs

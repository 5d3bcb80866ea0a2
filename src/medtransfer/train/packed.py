"""Several small runs trained as one fused model (issue 12): a *pack*.

At small N a GPU idles: a batch of 16-32 images leaves most of it unused, and K runs as K
processes share it badly. A pack trains K runs in one process with one vmapped forward and
backward per step (``torch.func.functional_call`` under ``vmap`` over the members' stacked
weights), so the device sees one K-times-larger problem.

What members must share is what makes their steps line up: the network's structure (arch and
number of outputs), the image size, the number of training images and the batch size (hence
the same batch shapes every step), the budget (rounds and steps) and the strategy (the same
layers train, and BatchNorm is in the same mode, in every round). Everything else is the
member's own, exactly as ``fit`` builds it: initial weights, LR, discriminative ratio, LR
policy and its momentum cycle, optimiser and weight decay, seed (batches, augmentation draws,
dropout masks), dropout rate, training and validation images, patience, best-round tracking.

Each member stays a real ``nn.Module`` with its own optimiser and scheduler: the fused forward
stacks the members' parameters every step (so gradients land on each member's own leaves) and
runs on BatchNorm buffers the members share storage with (so running statistics are each
member's own). Validation calls each member's module as ``fit`` does. Dropout masks are drawn
from a per-member generator seeded as ``fit`` seeds the global RNG, so on the CPU a member
sees the same batches, augmentations and masks as its unpacked run; its numbers differ only
by the float rounding of the fused kernels (tested to 1e-4).

The pack is K tracks driven by ``train.driver`` with the ``FusedStep`` below, so rounds,
validation, best rounds, patience, the divergence check, the device's choices and the log lines
are exactly ``fit``'s: a member whose stage runs out of patience waits for the others to finish
that stage (its own sequence of steps is unchanged); a member that stops early or diverges leaves
the pack without stopping the others.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ..config import TrainConfig
from ..errors import ConfigError
from ..kinds import TaskKind
from .augment import prepare_batch
from .device import defers_loss_check, device_autocast, reproducible
from .driver import DrivePlan, Step, drive
from .inputs import check_task_kind
from .strategies import set_trainable
from .tracks import FitResult, FitSpec, Track, check_inputs, open_track


class PackMember(FitSpec):
    """One run of a pack: its model (built with its init) and data, and its own TrainConfig."""


# TrainConfig keys that must agree inside a pack (the rest may differ per member)
SHARED_TRAIN_KEYS = ("epochs", "min_steps", "steps", "batch_size", "strategy", "gradual_epochs")


def pack_key(model: nn.Module, n_train: int, image_shape: tuple[int, ...], cfg: TrainConfig) -> tuple:
    """Runs with equal keys can share a pack (see the module docstring)."""
    structure = (getattr(model, "arch", type(model).__name__), getattr(model, "num_outputs", None),
                 tuple((n, tuple(p.shape)) for n, p in model.named_parameters()))
    return (structure, int(n_train), tuple(image_shape)) + tuple(
        tuple(v) if isinstance(v := getattr(cfg, k), list) else v for k in SHARED_TRAIN_KEYS)


def unfusable_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot be fused (None when it can): only the head's dropout can be drawn per member."""
    head_dropout = model.head[0] if isinstance(getattr(model, "head", None), nn.Sequential) else None
    if not isinstance(head_dropout, nn.Dropout):
        return "the model has no Sequential(Dropout, Linear) head"
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module is not head_dropout and module.p > 0:
            return f"dropout inside the backbone ({name}, p={module.p}) cannot be drawn per member"
        rate = getattr(module, "drop_prob", getattr(module, "p", 0.0))   # timm DropPath, torchvision StochasticDepth
        if type(module).__name__ in ("DropPath", "StochasticDepth") and rate:
            return f"stochastic depth in the backbone ({name}, rate {rate}) cannot be drawn per member"
    return None


class _MaskDropout(nn.Module):
    """Dropout whose mask (already scaled by 1/(1-p)) arrives as a buffer, one per member."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mask", torch.ones(1, n_features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask if self.training else x


def fit_packed(members: list[PackMember], *, task_kind: TaskKind, device: torch.device,
               log: Callable[[str], None] = print) -> list[FitResult | Exception]:
    """Train ``members`` as one fused model; per member its FitResult, or the exception that ended it."""
    check_task_kind(task_kind)
    if not members:
        return []
    labels = [_check_member(i, m, members[0], task_kind) for i, m in enumerate(members)]
    with reproducible(device):
        tracks = [open_track(m, y, task_kind, device) for m, y in zip(members, labels)]
        plan = DrivePlan.of(members[0].cfg, len(members[0].train_images), task_kind, defers_loss_check(device),
                            note=" (packed)", budget_note=f" (packed with {len(members) - 1} other run(s))")
        log(f"pack of {len(members)}: {plan.budget.describe()}")
        return drive(tracks, FusedStep(tracks), plan)


def _check_member(i: int, m: PackMember, first: PackMember, task_kind: TaskKind) -> tuple[np.ndarray, np.ndarray]:
    """``fit``'s input checks (its checked labels), then whether ``m``'s steps line up with member 0's
    and it can be fused."""
    labels = check_inputs(m, task_kind, f"pack member {i}: ")
    if _key(m) != _key(first):
        raise ConfigError(f"pack member {i} cannot share a pack with member 0: they differ in architecture, "
                          f"image size, N or one of train.{', train.'.join(SHARED_TRAIN_KEYS)}")
    if (why := unfusable_reason(m.model)) is not None:
        raise ConfigError(f"pack member {i} cannot be fused: {why}")
    return labels


def _key(m: PackMember) -> tuple:
    return pack_key(m.model, len(m.train_images), m.train_images.shape[1:], m.cfg)


class FusedStep(Step):
    """The step of K members at once: one vmapped forward over their stacked weights, one backward.

    The members' modules keep their own parameters (stacked afresh every step, so gradients land on
    each member's leaves) and share their buffers' storage with the stacked buffers the fused forward
    updates (so running statistics stay each member's own), until ``close``.

    Each member's own module is channels_last on CUDA, as in ``fit`` (its validation passes run so),
    but the fused forward stacks the weights in the default layout: under vmap channels_last
    activations send adaptive_avg_pool2d to torch's slow per-sample fallback (no batching rule for
    as_strided_), and a layout cannot even be queried inside vmap.
    """

    def __init__(self, tracks: list[Track]):
        self.tracks = tracks
        self.template = _fused_template(tracks[0].model)
        self.buffers = _share_buffers([t.model for t in tracks])
        # ``fit`` seeds the global RNG with the run's seed; its only draws while training are dropout masks
        self.dropout_rngs = [torch.Generator(device=t.device).manual_seed(t.cfg.seed) for t in tracks]
        # each member's parameters by name, walked once: the Parameter objects stay the same through a fit
        # (set_trainable flips requires_grad, a device or layout move replaces their data in place)
        self.named = [dict(t.model.named_parameters()) for t in tracks]

    def start_round(self, n_trainable: int) -> None:
        set_trainable(self.template, n_trainable)   # BatchNorm's mode in the fused forward is the template's

    def losses(self, tracks: list[Track], batches: list[torch.Tensor]) -> list[torch.Tensor]:
        device = tracks[0].device
        slots = [self.tracks.index(t) for t in tracks]
        n_features = self.template.head[1].in_features
        x = torch.stack([prepare_batch(t.data.x_train[idx], t.cfg.augment, t.data.generator)
                         for t, idx in zip(tracks, batches)])
        masks = torch.stack([_draw_mask(t.model.head[0].p, self.dropout_rngs[k], len(idx), n_features, device)
                             for t, k, idx in zip(tracks, slots, batches)])
        own = [self.named[k] for k in slots]
        # the default layout whatever the members' (see the class docstring); a no-op when they have it already
        params = {n: torch.stack([p[n] for p in own]).contiguous() for n in own[0]}
        everyone = len(tracks) == len(self.tracks)
        bufs = self.buffers if everyone else {n: b[slots] for n, b in self.buffers.items()}
        bufs = dict(bufs, **{"head.0.mask": masks})

        def forward(p, b, xx):
            return functional_call(self.template, (p, b), (xx,))

        with device_autocast(device):
            logits = vmap(forward, randomness="error")(params, bufs, x)
        if not everyone:   # running statistics were updated on a copy: write them back
            with torch.no_grad():
                for n in self.buffers:
                    self.buffers[n][slots] = bufs[n]
        return [t.data.criterion(logits[j].float(), t.data.t_train[idx])
                for j, (t, idx) in enumerate(zip(tracks, batches))]

    def close(self) -> None:
        _unshare_buffers([t.model for t in self.tracks])


def _share_buffers(models: list[nn.Module]) -> dict[str, torch.Tensor]:
    """Stack the members' buffers and make each member's buffer a view of its slice (one storage)."""
    names = [n for n, _ in models[0].named_buffers()]
    stacked = {n: torch.stack([dict(m.named_buffers())[n].detach() for m in models]) for n in names}
    for k, model in enumerate(models):
        for name in names:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner)._buffers[leaf] = stacked[name][k]
    return stacked


def _unshare_buffers(models: list[nn.Module]) -> None:
    for model in models:
        for name, buf in list(model.named_buffers()):
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner)._buffers[leaf] = buf.clone()


def _fused_template(model: nn.Module) -> nn.Module:
    """The members' structure on the meta device, its head dropout taking a mask per member."""
    template = copy.deepcopy(model).to("meta")
    template.head[0] = _MaskDropout(model.head[1].in_features)
    return template


def _draw_mask(p: float, rng: torch.Generator, batch: int, n_features: int, device: torch.device) -> torch.Tensor:
    """The mask ``nn.Dropout(p)`` would draw from the global RNG (scaled), from the member's own generator."""
    if p == 0:
        return torch.ones(batch, n_features, device=device)
    return torch.empty(batch, n_features, device=device).bernoulli_(1 - p, generator=rng).div_(1 - p)

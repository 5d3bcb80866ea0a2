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

A member whose stage runs out of patience waits for the others to finish that stage (its own
sequence of steps is unchanged); a member that stops early or diverges leaves the pack
without stopping the others.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ..budget import budget_of
from ..config import TrainConfig
from ..errors import ConfigError, DataError, TrainingDiverged
from ..evaluate.metrics import macro_auroc
from .augment import prepare_batch
from .inputs import BatchStream, check_images, check_labels, check_task_kind, make_criterion, to_device
from .device import device_autocast, reproducible
from .loop import (BestEpoch, EpochRecord, FitResult, _Batches, check_outputs,
                   validate)
from .lr_policies import make_scheduler
from .strategies import build_optimizer, group_lr_row, set_trainable, stages


@dataclass
class PackMember:
    """One run of a pack: its model (built with its init) and data, and its own TrainConfig."""
    model: nn.Module
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    cfg: TrainConfig
    log: Callable[[str], None] = print
    val_metric: Callable[[np.ndarray, np.ndarray], float] | None = None


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


@dataclass
class _State:
    """A member's fit in progress (what ``fit`` keeps in local variables)."""
    member: PackMember
    data: _Batches
    stream: BatchStream
    dropout_rng: torch.Generator
    best: BestEpoch
    history: list[EpochRecord] = field(default_factory=list)
    lr_trace: list[list[float]] = field(default_factory=list)
    epoch: int = 0
    in_stage: bool = True
    stopped_reason: str | None = None
    stages_cut: list[str] = field(default_factory=list)
    error: Exception | None = None
    optimizer: torch.optim.Optimizer | None = None
    index: list[int | None] | None = None
    scheduler: object = None
    round_losses: list[torch.Tensor] = field(default_factory=list)
    round_seen: int = 0
    batches: Iterator[torch.Tensor] | None = None    # this round's batch indices


def fit_packed(members: list[PackMember], *, task_kind: str, device: torch.device,
               log: Callable[[str], None] = print) -> list[FitResult | Exception]:
    """Train ``members`` as one fused model; per member its FitResult, or the exception that ended it."""
    check_task_kind(task_kind)
    if not members:
        return []
    first = members[0]
    key = pack_key(first.model, len(first.train_images), first.train_images.shape[1:], first.cfg)
    for i, m in enumerate(members):
        check_images(m.train_images, f"pack member {i}: train images")
        check_images(m.val_images, f"pack member {i}: val images")
        if len(m.train_images) == 0:
            raise DataError(f"pack member {i}: the training subset is empty")
        if pack_key(m.model, len(m.train_images), m.train_images.shape[1:], m.cfg) != key:
            raise ConfigError(f"pack member {i} cannot share a pack with member 0: they differ in architecture, "
                              f"image size, N or one of train.{', train.'.join(SHARED_TRAIN_KEYS)}")
        if (why := unfusable_reason(m.model)) is not None:
            raise ConfigError(f"pack member {i} cannot be fused: {why}")
    with reproducible(device):
        return _fit_packed(members, task_kind, device, log)


def _start(m: PackMember, task_kind: str, device: torch.device) -> _State:
    y_train = check_labels(m.train_labels, len(m.train_images), task_kind, "train labels")
    y_val = check_labels(m.val_labels, len(m.val_images), task_kind, "val labels")
    m.model.to(device)
    data = _Batches(x_train=to_device(m.train_images, device), t_train=to_device(y_train, device),
                    x_val=to_device(m.val_images, device), t_val=to_device(y_val, device), y_val=y_val,
                    criterion=make_criterion(task_kind, y_train, device),
                    generator=torch.Generator(device=device).manual_seed(m.cfg.seed),
                    metric=m.val_metric or (lambda y, s: macro_auroc(y, s, task_kind)))
    check_outputs(m.model, data.x_train[:2], y_train, task_kind)
    # ``fit`` seeds the global RNG with the run's seed; its only draws while training are dropout masks
    dropout_rng = torch.Generator(device=device).manual_seed(m.cfg.seed)
    return _State(member=m, data=data, stream=BatchStream(len(m.train_images), m.cfg.batch_size, data.generator),
                  dropout_rng=dropout_rng, best=BestEpoch(has_val=len(m.val_images) > 0))


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


def _draw_mask(state: _State, batch: int, n_features: int, device: torch.device) -> torch.Tensor:
    """The mask ``nn.Dropout`` would draw from the global RNG (scaled), from the member's own generator."""
    p = state.member.model.head[0].p
    if p == 0:
        return torch.ones(batch, n_features, device=device)
    return torch.empty(batch, n_features, device=device).bernoulli_(1 - p, generator=state.dropout_rng).div_(1 - p)


def _fused_step(template, states: list[_State], buffers: dict[str, torch.Tensor], active: list[int],
                cfg_augment: list[bool], device: torch.device, step: int) -> None:
    """One optimiser step of every active member, with one vmapped forward and backward."""
    xs, masks, idxs = [], [], []
    n_features = template.head[1].in_features
    for k in active:
        st = states[k]
        lrs = group_lr_row(st.optimizer, st.index)
        st.lr_trace.append(lrs)
        idx = next(st.batches).to(device, non_blocking=True)
        idxs.append(idx)
        xs.append(prepare_batch(st.data.x_train[idx], cfg_augment[k], st.data.generator))
        masks.append(_draw_mask(st, len(idx), n_features, device))
    x = torch.stack(xs)
    own = [dict(states[k].member.model.named_parameters()) for k in active]   # one walk per member per step
    params = {n: torch.stack([p[n] for p in own]) for n in own[0]}
    everyone = len(active) == len(states)
    bufs = buffers if everyone else {n: b[active] for n, b in buffers.items()}
    bufs = dict(bufs, **{"head.0.mask": torch.stack(masks)})

    def forward(p, b, xx):
        return functional_call(template, (p, b), (xx,))

    with device_autocast(device):
        logits = vmap(forward, randomness="error")(params, bufs, x)
    if not everyone:   # running statistics were updated on a copy: write them back
        with torch.no_grad():
            for n in buffers:
                buffers[n][active] = bufs[n]
    losses = []
    for j, k in enumerate(active):
        st = states[k]
        losses.append(st.data.criterion(logits[j].float(), st.data.t_train[idxs[j]]))
    values = torch.stack([loss.detach() for loss in losses]).tolist() if device.type == "cpu" else None
    total = None
    for j, k in enumerate(active):
        st = states[k]
        if values is not None and not math.isfinite(values[j]):
            kind = "nan" if math.isnan(values[j]) else "inf"
            st.error = TrainingDiverged(f"loss became {kind} at epoch {st.epoch} step {step} "
                                        f"(lr={max(st.lr_trace[-1]):.3g})")
            continue
        total = losses[j] if total is None else total + losses[j]
        st.optimizer.zero_grad(set_to_none=True)
    if total is None:
        return
    total.backward()
    for j, k in enumerate(active):
        st = states[k]
        if st.error is not None:
            continue
        st.optimizer.step()
        st.scheduler.step()
        st.round_losses.append(losses[j].detach() * len(idxs[j]))
        st.round_seen += len(idxs[j])


def _fit_packed(members: list[PackMember], task_kind: str, device: torch.device,
                log: Callable[[str], None]) -> list[FitResult | Exception]:
    states = [_start(m, task_kind, device) for m in members]
    budget = budget_of(len(members[0].train_images), members[0].cfg)
    unit = "epoch" if budget.round_steps == budget.steps_per_epoch else "round"
    plan = stages(members[0].cfg)
    total_epochs = sum(s.epochs for s in plan)
    for st in states:
        st.member.log(budget.describe() + f" (packed with {len(members) - 1} other run(s))")
        if not st.best.has_val:
            st.member.log("no validation images: the last epoch is kept and early stopping is off")
    models = [m.model for m in members]
    template = _fused_template(models[0])
    buffers = _share_buffers(models)
    augment = [m.cfg.augment for m in members]
    log(f"pack of {len(members)}: {budget.describe()}")
    try:
        for s_i, stage in enumerate(plan):
            for st in states:
                if st.error is None and st.stopped_reason is None:
                    set_trainable(st.member.model, stage.n_trainable)
                    st.optimizer, st.index = build_optimizer(st.member.model, stage.n_trainable, st.member.cfg)
                    st.scheduler = make_scheduler(st.optimizer, st.member.cfg.lr_policy,
                                                  stage.epochs * budget.round_steps, budget.round_steps, st.member.cfg)
                    st.best.reset_patience()
                    st.in_stage = True
            for _ in range(stage.epochs):
                active = [k for k, st in enumerate(states)
                          if st.in_stage and st.error is None and st.stopped_reason is None]
                if not active:
                    break
                set_trainable(template, stage.n_trainable)
                started = time.perf_counter()
                for k in active:
                    st = states[k]
                    st.epoch += 1
                    set_trainable(st.member.model, stage.n_trainable)
                    st.batches = st.stream.take(budget.round_steps)
                    st.round_losses, st.round_seen = [], 0
                for step in range(1, budget.round_steps + 1):
                    stepping = [k for k in active if states[k].error is None]
                    if not stepping:   # every member of this round diverged
                        break
                    _fused_step(template, states, buffers, stepping, augment, device, step)
                seconds = (time.perf_counter() - started) / len(active)
                for k in active:
                    _end_round(states[k], stage, s_i == len(plan) - 1, task_kind, budget, unit, total_epochs,
                               seconds, device)
    finally:
        _unshare_buffers(models)
    return [_result(st, unit, budget, device) for st in states]


def _end_round(st: _State, stage, last_stage: bool, task_kind: str, budget, unit: str, total_epochs: int,
               seconds: float, device: torch.device) -> None:
    """Validate a member after a round, as ``fit`` does, and apply its patience."""
    if st.error is not None:
        return
    m, data = st.member, st.data
    train_loss = torch.stack(st.round_losses).sum().item() / st.round_seen
    if not math.isfinite(train_loss):   # on a GPU the per-step check is skipped (it would stall the queue)
        st.error = TrainingDiverged(f"training loss became {train_loss} in epoch {st.epoch}")
        return
    try:
        val_loss, auroc = validate(m.model, data, task_kind, m.cfg.batch_size, device, st.epoch, max(st.lr_trace[-1]))
    except TrainingDiverged as err:
        st.error = err
        return
    record = EpochRecord(epoch=st.epoch, stage=stage.name, train_loss=train_loss, val_loss=val_loss,
                         val_auroc_macro=auroc, lrs=list(st.lr_trace[-1]), seconds=seconds)
    st.best.update(m.model, record)
    st.history.append(record)
    m.log(f"{unit} {st.epoch}/{total_epochs} [{stage.name}] train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
          f"val_auroc {auroc:.4f} lr {max(record.lrs):.2e} {seconds:.1f}s (packed)")
    if st.best.out_of_patience(m.cfg.patience):
        msg = f"no val AUROC gain for {m.cfg.patience} {unit}(s) (best {unit} {st.best.epoch})"
        if last_stage:
            st.stopped_reason = f"early stop at {unit} {st.epoch}: {msg}"
        else:
            m.log(f"stage {stage.name} stopped early at {unit} {st.epoch}: {msg}")
            st.stages_cut.append(f"stage {stage.name} stopped early at {unit} {st.epoch}")
        st.in_stage = False


def _result(st: _State, unit: str, budget, device: torch.device) -> FitResult | Exception:
    if st.error is not None:
        st.member.log(f"diverged in the pack: {st.error}")
        return st.error
    model = st.member.model
    model.load_state_dict(st.best.state)
    model.eval()
    reason = st.stopped_reason or (f"completed {st.epoch} {unit}s" + "".join(f"; {c}" for c in st.stages_cut))
    st.member.log(f"best {unit} {st.best.epoch} of {st.epoch} ({reason})")
    notes = [] if st.best.has_val else ["no validation images: the last epoch is kept and early stopping is off"]
    return FitResult(best_state=st.best.state, history=st.history, lr_trace=st.lr_trace, epochs_run=st.epoch,
                     best_epoch=st.best.epoch, stopped_reason=reason, notes=notes, budget=budget)

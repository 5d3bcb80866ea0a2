"""The one training driver: stages -> rounds -> steps -> validation -> best round -> ``FitResult``.

Every optimiser step in the package goes through ``run_steps`` here: an ordinary ``fit`` (one
model, ``loop.OneModel``), a packed fit (K fused models, ``packed.FusedStep``) and the LR range test
(``lr_find.RangeTest``). What differs between them is only how a step computes its losses, which
a ``Step`` object plugs in; drawing the batches, recording the LRs, checking for a diverging loss,
the backward pass and the optimiser and scheduler steps are written once, below.

``drive`` puts the steps in order for fits: gradual-unfreezing stages of validation rounds, each
round followed by validation, best-round tracking and patience, and one ``FitResult`` per track
(or the TrainingDiverged that ended it: a track that diverges leaves, the others go on).
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..budget import Budget, budget_of
from ..config import TrainConfig
from ..errors import TrainingDiverged
from ..kinds import TaskKind
from .device import device_autocast, release_model
from .inputs import scores_from_logits
from .lr_policies import make_scheduler
from .strategies import GROUP_NAMES, N_GROUPS, Stage, build_optimizer, group_lr_row, set_trainable, stages
from .tracks import EpochRecord, FitResult, Track


class Step(ABC):
    """How one optimiser step computes the losses of the tracks that take it (the pluggable part).

    The hooks' defaults do nothing; ``losses`` is the step itself.
    """

    def start_round(self, n_trainable: int) -> None:
        """Called before each round's steps with the number of layer groups that train."""

    def before(self, tracks: list[Track], step: int) -> None:
        """Called before step ``step`` (1-based within ``run_steps``) draws its batches."""

    @abstractmethod
    def losses(self, tracks: list[Track], batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each track's training loss on its batch (index tensors into ``track.data.x_train``)."""

    def accept(self, track: Track, value: float | None) -> bool:
        """After the divergence check: False ends the track's steps here, before this step's update.
        ``value`` is the loss, read only when the check reads it at once (None when deferred)."""
        return True

    def update(self, tracks: list[Track], losses: list[torch.Tensor]) -> None:
        """One backward through the sum of the losses (each track's gradient is its own loss's, so a fused
        pack needs one backward and a single model is untouched), then every optimiser and scheduler steps."""
        apply_update([t.optimizer for t in tracks], [t.scheduler for t in tracks], losses)

    def close(self) -> None:
        """Called once when the drive ends, however it ends."""


def apply_update(optimizers: list, schedulers: list, losses: list[torch.Tensor]) -> None:
    """The one place the package updates weights: zero the gradients, one backward through the sum of the
    losses, then each optimiser steps and its scheduler (None: none) after it. The training drive and the
    study's timing probe both call it, so the probe times the very update the runs make."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    total.backward()
    for optimizer, scheduler in zip(optimizers, schedulers, strict=True):
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def _diverged(value: float, epoch: int, step: int, lr: float) -> TrainingDiverged:
    kind = "nan" if math.isnan(value) else "inf"
    return TrainingDiverged(f"loss became {kind} at epoch {epoch} step {step} (lr={lr:.3g})")


class LossCheck:
    """Ends a track whose training loss is NaN or infinite, naming the epoch, the step and its LR.

    At once (the CPU): each loss is read before its update, so the step that broke never lands.
    Deferred (a GPU): reading a loss waits for the device, so step s's loss is read after step s+1 is
    queued and the last one when the steps end. The range test reads every loss (it smooths them), so
    it always checks at once.
    """

    def __init__(self, deferred: bool):
        self.deferred = deferred
        self._pending: list[tuple[Track, torch.Tensor, int, float]] = []

    def now(self, tracks: list[Track], losses: list[torch.Tensor], step: int) -> list[float | None]:
        if self.deferred:
            return [None] * len(tracks)
        values = torch.stack([loss.detach() for loss in losses]).tolist()
        for t, value in zip(tracks, values):
            if not math.isfinite(value):
                t.error = _diverged(value, t.epoch, step, max(t.lr_trace[-1]))
        return values

    def later(self, tracks: list[Track], losses: list[torch.Tensor], step: int) -> None:
        if self.deferred:
            self.flush()
            self._pending = [(t, loss.detach(), step, max(t.lr_trace[-1])) for t, loss in zip(tracks, losses)]

    def flush(self) -> None:
        if not self._pending:
            return
        values = torch.stack([loss for _, loss, _, _ in self._pending]).tolist()
        for (t, _, step, lr), value in zip(self._pending, values):
            if t.error is None and not math.isfinite(value):
                t.error = _diverged(value, t.epoch, step, lr)
        self._pending = []


def run_steps(step: Step, tracks: list[Track], n_steps: int, check: LossCheck,
              on_step: Callable[[], None] | None = None) -> dict[Track, float]:
    """The package's one step loop: ``n_steps`` optimiser steps of every track that stays healthy.

    Each step: its LR row is recorded, its next batch drawn from the track's stream, ``step`` computes
    the losses, ``check`` ends a diverging track, ``step.accept`` may end one, the rest update.
    Returns the mean training loss (per image) of each track that neither diverged nor was ended.
    """
    live = list(tracks)
    draws = {t: t.stream.take(n_steps) for t in tracks}
    weighted: dict[Track, list[torch.Tensor]] = {t: [] for t in tracks}
    seen = dict.fromkeys(tracks, 0)
    for n in range(1, n_steps + 1):
        live = [t for t in live if t.error is None]
        if not live:
            break
        step.before(live, n)
        batches = []
        for t in live:
            t.lr_trace.append(group_lr_row(t.optimizer, t.index))
            batches.append(next(draws[t]).to(t.device, non_blocking=True))
        losses = step.losses(live, batches)
        values = check.now(live, losses, n)
        kept = [j for j, (t, v) in enumerate(zip(live, values)) if t.error is None and step.accept(t, v)]
        live, losses, batches = [live[j] for j in kept], [losses[j] for j in kept], [batches[j] for j in kept]
        if not live:
            continue
        step.update(live, losses)
        check.later(live, losses, n)
        for t, loss, idx in zip(live, losses, batches):
            weighted[t].append(loss.detach() * len(idx))
            seen[t] += len(idx)
        if on_step is not None:
            on_step()
    check.flush()
    return {t: torch.stack(w).sum().item() / seen[t] for t, w in weighted.items() if t.error is None and w}


@dataclass(frozen=True)
class DrivePlan:
    """What every track of one drive shares: the task, the step budget, the stages and how losses are checked.

    ``note`` ends each round's log line and ``budget_note`` the budget's (a pack says so).
    """
    task_kind: TaskKind
    budget: Budget
    stages: list[Stage]
    deferred_check: bool
    on_step: Callable[[int, int], None] | None = None   # (steps done, steps planned): a progress bar's hook
    note: str = ""
    budget_note: str = ""

    @classmethod
    def of(cls, cfg: TrainConfig, n_train: int, task_kind: TaskKind, deferred_check: bool, **extra) -> "DrivePlan":
        """The plan of ``cfg`` for ``n_train`` training images (``extra``: on_step, note, budget_note)."""
        return cls(task_kind, budget_of(n_train, cfg), stages(cfg), deferred_check, **extra)

    @property
    def unit(self) -> str:
        """What the log calls a round: an epoch when a round is one pass over the training images."""
        return "epoch" if self.budget.round_steps == self.budget.steps_per_epoch else "round"

    @property
    def total_rounds(self) -> int:
        return sum(s.epochs for s in self.stages)


def drive(tracks: list[Track], step: Step, plan: DrivePlan) -> list[FitResult | Exception]:
    """Train ``tracks`` through ``plan``'s stages and rounds with ``step``; per track its FitResult (the best
    round's weights loaded, eval mode), or the TrainingDiverged that ended it.

    A track whose stage runs out of patience waits for the others to finish that stage (its own
    sequence of steps is unchanged); one that stops early or diverges leaves without stopping the others.
    """
    for t in tracks:
        t.log(plan.budget.describe() + plan.budget_note)
        for note in t.notes:
            t.log(note)
    check, tick = LossCheck(plan.deferred_check), _ticker(plan)
    try:
        for s_i, stage in enumerate(plan.stages):
            _start_stage(tracks, stage, plan)
            for _ in range(stage.epochs):
                active = [t for t in tracks if t.in_stage and t.running]
                if not active:
                    break
                _run_round(active, step, stage, s_i == len(plan.stages) - 1, plan, (check, tick))
    finally:
        step.close()
        for t in tracks:
            release_model(t.model, t.device)
    return [_result(t, plan) for t in tracks]


def _ticker(plan: DrivePlan) -> Callable[[], None] | None:
    """``plan.on_step`` as a per-step callback that counts; its total assumes no early stop."""
    if plan.on_step is None:
        return None
    total, done = plan.total_rounds * plan.budget.round_steps, 0

    def tick() -> None:
        nonlocal done
        done += 1
        plan.on_step(done, total)

    return tick


def _start_stage(tracks: list[Track], stage: Stage, plan: DrivePlan) -> None:
    """A fresh optimiser and LR schedule over the layer groups ``stage`` trains, for every running track."""
    round_steps = plan.budget.round_steps
    for t in tracks:
        if not t.running:
            continue
        set_trainable(t.model, stage.n_trainable)
        t.optimizer, t.index = build_optimizer(t.model, stage.n_trainable, t.cfg)
        # schedules are sized in steps: a "cycle epoch" or a step-policy "epoch" is one validation round
        t.scheduler = make_scheduler(t.optimizer, t.cfg.lr_policy, stage.epochs * round_steps, round_steps, t.cfg)
        if len(plan.stages) > 1:
            t.log(f"stage {stage.name}: training {'+'.join(GROUP_NAMES[N_GROUPS - stage.n_trainable:])} "
                  f"for {stage.epochs} {plan.unit}(s), {stage.epochs * round_steps} steps")
        t.best.reset_patience()
        t.in_stage = True


def _run_round(active: list[Track], step: Step, stage: Stage, last_stage: bool, plan: DrivePlan,
               checks: tuple[LossCheck, Callable[[], None] | None]) -> None:
    """One validation round of the ``active`` tracks: their steps together, then each one's validation."""
    step.start_round(stage.n_trainable)
    for t in active:
        t.epoch += 1
        set_trainable(t.model, stage.n_trainable)   # validation left the whole model in eval mode
    started = time.perf_counter()
    train_losses = run_steps(step, active, plan.budget.round_steps, *checks)
    shared = (time.perf_counter() - started) / len(active)   # a pack's steps are shared by its members
    for t in active:
        if t.error is None:
            _end_round(t, train_losses[t], stage, last_stage, plan, shared)


def _end_round(t: Track, train_loss: float, stage: Stage, last_stage: bool, plan: DrivePlan,
               step_seconds: float) -> None:
    """Validate a track after a round, record and log the round, keep its best, and apply its patience."""
    started = time.perf_counter()
    try:
        val_loss, auroc = validate(t, plan.task_kind, max(t.lr_trace[-1]))
    except TrainingDiverged as err:
        t.error = err
        return
    record = EpochRecord(epoch=t.epoch, stage=stage.name, train_loss=train_loss, val_loss=val_loss,
                         val_auroc_macro=auroc, lrs=list(t.lr_trace[-1]),
                         seconds=step_seconds + time.perf_counter() - started)
    t.best.update(t.model, record)
    t.history.append(record)
    unit = plan.unit
    t.log(f"{unit} {t.epoch}/{plan.total_rounds} [{stage.name}] train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
          f"val_auroc {auroc:.4f} lr {max(record.lrs):.2e} {record.seconds:.1f}s{plan.note}")
    if t.best.out_of_patience(t.cfg.patience):
        msg = f"no val AUROC gain for {t.cfg.patience} {unit}(s) (best {unit} {t.best.epoch})"
        if last_stage:
            t.stopped_reason = f"early stop at {unit} {t.epoch}: {msg}"
        else:
            t.log(f"stage {stage.name} stopped early at {unit} {t.epoch}: {msg}")
            t.stages_cut.append(f"stage {stage.name} stopped early at {unit} {t.epoch}")
        t.in_stage = False


def _result(t: Track, plan: DrivePlan) -> FitResult | Exception:
    if t.error is not None:
        t.log(f"diverged: {t.error}{plan.note}")
        return t.error
    t.model.load_state_dict(t.best.state)
    t.model.eval()
    unit = plan.unit
    reason = t.stopped_reason or (f"completed {t.epoch} {unit}s" + "".join(f"; {cut}" for cut in t.stages_cut))
    t.log(f"best {unit} {t.best.epoch} of {t.epoch} ({reason})")
    return FitResult(best_state=t.best.state, history=t.history, lr_trace=t.lr_trace, epochs_run=t.epoch,
                     best_epoch=t.best.epoch, stopped_reason=reason, notes=t.notes, budget=plan.budget)


def validate(t: Track, task_kind: TaskKind, lr: float) -> tuple[float, float]:
    """(val loss, val AUROC) after a round, NaN for both without validation images; TrainingDiverged
    when the round's last updates broke the weights."""
    data = t.data
    if not len(data.x_val):
        return float("nan"), float("nan")
    val_loss, val_scores = _evaluate(t, task_kind)
    if not math.isfinite(val_loss):
        kind = "nan" if math.isnan(val_loss) else "inf"
        raise TrainingDiverged(f"validation loss became {kind} at epoch {t.epoch} (lr={lr:.3g})")
    return val_loss, float(data.metric(data.y_val, val_scores))


def _evaluate(t: Track, task_kind: TaskKind) -> tuple[float, np.ndarray]:
    """Mean loss and scores (probabilities) over the validation images, no augmentation."""
    model, data, device, batch_size = t.model, t.data, t.device, t.cfg.batch_size
    model.eval()
    total = torch.zeros((), device=device)
    scores = []
    with torch.inference_mode():
        for start in range(0, len(data.x_val), batch_size):
            x = data.inputs.eval_batch(data.x_val[start:start + batch_size], device)
            with device_autocast(device):
                logits = data.inputs.logits(model, x).float()
            y = data.t_val[start:start + batch_size]
            total += data.criterion(logits, y) * len(y)
            scores.append(scores_from_logits(logits, task_kind))
    return total.item() / len(data.x_val), torch.cat(scores).float().cpu().numpy()

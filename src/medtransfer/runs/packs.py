"""CNN runs trained together (issue 12): one fused model where their steps line up, one at a time where not.

Each run of a pack writes the same folder ``train_run`` writes (config.yaml first, metrics.json
last, or failed.json). Runs are grouped by a typed key: a ``FusedKey`` (``train.packed.pack_key``
on the prepared data: the same structure, number of training images, batch size, budget and
strategy, plus the task kind and device) puts runs whose steps line up into one fused model; an
``AloneKey`` marks a run whose model cannot be fused, which trains by itself and says why in its
train.log. A run that fails leaves the others going. An interrupt stops the pack; runs without
metrics.json are rerun by a resume.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, resolve_data_root
from ..errors import reason_of
from ..kinds import SelectionKind, TaskKind
from ..parallel import torch_threads
from ..run_folder import RunFolder, RunMetrics
from ..train.packed import PackMember, fit_packed, pack_key, unfusable_reason
from .cnn import PreparedRun, finish_cnn_run, fit_prepared, prepare_cnn_run
from .folder_protocol import RunLog, open_run_folder, record_failure, write_finished


@dataclass(frozen=True)
class FusedKey:
    """Runs with equal keys train as one fused model: their steps line up on one device."""
    steps: tuple        # train.packed.pack_key: structure, training images, image shape, batch, budget, strategy
    task_kind: TaskKind
    device: str


@dataclass(frozen=True)
class AloneKey:
    """A run whose model cannot be fused (dropout or stochastic depth in its backbone): it trains by itself."""
    position: int       # its place in the pack


GroupKey = FusedKey | AloneKey


@dataclass
class PackSlot:
    """One run of a pack while it is being trained: its folder, log and what it has so far."""
    cfg: RunConfig
    folder: RunFolder
    log: RunLog
    started: float
    prepared: PreparedRun | None = None
    result: object = None     # FitResult, or the exception that ended the run
    final: object = None      # RunMetrics once metrics.json is written, or the exception in failed.json
    own_seconds: float = 0.0  # this run's share of the pack's time so far
    fused_with: int = 1       # how many runs (itself included) it trained with as one fused model


def train_pack(cfgs: list[RunConfig], outs: list[Path], data_root: Path | None = None, *,
               echo: bool = False) -> list[RunMetrics | BaseException]:
    """Train CNN runs together; per run its metrics, or the exception that ended it (see the module docstring)."""
    root = data_root or resolve_data_root(None)
    slots: list[PackSlot] = []
    for cfg, out in zip(cfgs, outs, strict=True):
        folder = open_run_folder(cfg, out, overwrite=True)
        slots.append(PackSlot(cfg, folder, RunLog(folder.log_path, echo=echo), time.time()))
    try:
        with torch_threads(cfgs[0].train.threads if cfgs else None):
            for key, group in _prepared_groups(slots, root).items():
                _train_group(key, group, len(slots))
            for slot in slots:
                if slot.final is None:   # failed while preparing: never in a group
                    slot.final = _finish_slot(slot)
            return [slot.final for slot in slots]
    except BaseException as err:   # an interrupt (or a bug in the pack itself): every unfinished run says so
        for slot in slots:
            if not slot.folder.is_finished and not slot.folder.failed_path.is_file():
                record_failure(slot.folder, slot.log, err, slot.started)
        raise
    finally:
        for slot in slots:
            slot.log.close()


def _prepared_groups(slots: list[PackSlot], root: Path) -> dict[GroupKey, list[PackSlot]]:
    """Prepare each run (a run that fails to prepare joins no group) and group the others by their key."""
    groups: dict[GroupKey, list[PackSlot]] = {}
    for position, slot in enumerate(slots):
        slot.log(f"medtransfer train -> {slot.folder.path} (one of a pack of {len(slots)} runs)")
        began = time.time()
        try:
            slot.prepared = prepare_cnn_run(slot.cfg, root, slot.log, progress=False)
        except Exception as err:
            slot.result = err
            continue
        finally:
            slot.own_seconds = time.time() - began
        groups.setdefault(_group_key(slot, position), []).append(slot)
    return groups


def _group_key(slot: PackSlot, position: int) -> GroupKey:
    run = slot.prepared
    why = unfusable_reason(run.model)
    if run.selection.kind is SelectionKind.CV:
        why = "its selection is cross-validated (its folds and its final fit train one after another)"
    if run.features is not None:
        why = "it trains on cached backbone features (a probe, or a frozen head without augmentation)"
    if why:
        slot.log(f"trains alone, not in the fused pack: {why}")
        return AloneKey(position)
    return FusedKey(pack_key(run.model, len(run.idx["train"]), run.data.images.shape[1:], slot.cfg.train),
                    slot.cfg.task.kind, str(run.device))


def _train_group(key: GroupKey, group: list[PackSlot], pack_size: int) -> None:
    """Fit a group and write each of its runs' folders at once (a later group's failure cannot lose them)."""
    if len(group) == 1:
        slot = group[0]
        if slot.result is None and pack_size > 1 and isinstance(key, FusedKey):
            slot.log("trains alone: no other run of the pack has the same architecture, number of "
                     "training images, batch size, budget and strategy")
        _fit_alone(slot)
        slot.final = _finish_slot(slot)
        return
    began = time.time()
    fused = len(group)
    try:
        results = fit_packed([_member(s) for s in group], task_kind=group[0].cfg.task.kind,
                             device=group[0].prepared.device, log=group[0].log)
    except Exception as err:   # e.g. a head that does not fit, or memory: each run trains alone instead
        why = reason_of(err)
        fused = 1
        results = []
        for slot in group:
            slot.log(f"the fused pack could not train ({why}); training alone")
            _fit_alone(slot)
            results.append(slot.result)
    share = (time.time() - began) / len(group)
    for slot, result in zip(group, results, strict=True):
        slot.result = result
        slot.own_seconds += share
        slot.fused_with = fused
        slot.final = _finish_slot(slot)


def _member(slot: PackSlot) -> PackMember:
    run = slot.prepared
    train, val = run.idx["train"], run.idx["val"]
    return PackMember(run.model, run.data.images[train], run.data.labels[train], run.data.images[val],
                      run.data.labels[val], slot.cfg.train, log=slot.log)


def _fit_alone(slot: PackSlot) -> None:
    if slot.result is not None or slot.prepared is None:
        return
    began = time.time()
    try:
        slot.result = fit_prepared(slot.cfg, slot.prepared, slot.log)
    except Exception as err:
        slot.result = err
    slot.own_seconds += time.time() - began


def _finish_slot(slot: PackSlot) -> RunMetrics | BaseException:
    """metrics.json (or failed.json) for one run of a pack. Its ``seconds`` are its own: preparing it, its
    share of the pack's training (the fused fit's wall time over the members) and finishing it."""
    slot.started = time.time() - slot.own_seconds
    if isinstance(slot.result, BaseException):
        record_failure(slot.folder, slot.log, slot.result, slot.started)
        return slot.result
    try:
        metrics = finish_cnn_run(slot.cfg, slot.folder, slot.prepared, slot.result, slot.log, slot.started)
        metrics.details["fused_with"] = slot.fused_with   # 1: trained alone inside a packed study
        return write_finished(slot.folder, slot.log, metrics)
    except Exception as err:
        record_failure(slot.folder, slot.log, err, slot.started)
        return err

"""One training run, end to end, and the run folder it leaves behind.

This is the edge where files are written: everything below it takes arrays and
returns values. ``metrics.json`` is written last and atomically, so its presence
means the run finished; a run that fails leaves ``failed.json`` with the reason.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from .config import RunConfig, dump_config, resolve_data_root
from .errors import MedtransferError, reason_of
from .kinds import Init, InitKind
from .run_folder import RunFolder, RunMetrics, write_json_atomic, write_text_atomic


class RunLog:
    """Write each line to train.log (flushed, so a killed run keeps its log) and to stderr."""

    def __init__(self, path: Path, echo: bool = True):
        self._file = open(path, "a", encoding="utf-8")
        self._echo = echo

    def __call__(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        try:
            self._file.write(stamped + "\n")
            self._file.flush()
        except OSError:   # a full disk must not hide the error being logged; stderr still shows it
            pass
        if self._echo:
            print(stamped, file=sys.stderr, flush=True)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


def resolve_init(init: Init, base: Path | None = None) -> Init:
    """``checkpoint:PATH`` relative to the working directory; a run folder means its weights."""
    if init.kind is not InitKind.CHECKPOINT:
        return init
    path = init.path
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    if path.is_dir():
        path = RunFolder(path).weights_path
    return Init.checkpoint(path)


def _label_columns(prefix: str, names: list[str]) -> list[str]:
    return [f"{prefix}{n}" for n in names]


def write_predictions(path: Path, image_ids: list[str], labels: np.ndarray, scores: np.ndarray,
                      label_names: list[str], kind: str, patient_ids=None) -> None:
    import pandas as pd

    frame = pd.DataFrame({"image_id": image_ids})
    if patient_ids is not None:   # what a patient-level bootstrap or clustered test groups by
        frame["patient_id"] = [str(p) for p in patient_ids]
    if kind == "multiclass":
        frame["true"] = [label_names[int(i)] for i in labels]
    else:
        frame[_label_columns("true_", label_names)] = labels.reshape(len(labels), -1).astype(int)
    frame[_label_columns("score_", label_names)] = scores
    # every digit the dtype holds: rounded scores tie (a confident model's 1e-7s all become
    # 0.000000) and the AUROC / DeLong read back from this file would differ from metrics.json
    digits = 9 if np.asarray(scores).dtype == np.float32 else 17
    write_text_atomic(path, frame.to_csv(index=False, float_format=f"%.{digits}g"))


def add_test_interval(scored: dict[str, dict], folder: RunFolder, kind: str, labels: np.ndarray,
                      scores: np.ndarray, data, test_idx: np.ndarray, log: Callable[[str], None]) -> None:
    """The run's test AUROC interval (patient bootstrap; images where the data has no patient ids) in
    metrics.json's ``test.auroc_ci``, and its draws in the run folder for the report to combine and pair."""
    from .evaluate.per_run import run_interval

    image_ids = np.asarray(data.image_ids)[test_idx]
    clusters = data.patient_ids[test_idx] if data.has_patient_ids else image_ids
    interval = run_interval(labels, scores, kind, clusters, by_patient=bool(data.has_patient_ids), image_ids=image_ids)
    if interval is None:
        log("test AUROC undefined: no bootstrap interval")
        return
    scored["test"]["auroc_ci"] = interval.to_json()
    folder.write_bootstrap(interval.draws, interval.test_set)
    log(f"test macro AUROC 95% interval {interval.low:.4f} to {interval.high:.4f} "
        f"({len(interval.draws)} resamples of the test {interval.unit})")


def run_thresholds(kind: str, label_names: list[str], val, test):
    """Youden thresholds chosen on the validation (labels, scores), scored on test too (for the record).
    Binary / multilabel labels are already the 0/1 matrices; a multiclass run gets no threshold."""
    from .evaluate.threshold import choose_thresholds

    (y_val, s_val), (y_test, s_test) = val, test
    return choose_thresholds(kind, label_names, y_val, s_val, y_test=y_test, s_test=s_test)


def add_operating_points(scored: dict[str, dict], thresholds) -> None:
    """Binary tasks: accuracy, sensitivity and specificity at the threshold chosen on validation, in each
    split's metrics block (``operating_point``): a clinician acts on a yes / no, not on an AUROC.
    The test numbers use the validation threshold unchanged, so they are what a user would see."""
    from .evaluate.threshold import OPERATING_KEYS

    if thresholds.task_kind != "binary" or len(thresholds.labels) != 1:
        return
    (chosen,) = thresholds.labels.values()
    for split, point in (("val", chosen.val), ("test", chosen.test)):
        if point is not None and split in scored:
            scored[split]["operating_point"] = {
                "threshold": chosen.threshold, "criterion": f"{chosen.criterion} on val",
                **{key: getattr(point, key) for key in OPERATING_KEYS}}


def recorded_run(cfg: RunConfig, out: Path, overwrite: bool, echo: bool,
                 body: Callable[[RunFolder, Callable[[str], None], float], RunMetrics]) -> RunMetrics:
    """The run-folder protocol every method shares: config.yaml first, train.log throughout,
    metrics.json last (written here from what ``body`` returns), failed.json with the reason when it raises."""
    folder = RunFolder(out)
    folder.prepare(overwrite)
    folder.write_config(dump_config(cfg))
    log = RunLog(folder.log_path, echo=echo)
    started = time.time()
    try:
        return _write_finished(folder, log, body(folder, log, started))
    except BaseException as err:  # record why, then let the caller decide how to exit
        record_failure(folder, log, err, started)
        raise
    finally:
        log.close()


def _write_finished(folder: RunFolder, log: Callable[[str], None], metrics: RunMetrics) -> RunMetrics:
    """The end of a run: its test AUROC in the log, then metrics.json (whose presence means "finished")."""
    test_auc = metrics.auroc("test")
    log(f"test macro AUROC {test_auc:.4f}" if test_auc is not None else "test macro AUROC undefined")
    folder.write_metrics(metrics)
    return metrics


def record_failure(folder: RunFolder, log: Callable[[str], None], err: BaseException, started: float) -> None:
    """failed.json with the reason, and the reason (a traceback for a bug) in train.log."""
    reason = str(err) if isinstance(err, MedtransferError) else f"{type(err).__name__}: {err}"
    if isinstance(err, KeyboardInterrupt):
        reason = "interrupted"
    log(f"FAILED: {reason}")
    if not isinstance(err, MedtransferError) and err.__traceback__ is not None:
        log("".join(traceback.format_exception(err)))
    try:
        folder.write_failed(reason, type(err).__name__, time.time() - started)
    except MedtransferError as also:   # e.g. the disk is full: the original error still explains the run
        log(f"could not record the failure: {also}")


def train_run(cfg: RunConfig, out: Path, data_root: Path | None = None, *,
              overwrite: bool = False, echo: bool = True, progress: bool = True,
              mlflow: str | None = None) -> RunMetrics:
    """Train and evaluate one recipe; returns the metrics written to ``out/metrics.json``.

    ``mlflow`` (a tracking URI or folder) logs the finished or failed run folder to the experiment
    ``medtransfer``; the store is opened first, so a missing package or a bad URI costs no training.
    """
    root = data_root or resolve_data_root(None)
    tracker = _open_train_tracker(mlflow) if mlflow else None
    try:
        with torch_threads(cfg.train.threads):
            metrics = recorded_run(cfg, out, overwrite, echo,
                                   lambda folder, log, started: _train_and_evaluate(cfg, folder, root, log, progress,
                                                                                    started))
    except Exception:
        if tracker is not None and RunFolder(out).failed_path.is_file():   # the run failed (not a refused --out)
            try:
                _track_train(tracker, cfg, RunFolder(out))
            except MedtransferError as also:   # the run's own error is the one to report
                print(f"medtransfer: warning: {also}", file=sys.stderr)
        raise
    if tracker is not None:
        _track_train(tracker, cfg, RunFolder(out))
    return metrics


def _open_train_tracker(target: str):
    from .tracking import TRAIN_EXPERIMENT, Tracker, TrackingStore

    return Tracker(TrackingStore.parse(target), TRAIN_EXPERIMENT)


def _track_train(tracker, cfg: RunConfig, folder: RunFolder) -> None:
    """Log a `train` run folder (no study: no run-id tag, so training again logs a second run, as it should)."""
    from .tracking import TAG, folder_run

    params = cfg.model_dump(mode="json")
    params.pop("radiomics", None)   # a CNN run does not read these keys
    run = folder_run(folder, params, name=folder.path.name, tags={TAG + "method": "cnn", TAG + "role": "train"})
    try:
        tracker.log(run)
    except Exception as err:   # the run itself is safe in its folder; say so in one line
        raise MedtransferError(f"{folder.path}: the run is saved but was not logged to MLflow "
                               f"({tracker.store.uri}): {type(err).__name__}: {str(err).splitlines()[0][:300]}") from None


@contextmanager
def torch_threads(threads: int | None):
    """Run the block on ``threads`` CPU threads (the run's config fixes them), then restore the caller's count."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_run_data(cfg: RunConfig, data_root: Path, log: Callable[[str], None], progress: bool):
    """The split and N-subset every method of a run uses (so methods are paired): (data, indices)."""
    from .data import prepare_data

    log(f"data root: {data_root}")
    data = prepare_data(cfg.data, cfg.task, cfg.image_size, data_root, cfg.train.n_train, cfg.train.seed,
                        progress=progress)
    for note in data.notes:
        log(note)
    idx = {"train": data.train_subset, "val": data.splits["val"], "test": data.splits["test"]}
    if len(idx["val"]) == 0 or len(idx["test"]) == 0:
        raise MedtransferError(f"the split has {len(idx['val'])} validation and {len(idx['test'])} test images: "
                               "both must be non-empty (check data.split_fractions / the split column)")
    return data, idx


@dataclass
class PreparedRun:
    """What a CNN run has before it trains: its data, index sets, model and device (see ``prepare_cnn_run``)."""
    data: object
    idx: dict
    model: object
    device: object
    n_patients: int
    overlap: dict


def prepare_cnn_run(cfg: RunConfig, data_root: Path, log: Callable[[str], None], progress: bool) -> PreparedRun:
    """Everything before ``fit``: the split and N-subset, the device and the model with its init."""
    import torch

    from .models import create_model
    from .train import resolve_device
    from .train.device import seed_everything

    if cfg.model.init.kind is InitKind.XRV:   # a missing weights file is reported before any data is read
        from .models.xrv_init import xrv_weights_file
        xrv_weights_file(cfg.model.init.xrv_name, log)
    data, idx = prepare_run_data(cfg, data_root, log, progress)
    n_patients = int(len(np.unique(data.patient_ids[idx["train"]])))
    log(f"training on {len(idx['train'])} images from {n_patients} patients; "
        f"val {len(idx['val'])}, test {len(idx['test'])} images")
    device = resolve_device(cfg.train.device)
    log(f"device: {device}, {torch.get_num_threads()} CPU threads")
    init = resolve_init(cfg.model.init)
    seed_everything(cfg.train.seed)   # a scratch model's starting weights come from the global RNG
    model = create_model(cfg.model.arch, len(data.label_names), init=init, dropout=cfg.model.dropout, log=log)
    overlap = pretraining_overlap(cfg, log)
    return PreparedRun(data, idx, model, device, n_patients, overlap)


def finish_cnn_run(cfg: RunConfig, folder: RunFolder, run: PreparedRun, result, log: Callable[[str], None],
                   started: float) -> RunMetrics:
    """Everything after ``fit``: predictions, metrics with the test CI, thresholds, weights, LR trace."""
    import torch

    from .evaluate import score_metrics
    from .models import save_weights
    from .train import predict

    data, model, device = run.data, run.model, run.device
    train_idx, val_idx, test_idx = run.idx["train"], run.idx["val"], run.idx["test"]
    log(f"stopped: {result.stopped_reason}; best epoch {result.best_epoch} of {result.epochs_run}")
    batch = max(cfg.train.batch_size, 128)
    scored, raw = {}, {}
    for split, idx, path in (("val", val_idx, folder.val_predictions_path),
                             ("test", test_idx, folder.predictions_path)):
        scores = predict(model, data.images[idx], cfg.task.kind, batch, device)
        scored[split] = score_metrics(data.labels[idx], scores, cfg.task.kind, data.label_names)
        raw[split] = (data.labels[idx], scores)
        write_predictions(path, [data.image_ids[i] for i in idx], data.labels[idx], scores, data.label_names,
                          cfg.task.kind, data.patient_ids[idx] if data.has_patient_ids else None)
    add_test_interval(scored, folder, cfg.task.kind, *raw["test"], data, test_idx, log)
    thresholds = run_thresholds(cfg.task.kind, data.label_names, raw["val"], raw["test"])
    folder.write_thresholds(thresholds)
    add_operating_points(scored, thresholds)
    for note in thresholds.notes():
        log(f"threshold {note}")
    save_weights(model, folder.weights_path)
    _write_lr_trace(folder.lr_trace_path, result.lr_trace)
    return RunMetrics(
        task_kind=cfg.task.kind, label_names=data.label_names, val=scored["val"], test=scored["test"],
        n_train_images=int(len(train_idx)), n_train_patients=run.n_patients, n_val_images=int(len(val_idx)),
        n_test_images=int(len(test_idx)), epochs_run=int(result.epochs_run), best_epoch=int(result.best_epoch),
        stopped_reason=result.stopped_reason, seconds=round(time.time() - started, 2), device=str(device),
        torch_threads=torch.get_num_threads(), history=[r.to_dict() for r in result.history],
        details={**run.overlap, "budget": budget_record(result.budget)})


def fit_prepared(cfg: RunConfig, run: PreparedRun, log: Callable[[str], None], on_step=None):
    """``fit`` on a prepared run's training and validation images."""
    from .evaluate import macro_auroc
    from .train import fit

    data, idx = run.data, run.idx
    return fit(run.model, data.images[idx["train"]], data.labels[idx["train"]], data.images[idx["val"]],
               data.labels[idx["val"]], task_kind=cfg.task.kind, cfg=cfg.train, device=run.device, log=log,
               val_metric=lambda y, s: macro_auroc(y, s, cfg.task.kind), on_step=on_step)


@dataclass
class _PackSlot:
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
    """Train CNN runs together (issue 12); per run its metrics, or the exception that ended it.

    Each run writes the same folder ``train_run`` writes (config.yaml first, metrics.json last, or
    failed.json). Runs whose steps line up (``train.packed.pack_key`` on the prepared data: the same
    structure, number of training images, batch size, budget and strategy) train as one fused model;
    a run that cannot be fused trains alone, and its train.log says why. A run that fails leaves
    the others going. An interrupt stops the pack; runs without metrics.json are rerun by a resume.
    """
    from .train.packed import PackMember, fit_packed, pack_key, unfusable_reason

    root = data_root or resolve_data_root(None)
    slots: list[_PackSlot] = []
    for cfg, out in zip(cfgs, outs, strict=True):
        folder = RunFolder(out)
        folder.prepare(True)
        folder.write_config(dump_config(cfg))
        slots.append(_PackSlot(cfg, folder, RunLog(folder.log_path, echo=echo), time.time()))
    try:
        with torch_threads(cfgs[0].train.threads if cfgs else None):
            groups: dict[tuple, list[_PackSlot]] = {}
            for slot in slots:
                slot.log(f"medtransfer train -> {slot.folder.path} (one of a pack of {len(slots)} runs)")
                began = time.time()
                try:
                    slot.prepared = prepare_cnn_run(slot.cfg, root, slot.log, progress=False)
                except Exception as err:
                    slot.result = err
                    continue
                finally:
                    slot.own_seconds = time.time() - began
                run = slot.prepared
                why = unfusable_reason(run.model)
                key = None if why else (pack_key(run.model, len(run.idx["train"]), run.data.images.shape[1:],
                                                 slot.cfg.train), slot.cfg.task.kind, str(run.device))
                if why:
                    slot.log(f"trains alone, not in the fused pack: {why}")
                groups.setdefault(key if key is not None else ("alone", id(slot)), []).append(slot)
            for key, group in groups.items():
                if len(group) == 1:
                    slot = group[0]
                    if slot.result is None and len(slots) > 1 and key[0] != "alone":
                        slot.log("trains alone: no other run of the pack has the same architecture, number of "
                                 "training images, batch size, budget and strategy")
                    _fit_alone(slot)
                    slot.final = _finish_slot(slot)     # written at once: a later group's failure cannot lose it
                    continue
                members = [PackMember(s.prepared.model, s.prepared.data.images[s.prepared.idx["train"]],
                                      s.prepared.data.labels[s.prepared.idx["train"]],
                                      s.prepared.data.images[s.prepared.idx["val"]],
                                      s.prepared.data.labels[s.prepared.idx["val"]], s.cfg.train, log=s.log)
                           for s in group]
                began = time.time()
                fused_ok = True
                try:
                    results = fit_packed(members, task_kind=group[0].cfg.task.kind,
                                         device=group[0].prepared.device, log=group[0].log)
                except Exception as err:   # e.g. a head that does not fit, or memory: each run trains alone instead
                    why = reason_of(err)
                    fused_ok = False
                    results = []
                    for slot in group:
                        slot.log(f"the fused pack could not train ({why}); training alone")
                        _fit_alone(slot)
                        results.append(slot.result)
                share = (time.time() - began) / len(group)
                fused = len(group) if fused_ok else 1
                for slot, result in zip(group, results, strict=True):
                    slot.result = result
                    slot.own_seconds += share
                    slot.fused_with = fused
                    slot.final = _finish_slot(slot)
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


def _fit_alone(slot: _PackSlot) -> None:
    if slot.result is not None or slot.prepared is None:
        return
    began = time.time()
    try:
        slot.result = fit_prepared(slot.cfg, slot.prepared, slot.log)
    except Exception as err:
        slot.result = err
    slot.own_seconds += time.time() - began


def _finish_slot(slot: _PackSlot) -> RunMetrics | BaseException:
    """metrics.json (or failed.json) for one run of a pack. Its ``seconds`` are its own: preparing it, its
    share of the pack's training (the fused fit's wall time over the members) and finishing it."""
    slot.started = time.time() - slot.own_seconds
    if isinstance(slot.result, BaseException):
        record_failure(slot.folder, slot.log, slot.result, slot.started)
        return slot.result
    try:
        metrics = finish_cnn_run(slot.cfg, slot.folder, slot.prepared, slot.result, slot.log, slot.started)
        metrics.details["fused_with"] = slot.fused_with   # 1: trained alone inside a packed study
        return _write_finished(slot.folder, slot.log, metrics)
    except Exception as err:
        record_failure(slot.folder, slot.log, err, slot.started)
        return err


def _train_and_evaluate(cfg: RunConfig, folder: RunFolder, data_root: Path, log: Callable[[str], None],
                        progress: bool, started: float) -> RunMetrics:
    log(f"medtransfer train -> {folder.path}")
    run = prepare_cnn_run(cfg, data_root, log, progress)
    with step_bar(progress and sys.stderr.isatty()) as on_step:
        result = fit_prepared(cfg, run, log, on_step)
    return finish_cnn_run(cfg, folder, run, result, log, started)


def budget_record(budget) -> dict:
    """metrics.json's ``budget``: the optimiser steps the run trained and why that many."""
    return {"total_steps": budget.total_steps, "round_steps": budget.round_steps, "rounds": budget.rounds,
            "steps_per_epoch": budget.steps_per_epoch, "set_by": budget.set_by}


def pretraining_overlap(cfg: RunConfig, log: Callable[[str], None]) -> dict[str, str]:
    """Warn in train.log when the init's pretraining may have seen this run's test images.

    torchxrayvision's weights were trained on public chest X-ray collections (NIH
    ChestX-ray14 among others): fine-tuning them on NIH images and testing on NIH's test
    split measures partly memory. The returned ``pretraining_overlap`` key marks the run's
    metrics.json; the report marks every such recipe from its init.
    """
    from .xrv_weights import leak_note, target_images, xrv_weights

    if cfg.model.init.kind is not InitKind.XRV:
        return {}
    weights = xrv_weights(cfg.model.init.xrv_name)
    if cfg.image_size != weights.input_size:
        log(f"note: xrv:{weights.name} was trained on {weights.input_size} px images; this run uses {cfg.image_size} px")
    images = target_images(cfg.data.source, cfg.data.name)
    if not weights.saw(images):
        log(f"note: {leak_note(weights)}")
        return {}
    log(f"WARNING: this run's data are {images} images and xrv:{weights.name} was pretrained on them "
        f"({', '.join(weights.trained_on)}): its test images may have been seen in pretraining, "
        "so the test AUROC is optimistic")
    return {"pretraining_overlap": f"xrv:{weights.name} saw {images}"}


@contextmanager
def step_bar(show: bool):
    """A rich bar over a fit's optimiser steps on a terminal (log lines print above it); else no hook:
    train.log and a non-terminal stderr get the per-epoch lines the loop logs anyway."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                  TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("training", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _write_lr_trace(path: Path, trace: list[list[float]]) -> None:
    lines = ["step,lr_early,lr_late,lr_head"] + [
        f"{i}," + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(trace)]
    path.write_text("\n".join(lines) + "\n")


def lr_find_run(cfg: RunConfig, out: Path, data_root: Path | None = None):
    """Range-test the recipe's model on its training subset; writes lr_find.png / lr_find.json; returns the
    ``LRSuggestion`` (its warnings are logged too)."""
    from .data import prepare_data
    from .models import create_model
    from .train import lr_find, plot_lr_find, resolve_device
    from .train.device import seed_everything

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg.data, cfg.task, cfg.image_size, data_root or resolve_data_root(None),
                        cfg.train.n_train, cfg.train.seed)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    model = create_model(cfg.model.arch, len(data.label_names), init=resolve_init(cfg.model.init),
                         dropout=cfg.model.dropout, log=lambda line: print(line, file=sys.stderr))
    idx = data.train_subset
    lrs, losses, suggestion = lr_find(model, data.images[idx], data.labels[idx], task_kind=cfg.task.kind,
                                      cfg=cfg.train, device=device, log=lambda line: print(line, file=sys.stderr))
    plot_lr_find(lrs, losses, suggestion, out / "lr_find.png")
    write_json_atomic(out / "lr_find.json", {"suggested_lr": suggestion.suggested, "steepest_lr": suggestion.steepest,
                                             "minimum_tenth_lr": suggestion.minimum_tenth,
                                             "valley": list(suggestion.valley), "warnings": suggestion.warnings,
                                             "lrs": [float(v) for v in lrs],
                                             "losses": [float(v) for v in losses]})
    return suggestion

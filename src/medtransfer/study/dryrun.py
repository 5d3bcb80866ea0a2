"""``--dry-run``: how many runs, per axis value and in total, and roughly how long they take.

The estimate times a few real training steps of each (arch, image size) in the study on
the device the runs would use, then multiplies by the images each run will see: its step
budget (medtransfer.budget) times the batch in training, plus the validation set every round and the test set once (forward only, a
third of a step; left out when the dataset cannot be read). It assumes no early stopping,
so read it as +/- a factor of two. A probe, and a frozen run without augmentation, is priced as one forward pass
over its training, validation and test images: it trains on the backbone's cached features (``runs.features``).
The probe is capped at about 20 seconds in all.

A radiomics baseline costs one feature extraction per dataset (timed on a synthetic image of
the extraction size, then times the dataset's images over the extraction processes; later
runs reuse the cached features) plus a few seconds of fitting per run.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..budget import budget_of
from ..config import TrainConfig
from ..durations import format_duration
from ..errors import MedtransferError
from ..kinds import SCRATCH, InitKind, RunStatus
from .grid import Plan, PlannedRun, baseline_counts, canonical_json, per_axis_counts
from .opened import OpenedSources

# The timing probes import what they time when they run: torch, the models and training loop (torch: about
# 1.6 s, the training modules 4 s), pyradiomics (1.3 s) and medtransfer.data (0.25 s). This module is imported
# with the study package, so by `medtransfer --help` (0.35 s in all, measured), which never probes.

PROBE_BUDGET_S = 20.0
RUN_OVERHEAD_S = 2.0   # data loading, model creation, evaluation, writing the run folder
PROBE_CPU_PX = 64
BASELINE_FIT_S = 5.0   # one radiomics run once its features are cached: data, C selection, fit, scoring


def runs_above_pool(plan: Plan, opened: OpenedSources) -> list[str]:
    """One line per (task, N) whose N exceeds the dataset's train split: those runs are bound to fail.

    Read from labels alone (no decoding), so a dry run shows them before any compute is spent.
    """
    sizes: dict = {}
    counts: dict[tuple[str, int, int], int] = {}
    for run in plan.all_runs:
        n = run.config.train.n_train
        if n == "all":
            continue
        split = _split_sizes(run, opened, sizes, [])
        if split is not None and n > split[0]:
            counts[(run.task, n, split[0])] = counts.get((run.task, n, split[0]), 0) + 1
    return [f"warning: train.n_train={n} is above the {pool}-image train split of {task}: {k} run(s) bound to "
            "fail (lower it, or use all)" for (task, n, pool), k in sorted(counts.items(), key=lambda kv: kv[0][:2])]


def runs_missing_weights(plan: Plan, statuses: dict[str, str] | None = None) -> list[str]:
    """One line per published backbone whose ``pretrained`` weights are not in the Hugging Face cache: the files
    to place and where (what such a run, recorded as skipped, would say), looked up without the network."""
    counts: dict[str, int] = {}
    for run in plan.runs:
        if run.config.model.init.kind is InitKind.PRETRAINED and (statuses or {}).get(run.run_id) != RunStatus.DONE:
            counts[run.config.model.arch] = counts.get(run.config.model.arch, 0) + 1
    if not counts:
        return []
    from ..models.registry import published_weights_missing   # torch: only for a plan with such runs

    lines = []
    for arch, n in counts.items():
        try:
            missing = published_weights_missing(arch)
        except MedtransferError as err:   # a damaged config file in the cache: its own line says so
            missing = str(err)
        if missing:
            lines.append(f"warning: {n} run(s) start from weights not on this machine: {missing}")
    return lines


def describe_plan(plan: Plan, statuses: dict[str, str] | None = None, estimate: TimeEstimate | None = None,
                  parallel: int = 1, warnings: list[str] | None = None) -> str:
    """The dry-run text: sources, per-axis counts, the total, what is already done, the estimate."""
    spec = plan.spec
    baselines = baseline_counts(plan.runs)
    n_base = sum(sum(per_n.values()) for per_n in baselines.values())
    n_cnn = len(plan.runs) - n_base
    lines = [f"study {spec.name or ''}".rstrip() + f": {n_cnn} grid runs + {len(plan.sources)} source runs"
             + "".join(f" + {sum(per_n.values())} {method} baseline runs" for method, per_n in baselines.items())]
    for src in plan.sources:
        lines.append(f"  source {src.run_dir.split('/', 1)[1]}: {src.task}, {src.config.model.arch}, "
                     f"N={src.config.train.n_train}, {src.config.train.epochs} epochs")
    for axis, counts in per_axis_counts(plan.runs, spec).items():
        shown = ", ".join(f"{_fmt(v)}: {n}" for v, n in counts)
        lines.append(f"  {axis} ({len(counts)} values): {shown}")
    for method, per_n in baselines.items():
        shown = ", ".join(f"N={n}: {k}" for n, k in per_n.items())
        lines.append(f"  baseline {method}: one run per (task, N, seed): {shown}")
    parts = [f"{n_cnn} grid"] + [f"{sum(p.values())} {m}" for m, p in baselines.items()] + [f"{len(plan.sources)} sources"]
    lines.append(f"total: {len(plan.all_runs)} runs ({' + '.join(parts)})")
    lines.extend(warnings or [])
    if statuses:
        done = sum(1 for r in plan.all_runs if statuses.get(r.run_id) == RunStatus.DONE)
        lines.append(f"already done in STUDY_DIR: {done}; to run: {len(plan.all_runs) - done}")
    if estimate:
        lines.extend(_estimate_lines(estimate, parallel))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return canonical_json(value) if isinstance(value, (dict, list)) else str(value)


def _estimate_lines(estimate: TimeEstimate, parallel: int) -> list[str]:
    lines = [f"timing probe ({estimate.device}): " + "; ".join(
        f"{arch} @ {size}px, batch {batch}: {ms:.1f} ms/image"
        for (arch, size, batch), ms in estimate.ms_per_image.items())]
    if estimate.radiomics_ms_per_image:
        lines.append("radiomics extraction probe (cpu, one process): " + "; ".join(
            f"{size}px {ms:.1f} ms/image" for size, ms in estimate.radiomics_ms_per_image.items()))
    total = estimate.seconds
    lines.append(f"estimated compute: {format_duration(total)} ({estimate.runs_estimated} runs; "
                 "every epoch run to the end, +/- 2x)")
    if parallel > 1:
        lines.append(f"estimated wall time with {parallel} runs in parallel: {format_duration(total / parallel)}")
    lines.extend(f"note: {n}" for n in estimate.notes)
    return lines


@dataclass(frozen=True)
class TimeEstimate:
    """What the timing probe priced (``estimate_time``): what the dry run prints and the live ETA starts from."""
    device: str                                          # the device the steps were timed on
    ms_per_image: dict[tuple[str, int, int], float]      # (arch, image size, batch) -> ms per image trained
    radiomics_ms_per_image: dict[int, float]             # extraction size -> ms per image, one process
    seconds: float                                       # the priced runs' compute in all
    runs_estimated: int                                  # how many runs were priced
    notes: list[str]                                     # what the estimate lacks, and why
    per_run: dict[str, float]                            # run id -> its priced seconds


@dataclass
class _Probe:
    """What one estimate has read so far: the opened datasets, their split sizes, and notes on what it lacks."""
    opened: OpenedSources
    sizes: dict[str, tuple[int, int, int] | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def split_sizes(self, run: PlannedRun) -> tuple[int, int, int] | None:
        return _split_sizes(run, self.opened, self.sizes, self.notes)


Priced = tuple[PlannedRun, int, tuple[int, int, int] | None]   # a CNN run, its N, its dataset's split sizes


def estimate_time(plan: Plan, data_root: Path, budget_s: float = PROBE_BUDGET_S,
                  step_timer: Callable[..., float] | None = None,
                  extraction_timer: Callable[..., float] | None = None, opened: OpenedSources | None = None,
                  runs: list[PlannedRun] | None = None) -> TimeEstimate:
    """Probe ms/image per (arch, image size, batch), then sum the images each run's step budget trains on
    (baselines apart).

    ``runs`` (default: the whole plan) limits the pricing, and so the probe's budget, to those runs:
    a resumed study's ETA times only the architectures it still has to train.
    """
    probe = _Probe(opened or OpenedSources(data_root))
    runs = plan.all_runs if runs is None else runs
    device = study_device(plan)
    priced, ms = _time_cnn_steps([r for r in runs if not r.is_baseline], probe, device,
                                 step_timer or _time_training_step, budget_s)
    per_run: dict[str, float] = {}
    total, counted = _cnn_seconds(priced, ms, per_run)
    radiomics_ms: dict[int, float] = {}
    base_seconds, base_counted = _baseline_seconds([r for r in runs if r.is_baseline], probe, radiomics_ms,
                                                   extraction_timer or _time_extraction, per_run)
    total += base_seconds
    counted += base_counted
    if counted < len(runs):
        probe.notes.append(f"{len(runs) - counted} runs left out of the estimate (see above)")
    return TimeEstimate(device=str(device), ms_per_image={k: v for k, v in ms.items() if v == v},
                        radiomics_ms_per_image={k: v for k, v in radiomics_ms.items() if v == v},
                        seconds=total, runs_estimated=counted, notes=probe.notes, per_run=per_run)


def _time_cnn_steps(cnn_runs: list[PlannedRun], probe: _Probe, device, timer: Callable[..., float],
                    budget_s: float) -> tuple[list[Priced], dict[tuple[str, int, int], float]]:
    """The CNN runs that can be priced (an N of 'all' needs its dataset's size), and ms per image trained for
    each (arch, image size, batch) they use, NaN where it could not be timed within the budget."""
    ms: dict[tuple[str, int, int], float] = {}   # (arch, image size, batch) -> ms per image trained
    started = None   # the probe's budget counts from its first timing, not from reading the datasets
    priced: list[Priced] = []
    for run in cnn_runs:
        split = probe.split_sizes(run)
        n = run.config.train.n_train
        if n == "all":
            if split is None:
                continue
            n = split[0]
        priced.append((run, int(n), split))
        # the per-image cost falls with the batch (a step's fixed costs are shared), so time the runs' own batch
        key = (run.config.model.arch, run.config.image_size, min(int(n), run.config.train.batch_size))
        if key in ms:
            continue
        started = started or time.time()
        if time.time() - started > budget_s:
            probe.notes.append(f"timing probe over its {budget_s:.0f} s budget: {key[0]} @ {key[1]}px, "
                               f"batch {key[2]} not timed")
            ms[key] = float("nan")
            continue
        try:
            ms[key] = 1000 * timer(*key[:2], device, key[2])
        except Exception as err:  # the estimate is a courtesy; never block a dry run on it
            probe.notes.append(f"could not time {key[0]} @ {key[1]}px: {type(err).__name__}: {err}")
            ms[key] = float("nan")
    return priced, ms


def _cnn_seconds(priced: list[Priced], ms: dict[tuple[str, int, int], float],
                 per_run: dict[str, float]) -> tuple[float, int]:
    """Each timed run's seconds into ``per_run``: its training steps, plus validation every round and the test
    set once (forward only, about a third of a step), plus a fixed overhead; returns (total, runs counted)."""
    total, counted = 0.0, 0
    for run, n, split in priced:
        train = run.config.train
        per_image = ms[(run.config.model.arch, run.config.image_size, min(n, train.batch_size))] / 1000
        if per_image != per_image:
            continue
        seconds = _run_seconds(run, n, split, per_image)
        per_run[run.run_id] = seconds
        total += seconds
        counted += 1
    return total, counted


def _run_seconds(run: PlannedRun, n: int, split: tuple[int, int, int] | None, per_image: float) -> float:
    """One CNN run's seconds (see ``_cnn_seconds``). A probe, or a frozen run without augmentation, trains on
    cached features (``runs.features``): one forward pass over its images, and next to nothing for its head or
    logistic regression; an upper bound, as no pass is made where an earlier run stored the same features."""
    from ..runs.features import uses_cached_features   # here, not at the top: torch (see cv_fits)

    train = run.config.train
    n_val = _val_images(run, n, split[1]) if split else 0
    if uses_cached_features(run.config):
        return (n + n_val + (split[2] if split else 0)) / 3 * per_image + RUN_OVERHEAD_S
    budget = budget_of(n, train)
    trained = budget.total_steps * min(n, train.batch_size)   # images through a training step
    evaluated = (n_val * budget.rounds + split[2]) if split else 0   # forward only: ~1/3 of a step
    return (trained + evaluated / 3) * per_image * cv_fits(run, n, split) + RUN_OVERHEAD_S


def _baseline_seconds(runs: list[PlannedRun], probe: _Probe, ms: dict[int, float], timer: Callable[..., float],
                      per_run: dict[str, float]) -> tuple[float, int]:
    """Extraction once per (dataset, settings) + a fit per run; runs whose dataset is unreadable are left out.

    ``per_run`` receives each run's share: the first run of a dataset pays its extraction (the
    study runs it first and the others reuse the feature cache), the others a fit only.
    """
    total, counted, extracted = 0.0, 0, set()
    for run in runs:
        before = total
        cfg = run.config
        split = probe.split_sizes(run)
        if split is None:
            continue
        key = canonical_json([cfg.data.model_dump(mode="json"), cfg.task.model_dump(mode="json"),
                              cfg.radiomics.model_dump(mode="json")])
        if key not in extracted:
            extracted.add(key)
            size = _extraction_size(run, probe.opened)
            if size not in ms:
                try:
                    ms[size] = 1000 * timer(size, cfg.radiomics)
                except Exception as err:  # a courtesy estimate: say why, never block the dry run
                    probe.notes.append(f"could not time radiomics extraction @ {size}px: {type(err).__name__}: {err}")
                    ms[size] = float("nan")
            if ms[size] == ms[size]:
                workers = cfg.radiomics.workers or os.cpu_count() or 1
                total += sum(split) * ms[size] / 1000 / workers
        total += BASELINE_FIT_S
        counted += 1
        per_run[run.run_id] = total - before
    return total, counted


def _extraction_size(run: PlannedRun, opened: OpenedSources) -> int:
    """radiomics.image_size, else the native size (medmnist: data.size; files: the first image) capped at max_size."""
    rcfg, data = run.config.radiomics, run.config.data
    if rcfg.image_size:
        return rcfg.image_size
    native = (data.size or 28) if data.source == "medmnist" else None
    if native is None:
        try:
            src = opened.get(run.config)
            with Image.open(src.paths[0]) as im:
                native = max(im.size)
        except Exception:  # unreadable or not a PIL format (DICOM): assume the cap
            native = rcfg.max_size
    return min(native, rcfg.max_size)


def _time_extraction(size: int, rcfg) -> float:
    """Seconds per image of the project's extraction on a smooth synthetic image (fastest of two, after a warm-up)."""
    from ..radiomics.features import extract_one, extractor_settings

    yy, xx = np.mgrid[:size, :size] / size
    rng = np.random.default_rng(0)
    image = (120 + 80 * np.sin(6 * xx) * np.cos(4 * yy) + rng.normal(0, 10, (size, size))).clip(0, 255)
    settings = extractor_settings(rcfg)
    seconds = []
    for _ in range(3):
        t0 = time.perf_counter()
        extract_one(image.astype(np.uint8), None, settings)
        seconds.append(time.perf_counter() - t0)
    return min(seconds[1:])


def study_device(plan: Plan):
    """The device the plan's runs train on (train.device; auto: a GPU when there is one)."""
    from ..train import resolve_device

    return resolve_device(plan.spec.base.get("train", {}).get("device", "auto"))


def _split_sizes(run: PlannedRun, opened: OpenedSources, cache: dict, notes: list[str]) -> tuple[int, int, int] | None:
    """(train pool, val, test) image counts of a run's dataset, from its labels alone; None if unreadable."""
    cfg = run.config
    key = OpenedSources.key(cfg)
    if key not in cache:
        cache[key] = _count_splits(run, opened, notes)
    return cache[key]


def cv_fits(run: PlannedRun, n_train: int, split: tuple[int, int, int] | None) -> int:
    """How many fits a run costs: 1, or its folds plus the final fit where it will cross-validate (runs.cv):
    ``train.selection: cv``, or ``auto`` with fewer validation images than runs.cv.MIN_VAL_IMAGES (the class
    counts are not read here, so an ``auto`` run that cross-validates for a rare class is priced as one fit)."""
    from ..runs.cv import MIN_VAL_IMAGES   # here, not at the top: runs.cv imports torch, and the study package
                                           # is imported by `medtransfer --help` and `import medtransfer`

    train = run.config.train
    if train.selection == "holdout":
        return 1
    if train.selection == "cv":
        return train.cv_folds + 1
    n_val = _val_images(run, n_train, split[1]) if split else None
    return train.cv_folds + 1 if n_val is not None and n_val < MIN_VAL_IMAGES else 1


def _val_images(run: PlannedRun, n_train: int, n_val: int) -> int:
    """Validation images a run scores each round: all of the split, or its N-proportional share."""
    from ..data import proportional_val_count

    data = run.config.data
    if data.val_size != "proportional":
        return n_val
    return min(n_val, proportional_val_count(n_train, data.split_fractions))


def _count_splits(run: PlannedRun, opened: OpenedSources, notes: list[str]) -> tuple[int, int, int] | None:
    cfg = run.config
    try:
        source = opened.get(cfg)
    except Exception as err:  # a dry run must work without the data; say what the estimate lacks
        notes.append(f"{run.task}: dataset not readable, evaluation time left out ({err})")
        return None
    fractions = cfg.data.split_fractions
    if source.given_split is not None and cfg.data.split in ("given", "official"):
        given = [int((source.given_split == name).sum()) for name in ("train", "val", "test")]
        if given[1] == 0:  # no val in the release: carved from train
            given[1] = round(given[0] * fractions[1] / (fractions[0] + fractions[1]))
            given[0] -= given[1]
        return given[0], given[1], given[2]
    total = len(source.image_ids)
    return round(total * fractions[0]), round(total * fractions[1]), round(total * fractions[2])


def _time_training_step(arch: str, image_size: int, device, batch: int) -> float:
    """Seconds per image of one forward+backward+step at ``batch``, after one warm-up step.

    On a CPU the step is timed at no more than 64 px and scaled by the pixel count (conv cost
    grows with it), so even DenseNet-121 at 224 px probes in a few seconds. A published backbone
    resizes every image to its own input size inside the model (``Classifier.input_size``): its
    cost does not depend on ``image_size``, so it is not scaled, and on a CPU two images are timed.
    """
    import torch

    from ..models import create_model
    from ..train.driver import apply_update
    from ..train.strategies import N_GROUPS, build_optimizer

    on_gpu = device.type == "cuda"
    model = create_model(arch, 2, init=SCRATCH, log=lambda line: None).to(device)
    fixed = model.input_size is not None
    size = image_size if on_gpu else min(image_size, PROBE_CPU_PX)
    batch = batch if on_gpu or not fixed else min(batch, 2)
    optimiser, _ = build_optimizer(model, N_GROUPS, TrainConfig(lr=1e-3))   # the default (AdamW, all layers)
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.rand(batch, 2, device=device)
    seconds = []
    for _ in range(3):  # one warm-up step, then the fastest of two (a busy machine only adds noise)
        t0 = time.perf_counter()
        apply_update([optimiser], [None], [torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)])
        if on_gpu:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    return min(seconds[1:]) / batch * (1.0 if fixed else (image_size / size) ** 2)

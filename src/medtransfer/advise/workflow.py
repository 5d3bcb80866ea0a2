"""``medtransfer advise``'s workflow: the recipe for the user's own data in minutes, before spending the compute.

``run_workflow`` takes the checked request (``command.advise`` checks the arguments and writes the files)
through the steps, one after the other:

1. rank the candidate initialisations (``candidates``) by the transferability of
   their frozen features of the training images (``features``, ``rank``);
2. time a training step (``timing``: at most 5% of ``--budget``), plan a successive-halving search that
   fits what is left (``plan``: it shrinks until it does; a budget too small for any plan is refused with
   the smallest that would do) and run it on the training subset and the validation split only (``search``:
   it is handed no test row, and starts no trial the clock cannot hold); where ``train.selection`` resolves
   to cv (a small validation split), every trial cross-validates the N-pool on the final run's folds;
3. train the pick with ``train_run`` into ``ADVICE_DIR/best`` (so ``medtransfer predict --run
   ADVICE_DIR/best`` works): the one evaluation on the test split, with its patient-level CI;
4. train the pick at N/4 and N/2 (same steps, same validation images) and fit the learning curve,
   predicting the validation AUROC at 2x and 4x N (extrapolations, with bootstrap CIs);
5. gather it all in one ``advice.Advice`` (``command`` writes it as ``advice.json`` and ``advice.html``),
   with the exact ``medtransfer train`` command that reproduces the recipe.

Expected gains over scratch and ImageNet are read from the search: the pick and the reference's best
arm at the highest rung both reached (equal step budgets, the same validation images, so a paired
bootstrap over validation patients gives the interval); the final test AUROC minus that gain is the
reference's expected test AUROC.
"""
from __future__ import annotations

import dataclasses
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..budget import budget_of
from ..config import RunConfig
from ..data.records import PreparedData
from ..errors import DataError, MedtransferError
from ..evaluate.bootstrap import bootstrap_auroc_samples
from ..evaluate.learning_curve import METHOD as CURVE_METHOD
from ..evaluate.learning_curve import fit_curve
from ..evaluate.metrics import macro_auroc, one_vs_rest_targets
from ..evaluate.per_run import RunVerdict
from ..inference import load_run
from ..kinds import Strategy, TaskKind
from ..run_folder import RunMetrics
from ..kinds import SelectionKind
from ..runs.cnn import train_run
from ..runs.cv import SelectionPlan, plan_selection
from ..runs.data_split import prepare_run_data
from ..train import predict, resolve_device
from .advice import Advice, Gain, Recommendation
from .candidates import IMAGENET_NAME, SCRATCH_NAME, Candidate
from .features import CandidateFeatures, candidate_features
from .rank import METHOD as RANK_METHOD
from .rank import CandidateScore, rank_candidates
from .plan import (LOAD_MARGIN, SearchPlan, SearchSpace, final_steps_within, needed_budget, plan_search,
                   recipe_config, reserve_seconds)
from .choice import paired_interval
from .search import (BudgetClock, HalvingResult, SearchData, Trial, cross_validated_data, curve_sizes, run_halving,
                     run_sizes, search_data_of)
from .timing import PROBE_SHARE, probe_cost

Log = Callable[[str], None]

MIN_TRAIN_IMAGES = 20
BEST_RUN = "best"
N_BOOT = 1000
LEVEL = 0.95
# Seconds kept for what follows the last training before the user has their prompt back: reloading the pick
# for the learning curve with the bootstraps of the gains and the curve (3 s), advice.json and advice.html
# (0.3 s), the interpreter's exit with torch loaded (2-7 s) and, from the CLI, its start before advise()
# began counting (1-2 s). Measured on 2 CPU cores under load (pneumoniamnist at N = 200, ResNet-18, 32 px).
WRAP_UP_SECONDS = 10.0


def check_training_set(labels: np.ndarray, kind: TaskKind, label_names: list[str], n_train_setting) -> None:
    """At least MIN_TRAIN_IMAGES training images and, for every label, a positive and a negative among them."""
    n = len(labels)
    if n < MIN_TRAIN_IMAGES:
        raise DataError(f"the training subset has {n} images (train.n_train={n_train_setting}): advise needs at "
                        f"least {MIN_TRAIN_IMAGES} labelled training images")
    targets = one_vs_rest_targets(labels, kind, len(label_names))
    for k, name in enumerate(label_names):
        positives = int(targets[:, k].sum())
        if positives == 0:
            raise DataError(f"label '{name}' has no positive among the {n} training images (0 of {n}): advise "
                            "needs at least one positive of every label in the training split")
        if positives == n:
            raise DataError(f"label '{name}' has no negative among the {n} training images ({n} of {n} positive): "
                            "advise needs both classes of every label in the training split")


def _check_validation(labels: np.ndarray, kind: TaskKind, label_names: list[str]) -> None:
    targets = one_vs_rest_targets(labels, kind, len(label_names))
    if not any(0 < targets[:, k].sum() < len(targets) for k in range(targets.shape[1])):
        raise DataError(f"the validation split ({len(labels)} images) has no label with both classes: the search "
                        "chooses by validation AUROC, which is undefined here (use more data or data.val_size: fixed)")


def expected_gains(halving: HalvingResult, candidates: list[Candidate], usable: set[str], data, test_auroc):
    """Gain of the pick over scratch and ImageNet at the highest rung both were trained at."""
    out = []
    by_name = {c.name: c for c in candidates}
    for ref in (SCRATCH_NAME, IMAGENET_NAME):
        cand = by_name.get(ref)
        if cand is None or not cand.available:
            out.append(Gain(ref, reason=cand.reason if cand is not None else "not a candidate"))
            continue
        if ref not in usable:
            out.append(Gain(ref, reason="its features were unusable, so it was not searched"))
            continue
        if halving.pick.init_name == ref:
            out.append(Gain(ref, reason=f"the pick starts from {ref}: no gain to measure"))
            continue
        for rung in range(len(halving.rungs), 0, -1):
            mine = halving.best_at_rung(rung, ref)
            pick = next((t for t in halving.rungs[rung - 1] if t.arm == halving.pick), None)
            if mine is not None and pick is not None and math.isfinite(pick.val_auroc):
                gain = pick.val_auroc - mine.val_auroc
                paired = paired_interval(data, pick, mine)
                low, high = (paired.low, paired.high) if math.isfinite(paired.low) else (None, None)
                expected = None if test_auroc is None else float(np.clip(test_auroc - gain, 0.0, 1.0))
                out.append(Gain(ref, None, rung, pick.steps, mine.arm.label, pick.val_auroc, mine.val_auroc, gain,
                                low, high, expected))
                break
        else:
            out.append(Gain(ref, reason="no finished trial of it in the search"))
    return out


def learning_curve(data, trials: list[Trial], n_train: int, final_val_scores: np.ndarray | None,
                   final_val_auroc: float | None, test_auroc: float | None) -> dict:
    """The pick's validation AUROC at the sizes tried, the power-law fit, and predictions at 2x / 4x N."""
    points = [(t.n_train, t.val_auroc, t.val_scores) for t in trials if math.isfinite(t.val_auroc)]
    if final_val_auroc is not None and final_val_scores is not None:
        points.append((n_train, final_val_auroc, final_val_scores))
    scale = "validation AUROC (the search's validation images)"
    if data.folds:   # each point's AUROC from its out-of-fold scores of the same pool images, as its draws are
        points = [(n, float(macro_auroc(data.val.labels, s, data.task_kind)), s) for n, _, s in points]
        scale = (f"pooled out-of-fold AUROC over the N-pool's {len(data.folds)} folds (N: the images the folds were "
                 "drawn from; each fold trained on the others)")
    points.sort(key=lambda p: p[0])
    sizes = [{"n_train": int(n), "val_auroc": float(a)} for n, a, _ in points]
    result = {"method": CURVE_METHOD, "scale": scale, "sizes": sizes, "fit": None, "predictions": []}
    if len(points) < 3:
        result["fit"] = {"ok": False, "reason": f"{len(points)} size(s) measured: a curve needs 3 (N/4, N/2, N)"}
        return result
    targets = one_vs_rest_targets(data.val.labels, data.task_kind, data.n_outputs)
    try:   # same validation images, seed and patients at every size: column b is one joint draw
        draws = np.stack([bootstrap_auroc_samples(targets, s, data.val.clusters, n_boot=N_BOOT, seed=0)
                          for _, _, s in points])
    except DataError:
        draws = None
    model = fit_curve([p[0] for p in points], [p[1] for p in points], draws, level=LEVEL)
    fit = model.fit
    result["fit"] = {"ok": fit.ok, "reason": fit.reason, "a": fit.a, "b": fit.b, "c": fit.c,
                     "exact_fit": fit.exact_fit, "n_draws": model.n_draws, "failed_refits": model.n_failed}
    if fit.ok and model.blocked:   # N/4, N/2, N: the curve passes through them; its 2x / 4x would be guesses
        result["fit"] |= {"ok": False, "reason": model.blocked}
    if not result["fit"]["ok"]:
        return result
    at_n = fit(float(n_train))
    for factor, est in model.predict_beyond((2.0, 4.0)).items():
        gain = est.estimate - at_n
        result["predictions"].append({
            "factor": factor, "n_train": int(round(factor * max(p[0] for p in points))),
            "val_auroc": est.estimate, "low": None if math.isnan(est.low) else est.low,
            "high": None if math.isnan(est.high) else est.high, "extrapolation": bool(est.extrapolated),
            "gain_over_n": gain,
            "expected_test_auroc": None if test_auroc is None else float(min(test_auroc + gain, 1.0))})
    return result


def train_command(config_path: Path, data_root: Path, out: Path, overrides: list[str], cfg: RunConfig,
                  best: RunConfig, threads: int | None = None) -> str:
    """The ``medtransfer train`` line that trains ``best``: the user's config and --set values, then the recipe
    (with ``train.epochs`` when the budget changed it, and ``train.threads`` when advise chose the thread
    count: CPU results depend on it)."""
    recipe = [f"model.init={best.model.init}", f"train.strategy={best.train.strategy}",
              f"train.lr_policy={best.train.lr_policy}", f"train.steps={best.train.steps}"]
    if best.model.arch != cfg.model.arch:
        recipe.insert(0, f"model.arch={best.model.arch}")
    if best.train.epochs != cfg.train.epochs:    # a budget that validated the final run less often
        recipe.append(f"train.epochs={best.train.epochs}")
    if threads is not None:
        recipe.append(f"train.threads={threads}")
    parts = ["medtransfer", "train", str(config_path), "--data-root", str(data_root), "--out", str(out)]
    for pair in list(overrides) + recipe:
        parts += ["--set", pair]
    return shlex.join(parts)


@dataclass(frozen=True)
class AdviseRequest:
    """One ``advise``, its arguments checked: the loaded config, where to write, the budget and when it started."""
    cfg: RunConfig              # the user's config, with train.threads set when advise chose it (``threads``)
    config_path: Path
    out: Path
    root: Path                  # the data root
    overrides: list[str]
    study_dir: str | Path | None
    budget_seconds: float
    space: SearchSpace
    started: float              # time.monotonic() when advise began: the budget counts from here
    threads: int | None = None  # the CPU threads advise chose (train.threads unset, a CPU device); else None

    @property
    def deadline(self) -> float:
        return self.started + self.budget_seconds


@dataclass(frozen=True)
class _TrainingData:
    """The run's data and split, checked for advise, with the device every step trains on."""
    data: PreparedData
    idx: dict[str, np.ndarray]  # split name -> row indices (the N-subset for "train")
    names: list[str]            # label names
    device: torch.device
    selection: SelectionPlan    # the rule a run with this config follows (``runs.cv``): the search follows it too

    @property
    def n_train(self) -> int:
        return int(len(self.idx["train"]))


@dataclass(frozen=True)
class _Searched:
    """What the search produced: its data (train subset + validation only), plan and result, and the steps of
    the final run (the plan's, or fewer when the search's runs took longer than estimated)."""
    data: SearchData
    plan: SearchPlan
    halving: HalvingResult
    final_steps: int
    notes: tuple[str, ...] = ()
    every_size: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)   # before the plan cut sizes


def run_workflow(req: AdviseRequest, candidates: list[Candidate], log: Log) -> Advice:
    """Steps 1-5 of the module docstring for a checked request; the test split is read by the final run only."""
    log(f"medtransfer advise {req.config_path} -> {req.out} (budget {req.budget_seconds:.0f} s)")
    for cand in candidates:
        if not cand.available:
            log(f"candidate {cand.name}: unavailable ({cand.reason})")
        elif cand.note:
            log(f"candidate {cand.name}: {cand.note}")
    prepared = _training_data(req.cfg, req.root, log)
    features, scores = _rank(req.cfg, candidates, prepared, log)           # 1. transferability
    by_name = {c.name: c for c in candidates}
    ranked = [by_name[s.name] for s in scores if s.unusable is None]
    if not ranked:
        raise MedtransferError("no candidate initialisation is usable: " +
                               "; ".join(f"{s.name}: {s.unusable}" for s in scores))
    searched = _search(req, prepared, features, ranked, log)               # 2. the search
    best_cfg = recipe_config(req.cfg, searched.halving.pick, searched.final_steps)
    best_cfg.train.epochs = searched.plan.final_run_rounds
    # an outer cross-validation of the final run (train.test_estimate auto, on a small test split) would cost
    # outer_folds more runs, each with its own selection folds, which no budget plan holds: the final run is
    # tested on its split, and its log and page warn when that split is small (runs.scoring.reader_warnings);
    # the printed train command keeps the user's test_estimate (``train_command``), so run without a budget it
    # makes the outer estimate (the kept model is the same: an outer estimate only adds numbers)
    best_cfg.train.test_estimate = "split"
    best_dir = req.out / BEST_RUN                                          # 3. the final run
    log(f"final run: {searched.halving.pick.label}, {searched.halving.pick.effort(searched.final_steps)} -> {best_dir}")
    metrics = train_run(best_cfg, best_dir, req.root, overwrite=True, echo=False, progress=False)
    _log_final(metrics, log)
    curve, size_notes = _learning_curve_of(req, prepared, searched, metrics, log)   # 4. the learning curve
    gains = expected_gains(searched.halving, candidates, {c.name for c in ranked}, searched.data,
                           metrics.auroc("test"))
    command = train_command(req.config_path, req.root, req.out / "retrain", req.overrides, req.cfg, best_cfg,
                            req.threads)
    seconds = time.monotonic() - req.started
    log(f"advice written in {seconds:.0f} s (budget {req.budget_seconds:.0f} s)")
    halving, plan = searched.halving, searched.plan
    recommendation = Recommendation(
        pick=halving.pick, steps=searched.final_steps, search_val_auroc=halving.pick_trial.val_auroc,
        search_steps=halving.pick_trial.steps, val_auroc=metrics.auroc("val"), test_auroc=metrics.auroc("test"),
        test_auroc_ci=(metrics.test.auroc_ci if metrics.test else None) or None,
        test_operating_point=metrics.test.operating_point if metrics.test else None, run=best_dir,
        config=best_dir / "config.yaml", command=command, note=by_name[halving.pick.init_name].note,
        verdict=RunVerdict.from_details(metrics.auroc("test"), metrics.test.auroc_ci if metrics.test else None,
                                        metrics.details))
    return Advice(
        config=req.config_path, data_root=req.root, overrides=req.overrides, study=req.study_dir,
        task_kind=req.cfg.task.kind, labels=prepared.names, n_train=prepared.n_train,
        n_train_patients=metrics.n_train_patients, n_val=int(len(prepared.idx["val"])),
        n_test=metrics.n_test_images, budget_seconds=req.budget_seconds, seconds=round(seconds, 1),
        candidates=candidates, ranking_method=RANK_METHOD, scores=scores, plan=plan, search=halving,
        recommendation=recommendation, gains=gains, learning_curve=curve,
        notes=list(plan.notes) + ([halving.stopped] if halving.stopped else []) + list(searched.notes) + size_notes
        + _small_test_note(metrics, req.cfg))


def _small_test_note(metrics: RunMetrics, cfg: RunConfig) -> list[str]:
    """A note when the test split is too small to estimate the pick's performance, and how to get an estimate:
    advise tests the final run on its split only (an outer cross-validation costs outer_folds more runs)."""
    from ..evaluate.per_run import SMALL_TEST_CLASS, fewest_patients

    fewest = fewest_patients((metrics.test.patients_per_class or {}) if metrics.test else {})
    if fewest is None or fewest[1] >= SMALL_TEST_CLASS:
        return []
    name, n = fewest
    how = ("run the train command below: with train.test_estimate: auto it also estimates by outer "
           "cross-validation" if cfg.train.test_estimate != "split" else
           "run the train command below with --set train.test_estimate=outer_cv")
    return [f"the test split holds {n} patients of '{name}' (fewer than {SMALL_TEST_CLASS}): its test AUROC is a rough "
            f"estimate; for one by outer cross-validation (folds grouped by patients), {how} (about "
            f"{cfg.train.outer_folds} more runs; the model is the same)"]


def _training_data(cfg: RunConfig, root: Path, log: Log) -> _TrainingData:
    """The run's split and training subset, refused when advise cannot choose on it."""
    data, idx = prepare_run_data(cfg, root, log, progress=False)
    kind, names = cfg.task.kind, list(data.label_names)
    check_training_set(np.asarray(data.labels[idx["train"]]), kind, names, cfg.train.n_train)
    selection = plan_selection(cfg, data, idx)
    log(f"selection: {selection.kind.value} ({selection.reason})")
    if selection.kind is SelectionKind.HOLDOUT:
        _check_validation(np.asarray(data.labels[idx["val"]]), kind, names)
    return _TrainingData(data, idx, names, resolve_device(cfg.train.device), selection)


def _rank(cfg: RunConfig, candidates: list[Candidate], prepared: _TrainingData, log: Log
          ) -> tuple[dict[str, CandidateFeatures], list[CandidateScore]]:
    """Step 1: each candidate's frozen features of the training images, and the candidates ranked by them."""
    data, train_idx, names = prepared.data, prepared.idx["train"], prepared.names
    features = candidate_features(candidates, data.images[train_idx], len(names), seed=cfg.train.seed,
                                  dropout=cfg.model.dropout, batch_size=max(cfg.train.batch_size, 64),
                                  device=prepared.device, log=log)
    groups = data.clusters(train_idx)
    scores = rank_candidates(features, np.asarray(data.labels[train_idx]), cfg.task.kind, len(names),
                             np.asarray(groups))
    for s in scores:
        shown = (f"LogME {s.logme:.4f}, probe AUROC " + (f"{s.probe_auroc:.3f}" if s.probe_auroc is not None else "—")
                 + ", k-NN AUROC " + (f"{s.knn_auroc:.3f}" if s.knn_auroc is not None else "—")
                 + ", SFDA " + (f"{s.sfda:.3f}" if s.sfda is not None else "—")
                 if s.unusable is None else f"unusable: {s.unusable}")
        log(f"rank {s.rank or '-'}: {s.name}: {shown}")
    return features, scores


def _search(req: AdviseRequest, prepared: _TrainingData, features: dict[str, CandidateFeatures],
            ranked: list[Candidate], log: Log) -> _Searched:
    """Step 2: the timing probe, the search plan sized to what is left of the budget (or the budget refused),
    the successive halving (training subset and validation split only) and the final run's steps."""
    cfg, data, idx = req.cfg, prepared.data, prepared.idx
    sizes, config_steps = curve_sizes(prepared.n_train), budget_of(prepared.n_train, cfg.train).total_steps
    search_data = search_data_of(data, idx["train"], idx["val"], data.splits["train"], sizes, cfg.train.seed,
                                 cfg.task.kind, cfg.data.subset_by)
    if prepared.selection.kind is SelectionKind.CV:   # as the final run (train_run) will: the same pool and folds
        search_data = cross_validated_data(search_data, data, prepared.selection)
    before_probe = time.monotonic() - req.started
    cost = _probe(req, prepared, features, ranked, search_data, log)
    plan = plan_search([(c.name, c.init, c.arch) for c in ranked], req.space, config_steps, sizes, cost,
                       max(req.deadline - time.monotonic(), 0.0), cfg.train)
    if not plan.fits:
        raise MedtransferError(_refusal(req, plan, before_probe))
    log(f"plan: {plan.describe()}; estimated {plan.estimated_seconds:.0f} s "
        f"({max(req.deadline - time.monotonic(), 0.0):.0f} s left)")
    for note in plan.notes:
        log(f"plan: {note}")
    every_size = search_data.nested
    search_data = dataclasses.replace(search_data, nested={n: search_data.nested[n] for n in plan.sizes})
    reserve = reserve_seconds(cost, list(plan.arms), plan.final_steps, plan.final_run_rounds)
    clock = BudgetClock(req.deadline, reserve_seconds=reserve)
    halving = run_halving(search_data, plan, cfg, prepared.device, log=log, clock=clock)
    pick = halving.pick_trial
    log(f"pick: {halving.pick.label} ({search_data.score_name} {pick.val_auroc:.4f} at {pick.steps} steps, rung "
        f"{pick.rung}; {halving.choice.noise_line if halving.choice else 'no rule recorded'})")
    steps = final_steps_within(plan, halving.pick, clock.scale, clock.seconds_left(),
                               (halving.pick_trial.steps, config_steps))
    notes = ()
    if steps != plan.final_steps:
        notes = (f"budget: the search's runs took x{clock.scale:.2f} their estimate and {clock.seconds_left():.0f} s "
                 f"are left, so the final run trains {steps} steps (the plan's {plan.final_steps}, the config's "
                 f"{config_steps})",)
        log(notes[0])
    return _Searched(search_data, plan, halving, steps, notes, every_size)


def _probe(req: AdviseRequest, prepared: _TrainingData, features: dict[str, CandidateFeatures],
           ranked: list[Candidate], search_data: SearchData, log: Log):
    """The cost model: the top-ranked initialisation's full fine-tuning timed for at most PROBE_SHARE of the
    budget, with the final run's extras (test and validation passes at the ranking's forward speed, the wrap-up)."""
    forward = max(f.forward_seconds_per_image for f in features.values() if f.forward_seconds_per_image)
    timed = [a for a in req.space.arms([(c.name, c.init, c.arch) for c in ranked]) if a.strategy != Strategy.PROBE]
    if not timed:   # a probe takes no optimiser step, so it cannot price one
        raise MedtransferError(f"advise: the search space ({'/'.join(req.space.strategies)}) gives no usable candidate "
                               "an arm that trains a layer (a probe trains none, and a scratch start is never frozen or "
                               "probed): add full or gradual")
    timed_arm = next((a for a in timed if a.strategy == Strategy.FULL), timed[0])   # the best-ranked full run
    started = time.monotonic()
    cost = probe_cost(search_data, timed_arm, req.cfg, prepared.device, PROBE_SHARE * req.budget_seconds,
                      val_guess_seconds=forward * len(search_data.val),
                      final_extra_seconds=forward * (len(prepared.idx["test"]) + len(search_data.val)) + WRAP_UP_SECONDS)
    if search_data.folds:   # a trial is a fit per fold, each validating one fold of the pool
        k = len(search_data.folds)
        cost = dataclasses.replace(cost, fits=k, val_seconds=cost.val_seconds / k)
    per_image = tuple((name, f.forward_seconds_per_image) for name, f in features.items() if f.forward_seconds_per_image)
    probe_images = len(search_data.train) + (0 if search_data.folds else len(search_data.val))
    cost = dataclasses.replace(cost, image_seconds=per_image, probe_images=probe_images,
                               timed_image_seconds=dict(per_image).get(timed_arm.init_name, 0.0))
    log(f"cost: {cost.step_seconds:.3f} s per optimiser step (full fine-tuning), {cost.val_seconds:.2f} s per "
        f"validation pass, {cost.fixed_seconds:.2f} s per run, {cost.fits} fit(s) per trial; measured on "
        f"{timed_arm.label} in {time.monotonic() - started:.1f} s")
    return cost


def _refusal(req: AdviseRequest, plan: SearchPlan, before_probe: float) -> str:
    """The one line that refuses a budget too small for any plan, with the smallest budget that would do."""
    needed = needed_budget(before_probe, plan, PROBE_SHARE)
    shown = f"{needed / 60:g}m" if needed >= 60 else f"{needed:g}s"
    return (f"--budget {req.budget_seconds:g}s is too small: even the smallest plan ({plan.describe()}) is estimated "
            f"at {plan.estimated_seconds:.0f} s on this machine now (x{LOAD_MARGIN} for load), after "
            f"{time.monotonic() - req.started:.0f} s of loading, ranking and timing; use --budget {shown} or more")


def _log_final(metrics: RunMetrics, log: Log) -> None:
    """Step 3's one line: the final run's test AUROC with its interval."""
    test_auroc = metrics.auroc("test")
    ci = (metrics.test.auroc_ci if metrics.test else None) or {}
    shown = "undefined" if test_auroc is None else f"{test_auroc:.4f}"
    if ci:
        shown += f" (95% CI {ci['low']:.4f} to {ci['high']:.4f}, {ci.get('resampled', 'patients')} bootstrap)"
    log(f"final run: test AUROC {shown}")


def _learning_curve_of(req: AdviseRequest, prepared: _TrainingData, searched: _Searched, metrics: RunMetrics,
                       log: Log) -> tuple[dict, list[str]]:
    """Step 4: the pick at N/4 and N/2 (same steps, while the budget lasts) and at N from the kept model in
    OUT/best, and the curve fitted to them; (the learning-curve block, notes on sizes skipped)."""
    cfg, data = req.cfg, searched.data
    if data.folds:   # the final run cross-validated on the search's folds: its out-of-fold scores are the N point
        final_scores = _out_of_fold_scores(req.out / BEST_RUN, prepared, searched.halving.pick_trial.val_scores)
        n_point = len(data.train)
    else:
        _, model, _, dev = load_run(req.out / BEST_RUN, cfg.train.device)
        final_scores = predict(model, data.val.images, cfg.task.kind, max(cfg.train.batch_size, 128), dev)
        n_point = prepared.n_train
    cut = sorted(set(searched.every_size) - set(data.nested))
    if searched.halving.pick.strategy == Strategy.PROBE and cut:   # a probe's size costs a feature pass, not a run
        data = dataclasses.replace(data, nested=searched.every_size)
    size_trials, skipped = run_sizes(data, searched.halving.pick, searched.final_steps, cfg, prepared.device,
                                     log=log, deadline=req.deadline - WRAP_UP_SECONDS,
                                     seconds_per_run=float(metrics.seconds))
    size_notes = [f"learning-curve size N={n} skipped: the budget is spent" for n in skipped]
    restored = sorted(set(cut) - set(skipped)) if data is not searched.data else []
    if restored:
        size_notes = [f"learning-curve size(s) {', '.join(map(str, restored))}, left out by the plan for the budget, "
                      "were trained after all: the pick is a probe (no optimiser steps)"] + size_notes
        log(f"learning curve: {size_notes[0]}")
    curve = learning_curve(data, size_trials, n_point, final_scores, metrics.auroc("val"), metrics.auroc("test"))
    return curve, size_notes


def _out_of_fold_scores(run_dir: Path, prepared: _TrainingData, like: np.ndarray | None) -> np.ndarray | None:
    """A cross-validated final run's out-of-fold scores (its val_predictions.csv), in the N-pool's order and
    shaped as the search's scores; None when the run did not write them for every pool image."""
    import pandas as pd

    from ..run_folder import RunFolder

    path = RunFolder(run_dir).val_predictions_path
    pool_ids = [str(i) for i in np.asarray(prepared.data.image_ids)[prepared.selection.pool]]
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
    columns = [c for c in frame.columns if c.startswith("score_")]
    if not set(pool_ids) <= set(frame.index):
        return None
    scores = frame.loc[pool_ids, columns].to_numpy(dtype=np.float64)
    return scores.reshape(np.shape(like)) if like is not None and np.size(like) == scores.size else scores

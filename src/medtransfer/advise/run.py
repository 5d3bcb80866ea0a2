"""``medtransfer advise``: the recipe for the user's own data in minutes, before spending the compute.

The edge of the advise package (the only module here that writes files):

1. list the candidate initialisations (``candidates``) and rank them by the transferability of
   their frozen features of the training images (``features``, ``rank``);
2. plan a successive-halving search that fits ``--budget`` and run it on the training subset and
   the validation split only (``search``: it is handed no test row);
3. train the pick with ``train_run`` into ``ADVICE_DIR/best`` (so ``medtransfer predict --run
   ADVICE_DIR/best`` works): the one evaluation on the test split, with its patient-level CI;
4. train the pick at N/4 and N/2 (same steps, same validation images) and fit the learning curve,
   predicting the validation AUROC at 2x and 4x N (extrapolations, with bootstrap CIs);
5. write ``advice.json`` and the self-contained ``advice.html``, with the exact ``medtransfer train``
   command that reproduces the recipe.

Expected gains over scratch and ImageNet are read from the search: the pick and the reference's best
arm at the highest rung both reached (equal step budgets, the same validation images, so a paired
bootstrap over validation patients gives the interval); the final test AUROC minus that gain is the
reference's expected test AUROC.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import RunConfig, load_config, resolve_data_root
from ..errors import DataError, MedtransferError
from ..run_folder import write_json_atomic, write_text_atomic
from .candidates import IMAGENET_NAME, SCRATCH_NAME, Candidate, list_candidates
from .search import (GRACE, HalvingResult, SearchSpace, Trial, curve_sizes, measure_cost, plan_search,
                     recipe_config, run_halving, run_sizes, search_data_of)

MIN_TRAIN_IMAGES = 20
ADVICE_JSON = "advice.json"
ADVICE_HTML = "advice.html"
BEST_RUN = "best"
LOG_FILE = "advise.log"
N_BOOT = 1000
LEVEL = 0.95


def check_training_set(labels: np.ndarray, kind: str, label_names: list[str], n_train_setting) -> None:
    """At least MIN_TRAIN_IMAGES training images and, for every label, a positive and a negative among them."""
    from ..evaluate.metrics import one_vs_rest_targets

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


def _check_validation(labels: np.ndarray, kind: str, label_names: list[str]) -> None:
    from ..evaluate.metrics import one_vs_rest_targets

    targets = one_vs_rest_targets(labels, kind, len(label_names))
    if not any(0 < targets[:, k].sum() < len(targets) for k in range(targets.shape[1])):
        raise DataError(f"the validation split ({len(labels)} images) has no label with both classes: the search "
                        "chooses by validation AUROC, which is undefined here (use more data or data.val_size: fixed)")


@dataclass(frozen=True)
class Gain:
    """The pick's expected gain over a reference initialisation, from the search's validation AUROCs."""
    versus: str
    reason: str | None = None          # why there is no number (unavailable, the pick itself, never trained ...)
    rung: int | None = None
    steps: int | None = None
    versus_recipe: str | None = None
    pick_val: float | None = None
    versus_val: float | None = None
    gain: float | None = None
    low: float | None = None
    high: float | None = None
    expected_test_versus: float | None = None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _paired_val_interval(val, kind: str, n_outputs: int, scores_a, scores_b) -> tuple[float | None, float | None]:
    """Percentile interval of AUROC(a) - AUROC(b) over the same validation-patient resamples."""
    from ..evaluate.bootstrap import bootstrap_auroc_samples
    from ..evaluate.metrics import one_vs_rest_targets

    if scores_a is None or scores_b is None:
        return None, None
    targets = one_vs_rest_targets(val.labels, kind, n_outputs)
    try:
        a = bootstrap_auroc_samples(targets, scores_a, val.clusters, n_boot=N_BOOT, seed=0)
        b = bootstrap_auroc_samples(targets, scores_b, val.clusters, n_boot=N_BOOT, seed=0)
    except DataError:
        return None, None
    low, high = np.nanquantile(a - b, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return float(low), float(high)


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
                low, high = _paired_val_interval(data.val, data.task_kind, data.n_outputs, pick.val_scores,
                                                 mine.val_scores)
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
    from ..evaluate.bootstrap import bootstrap_auroc_samples
    from ..evaluate.learning_curve import METHOD, fit_curve
    from ..evaluate.metrics import one_vs_rest_targets

    points = [(t.n_train, t.val_auroc, t.val_scores) for t in trials if math.isfinite(t.val_auroc)]
    if final_val_auroc is not None and final_val_scores is not None:
        points.append((n_train, final_val_auroc, final_val_scores))
    points.sort(key=lambda p: p[0])
    sizes = [{"n_train": int(n), "val_auroc": float(a)} for n, a, _ in points]
    result = {"method": METHOD, "scale": "validation AUROC (the search's validation images)", "sizes": sizes,
              "fit": None, "predictions": []}
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
    if not fit.ok:
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
                  best: RunConfig) -> str:
    """The ``medtransfer train`` line that trains ``best``: the user's config and --set values, then the recipe."""
    recipe = [f"model.init={best.model.init}", f"train.strategy={best.train.strategy}",
              f"train.lr_policy={best.train.lr_policy}", f"train.steps={best.train.steps}"]
    if best.model.arch != cfg.model.arch:
        recipe.insert(0, f"model.arch={best.model.arch}")
    parts = ["medtransfer", "train", str(config_path), "--data-root", str(data_root), "--out", str(out)]
    for pair in list(overrides) + recipe:
        parts += ["--set", pair]
    return shlex.join(parts)


def _refuse_existing(out: Path) -> None:
    if (out / ADVICE_JSON).is_file():
        raise MedtransferError(f"{out / ADVICE_JSON} exists: {out} holds finished advice (choose another --out)")


def advise(config_path, out, data_root=None, sources: dict[str, Path] | None = None, study_dir=None,
           budget_seconds: float = 600.0, overrides: list[str] | None = None, *,
           space: SearchSpace | None = None, echo: bool = True) -> Path:
    """Rank the candidates, search recipes within ``budget_seconds``, train the pick into OUT/best and write
    OUT/advice.json and OUT/advice.html; returns the path of advice.json."""
    from ..parallel import torch_threads
    from ..runs.folder_protocol import RunLog

    started = time.monotonic()
    config_path, out = Path(config_path), Path(out)
    overrides = list(overrides or [])
    cfg = load_config(config_path, overrides)
    root = Path(data_root).expanduser().resolve() if data_root is not None else resolve_data_root(None)
    if budget_seconds <= 0:
        raise MedtransferError(f"--budget must be longer than 0 s, got {budget_seconds}")
    candidates = list_candidates(cfg, sources, Path(study_dir) if study_dir is not None else None)
    _refuse_existing(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedtransferError(f"--out {out}: cannot create the folder ({err.strerror or err})") from None
    log = RunLog(out / LOG_FILE, echo=echo)
    try:
        with torch_threads(cfg.train.threads):
            advice = _advise(cfg, config_path, out, root, candidates, study_dir, budget_seconds, overrides,
                             space or SearchSpace(), started, log)
    except MedtransferError as err:
        log(f"FAILED: {err}")
        raise
    finally:
        log.close()
    from .page import render_advice

    write_json_atomic(out / ADVICE_JSON, advice)
    write_text_atomic(out / ADVICE_HTML, render_advice(advice))
    return out / ADVICE_JSON


def _advise(cfg: RunConfig, config_path: Path, out: Path, root: Path, candidates: list[Candidate], study_dir,
            budget_seconds: float, overrides: list[str], space: SearchSpace, started: float, log) -> dict:
    from ..budget import budget_of
    from ..inference import load_run
    from ..runs.cnn import train_run
    from ..runs.data_split import prepare_run_data
    from ..train import predict, resolve_device
    from .features import candidate_features
    from .rank import METHOD as RANK_METHOD
    from .rank import rank_candidates

    deadline = started + budget_seconds
    log(f"medtransfer advise {config_path} -> {out} (budget {budget_seconds:.0f} s)")
    for cand in candidates:
        if not cand.available:
            log(f"candidate {cand.name}: unavailable ({cand.reason})")
        elif cand.note:
            log(f"candidate {cand.name}: {cand.note}")
    data, idx = prepare_run_data(cfg, root, log, progress=False)
    kind, names = cfg.task.kind, list(data.label_names)
    train_idx, val_idx = idx["train"], idx["val"]
    check_training_set(np.asarray(data.labels[train_idx]), kind, names, cfg.train.n_train)
    _check_validation(np.asarray(data.labels[val_idx]), kind, names)
    n_train = int(len(train_idx))
    device = resolve_device(cfg.train.device)

    # 1. transferability of each candidate's frozen features of the training images
    features = candidate_features(candidates, data.images[train_idx], len(names), seed=cfg.train.seed,
                                  dropout=cfg.model.dropout, batch_size=max(cfg.train.batch_size, 64),
                                  device=device, log=log)
    groups = data.patient_ids[train_idx] if data.has_patient_ids else np.asarray(data.image_ids)[train_idx]
    scores = rank_candidates(features, np.asarray(data.labels[train_idx]), kind, len(names), np.asarray(groups))
    for s in scores:
        shown = (f"LogME {s.logme:.4f}, probe AUROC " + (f"{s.probe_auroc:.3f}" if s.probe_auroc is not None else "—")
                 if s.unusable is None else f"unusable: {s.unusable}")
        log(f"rank {s.rank or '-'}: {s.name}: {shown}")
    by_name = {c.name: c for c in candidates}
    ranked = [by_name[s.name] for s in scores if s.unusable is None]
    if not ranked:
        raise MedtransferError("no candidate initialisation is usable: " +
                               "; ".join(f"{s.name}: {s.unusable}" for s in scores))

    # 2. the search plan and the successive halving (training subset and validation split only)
    final_steps = budget_of(n_train, cfg.train).total_steps
    sizes = curve_sizes(n_train)
    search_data = search_data_of(data, train_idx, val_idx, data.splits["train"], sizes, cfg.train.seed, kind)
    forward = max(f.forward_seconds_per_image for f in features.values() if f.forward_seconds_per_image)
    timed = space.arms([(ranked[0].name, ranked[0].init, ranked[0].arch)])
    timed_arm = next((a for a in timed if a.strategy == "full"), timed[0])
    cost = measure_cost(search_data, timed_arm, cfg, device, final_extra_seconds=forward * len(idx["test"]) + 1.0)
    log(f"cost: {cost.step_seconds:.3f} s per optimiser step (full fine-tuning) + {cost.fixed_seconds:.2f} s per run, "
        f"measured on {timed_arm.label}")
    plan = plan_search([(c.name, c.init, c.arch) for c in ranked], space, final_steps, cfg.train.epochs,
                       sizes, cost, max(deadline - time.monotonic(), 0.0))
    log(f"plan: {len(plan.arms)} arms, rungs of {plan.rung_counts()} arms at {list(plan.rung_steps)} steps, "
        f"final {plan.final_steps} steps, learning-curve sizes {list(plan.sizes) or 'none'}; "
        f"estimated {plan.estimated_seconds:.0f} s")
    for note in plan.notes:
        log(f"plan: {note}")
    search_data = dataclasses.replace(search_data, nested={n: search_data.nested[n] for n in plan.sizes})
    final_estimate = cost.run_seconds(1.0, final_steps) + cost.final_extra_seconds
    halving = run_halving(search_data, plan, cfg, device, log=log, deadline=deadline, reserve_seconds=final_estimate)
    log(f"pick: {halving.pick.label} (val AUROC {halving.pick_trial.val_auroc:.4f} at {halving.pick_trial.steps} "
        f"steps, rung {halving.pick_trial.rung})")

    # 3. the final run: the only evaluation on the test split
    best_cfg = recipe_config(cfg, halving.pick, final_steps)
    best_dir = out / BEST_RUN
    log(f"final run: {halving.pick.label}, {final_steps} steps -> {best_dir}")
    metrics = train_run(best_cfg, best_dir, root, overwrite=True, echo=False, progress=False)
    test_auroc, final_val = metrics.auroc("test"), metrics.auroc("val")
    ci = (metrics.test or {}).get("auroc_ci") or {}
    shown = "undefined" if test_auroc is None else f"{test_auroc:.4f}"
    if ci:
        shown += f" (95% CI {ci['low']:.4f} to {ci['high']:.4f}, {ci.get('resampled', 'patients')} bootstrap)"
    log(f"final run: test AUROC {shown}")

    # 4. the learning curve: the pick at N/4 and N/2 (same steps), and N from the kept model
    _, model, _, dev = load_run(best_dir, cfg.train.device)
    final_scores = predict(model, search_data.val.images, kind, max(cfg.train.batch_size, 128), dev)
    size_trials, size_notes = run_sizes(search_data, halving.pick, final_steps, cfg, device, log=log,
                                        deadline=started + budget_seconds * GRACE,
                                        seconds_per_run=float(metrics.seconds))
    curve = learning_curve(search_data, size_trials, n_train, final_scores, final_val, test_auroc)
    gains = expected_gains(halving, candidates, {c.name for c in ranked}, search_data, test_auroc)

    best_cfg_text = best_dir / "config.yaml"
    command = train_command(config_path, root, out / "retrain", overrides, cfg, best_cfg)
    seconds = time.monotonic() - started
    log(f"advice written in {seconds:.0f} s (budget {budget_seconds:.0f} s)")
    pick = halving.pick
    return {
        "config": str(config_path), "data_root": str(root), "overrides": overrides,
        "study": None if study_dir is None else str(study_dir),
        "task_kind": kind, "labels": names, "n_train": n_train,
        "n_train_patients": metrics.n_train_patients, "n_val": int(len(val_idx)), "n_test": metrics.n_test_images,
        "budget_seconds": budget_seconds, "seconds": round(seconds, 1),
        "candidates": [c.to_json() for c in candidates],
        "ranking": {"method": RANK_METHOD, "scores": [s.to_json() for s in scores]},
        "plan": plan.to_json(),
        "search": {"test_split_used": False, "stopped": halving.stopped, "seconds": round(halving.seconds, 1),
                   "cost_scale": round(halving.cost_scale, 3),
                   "rungs": [{"rung": r, "steps": rung[0].steps if rung else None,
                              "trials": [t.to_json() for t in rung]} for r, rung in enumerate(halving.rungs, 1)],
                   "choice": "best validation macro AUROC at the last rung (ties: the better-ranked initialisation)"},
        "recommendation": {
            "recipe": pick.label, **pick.to_json(), "steps": final_steps,
            "search_val_auroc": halving.pick_trial.val_auroc, "search_steps": halving.pick_trial.steps,
            "val_auroc": final_val, "test_auroc": test_auroc, "test_auroc_ci": ci or None,
            "test_operating_point": (metrics.test or {}).get("operating_point"),
            "run": str(best_dir), "config": str(best_cfg_text), "command": command,
            "predict": f"medtransfer predict --run {shlex.quote(str(best_dir))} IMAGE [IMAGE ...]",
            "note": by_name[pick.init_name].note},
        "gains": [g.to_json() for g in gains],
        "learning_curve": curve,
        "notes": list(plan.notes) + ([halving.stopped] if halving.stopped else []) + size_notes,
    }


def advice_summary(path: Path) -> str:
    """The one line ``medtransfer advise`` prints: the pick, its test AUROC, where the page and the model are."""
    rec = json.loads(Path(path).read_text())["recommendation"]
    auc = "undefined" if rec["test_auroc"] is None else f"{rec['test_auroc']:.4f}"
    out = Path(path).parent
    return (f"{out}: advised {rec['recipe']} ({rec['steps']} steps), test macro AUROC {auc}; "
            f"see {out / 'advice.html'}; model: medtransfer predict --run {out / 'best'}")

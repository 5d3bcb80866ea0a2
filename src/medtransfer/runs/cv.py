"""Cross-validated selection (``train.selection``): what a run trains on, and for how long, when its
validation split is too small to say.

At N = 50 a proportional validation split is 8 images: most recipes score validation AUROC 1.000 on it, its
best round is noise, and a study's pick among twelve recipes is a tie-break. With ``cv`` the run instead
splits its *N-pool* (the training subset plus the N/7 validation images a user with N training images would
hold out, ``validation_share``) into ``train.cv_folds`` patient-grouped, stratified folds, the same folds for
every recipe of an (N, seed) cell, so recipes are compared paired, and the same folds the radiomics baseline
chooses its C on (``data.splits.pool_folds``). Each fold trains the run's recipe from its init on the other
folds and is scored after every round; the round with the best *mean* fold AUROC sets the training length;
the out-of-fold scores at that round are the run's validation predictions (what the report ranks recipes
by, and what the threshold is chosen on); then one model trains on the whole pool for that many rounds and
is tested once.

``auto`` picks ``cv`` when the validation split holds fewer than ``MIN_VAL_IMAGES`` images or fewer than
``MIN_VAL_CLASS`` of a class present in the pool, and says why in train.log and metrics.json.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..config import RunConfig
from ..data import PreparedData, proportional_val, strata_matrix
from ..data.splits import fold_strata, pool_folds
from ..evaluate.metrics import macro_auroc, one_vs_rest_targets
from ..evaluate.summary import cv_corrected_ci
from ..evaluate.per_run import class_names
from ..kinds import SelectionKind, Strategy, TaskKind
from ..train import fit
from ..train.features import FeatureTable
from ..train.strategies import split_epochs
from ..train.tracks import FitResult, HeadInputs
from .folder_protocol import Log

MIN_VAL_IMAGES = 50     # auto: fewer validation images than this -> cv
MIN_VAL_CLASS = 10      # auto: fewer validation images of a class present in the pool -> cv


@dataclass(frozen=True)
class SelectionPlan:
    """How one run selects: its kind, why, and (cv) the N-pool and its folds (positions into ``pool``)."""
    kind: SelectionKind
    reason: str
    pool: np.ndarray                                   # dataset indices: training subset, then validation images
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def record(self) -> dict:
        """metrics.json's ``selected_by`` for a holdout run (a cv run's comes from its ``CvOutcome``)."""
        return {"kind": self.kind.value, "reason": self.reason}


@dataclass(frozen=True)
class CvOutcome:
    """What the folds measured: per fold its AUROC at the chosen round, the mean curve, the out-of-fold scores."""
    plan: SelectionPlan
    fold_auroc: list[float]            # each fold's AUROC at the chosen round (NaN: undefined on that fold)
    mean_curve: list[float]            # mean fold AUROC after each round
    chosen_round: int                  # 1-based: the round with the best mean fold AUROC (earliest on a tie)
    round_steps: int
    oof_rows: np.ndarray               # dataset indices of the pool, sorted
    oof_scores: np.ndarray             # their out-of-fold scores at the chosen round, in oof_rows' order
    pool_patients: int

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.fold_auroc)) if np.isfinite(self.fold_auroc).any() else math.nan

    @property
    def se(self) -> float:
        """Standard error of the mean fold AUROC, Nadeau-Bengio corrected (the folds share training images:
        ``evaluate.summary.cv_corrected_ci``); NaN with under 2 scored folds."""
        return cv_corrected_ci(self.fold_auroc, len(self.fold_auroc)).sd

    def record(self) -> dict:
        """metrics.json's ``selected_by`` for a cross-validated run."""
        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else round(float(v), 6)
        return {"kind": SelectionKind.CV.value, "reason": self.plan.reason, "folds": len(self.plan.folds),
                "pool_images": int(len(self.plan.pool)), "pool_patients": self.pool_patients,
                "fold_auroc": [num(v) for v in self.fold_auroc], "cv_auroc_mean": num(self.mean),
                "cv_auroc_se": num(self.se), "chosen_round": self.chosen_round, "round_steps": self.round_steps,
                "chosen_steps": self.chosen_round * self.round_steps,
                "mean_curve": [num(v) for v in self.mean_curve]}


def small_validation(data: PreparedData, idx: dict[str, np.ndarray], kind: TaskKind) -> str:
    """Why the validation split is too small to select on (``auto``'s rule), or '' when it is not."""
    val, pool = idx["val"], np.concatenate([idx["train"], idx["val"]])
    if len(val) < MIN_VAL_IMAGES:
        return f"the validation split holds {len(val)} images (fewer than {MIN_VAL_IMAGES})"
    present = strata_matrix(data.labels[pool], kind).any(axis=0)
    counts = strata_matrix(data.labels[val], kind).sum(axis=0)
    names = class_names(data.label_names, kind)
    short = [(int(counts[c]), names[c]) for c in np.flatnonzero(present) if counts[c] < MIN_VAL_CLASS]
    if short:
        n, name = min(short)
        return f"the validation split holds {n} images of '{name}' (fewer than {MIN_VAL_CLASS})"
    return ""


def validation_share(cfg: RunConfig, data: PreparedData, idx: dict[str, np.ndarray]) -> np.ndarray:
    """The validation images a user with this run's N training images would hold out: the run's own with
    ``data.val_size=proportional``; else the same proportional draw from its (fixed) validation split, so an
    N-pool is N + N/7 images (70/10/20) whatever the validation split, and the CNN runs and the radiomics
    baseline cross-validate the same pool."""
    if cfg.data.val_size == "proportional":
        return idx["val"]
    return proportional_val(idx["val"], len(idx["train"]), data.patient_ids, strata_matrix(data.labels, cfg.task.kind),
                            cfg.data.split_fractions, cfg.train.seed, [], cfg.data.subset_by)


def plan_selection(cfg: RunConfig, data: PreparedData, idx: dict[str, np.ndarray]) -> SelectionPlan:
    """Resolve ``train.selection`` for this run's data: holdout, or cv with its N-pool and folds."""
    mode, kind = cfg.train.selection, cfg.task.kind
    pool = np.concatenate([idx["train"], validation_share(cfg, data, idx)])
    if mode == "holdout":
        return SelectionPlan(SelectionKind.HOLDOUT, "train.selection=holdout", pool)
    small = small_validation(data, idx, kind) if mode == "auto" else ""
    if mode == "auto" and not small:
        return SelectionPlan(SelectionKind.HOLDOUT, f"auto: the validation split holds {len(idx['val'])} images "
                             f"and at least {MIN_VAL_CLASS} of each class", pool)
    targets = one_vs_rest_targets(data.labels[pool], kind, len(data.label_names))
    folds = pool_folds(data.patient_ids[pool], fold_strata(targets), cfg.train.seed, cfg.train.cv_folds)
    why = f"auto: {small}" if mode == "auto" else "train.selection=cv"
    if not folds:
        return SelectionPlan(SelectionKind.HOLDOUT, f"{why}, but the N-pool has fewer than 2 patients of its "
                             "rarest class, so it cannot be cross-validated: selected on the validation images", pool)
    return SelectionPlan(SelectionKind.CV, why, pool, folds)


def cross_validate(cfg: RunConfig, data: PreparedData, plan: SelectionPlan, model: torch.nn.Module,
                   device: torch.device, log: Log, features: FeatureTable | None = None) -> CvOutcome:
    """Train a copy of ``model`` (the run's untrained model, its init loaded) on each fold's other folds,
    scoring the held-out fold after every round; the best mean round and the out-of-fold scores at it.
    ``features``: the frozen backbone's cached features (the heads train on them, ``runs.features``)."""
    pool = plan.pool
    curves = fold_curves(cfg, (data.images[pool], data.labels[pool]), plan.folds, model, device, log,
                         None if features is None else features.take(pool))
    chosen = curves.chosen_round
    order = np.argsort(pool[curves.rows], kind="stable")
    return CvOutcome(plan=plan, fold_auroc=curves.fold_auroc(chosen), mean_curve=curves.mean_curve,
                     chosen_round=chosen, round_steps=curves.round_steps, oof_rows=pool[curves.rows][order],
                     oof_scores=curves.oof_scores(chosen)[order],
                     pool_patients=int(len(np.unique(data.patient_ids[pool]))))


@dataclass(frozen=True)
class FoldCurves:
    """Every fold's validation AUROC and held-out scores after each round (``fold_curves``); what a
    cross-validated run (``cross_validate``) and ``advise``'s cross-validated search trials read."""
    aurocs: np.ndarray                 # (folds, rounds): rounds cut to the shortest fold (patience)
    scores: list[list[np.ndarray]]     # per fold, per round: the held-out rows' scores
    rows: np.ndarray                   # positions of the held-out rows, folds concatenated
    round_steps: int

    @property
    def mean_curve(self) -> list[float]:
        with np.errstate(all="ignore"):
            return [float(np.nanmean(col)) if np.isfinite(col).any() else math.nan for col in self.aurocs.T]

    @property
    def chosen_round(self) -> int:
        """1-based: the round with the best mean fold AUROC (the earliest on a tie; the last when none is defined)."""
        curve = self.mean_curve
        if not any(math.isfinite(v) for v in curve):
            return len(curve)
        return int(np.argmax([v if math.isfinite(v) else -math.inf for v in curve])) + 1

    def fold_auroc(self, chosen: int) -> list[float]:
        return [float(v) for v in self.aurocs[:, chosen - 1]]

    def oof_scores(self, chosen: int) -> np.ndarray:
        """The held-out scores at round ``chosen``, in ``rows``' order."""
        return np.concatenate([s[chosen - 1] for s in self.scores])


def fold_curves(cfg: RunConfig, arrays: tuple[np.ndarray, np.ndarray], folds: list[tuple[np.ndarray, np.ndarray]],
                model: torch.nn.Module, device: torch.device, log: Log,
                features: np.ndarray | None = None) -> FoldCurves:
    """Train a copy of ``model`` on each fold's training positions of ``arrays`` (images, labels), scoring its
    held-out positions after every round (``fit``'s validation pass, so no extra forward pass). ``features``:
    the frozen backbone's cached features of the same positions (a frozen head then trains on them)."""
    images, labels = arrays
    kind = cfg.task.kind
    aurocs, scores, round_steps = [], [], 0
    for f, (tr, te) in enumerate(folds, start=1):
        log(f"cv fold {f}/{len(folds)}: training on {len(tr)} images, scoring {len(te)}")
        seen: list[np.ndarray] = []
        result = fit(copy.deepcopy(model), images[tr], labels[tr], images[te], labels[te], task_kind=kind,
                     cfg=cfg.train, device=device, log=lambda line, f=f: log(f"  fold {f}: {line}"),
                     val_metric=_recording(kind, seen),
                     features=None if features is None else HeadInputs(features[tr], features[te]))
        aurocs.append([r.val_auroc_macro for r in result.history])
        scores.append(seen)
        round_steps = result.budget.round_steps
    rounds = min(len(a) for a in aurocs)              # a fold stopped early by patience has fewer rounds
    return FoldCurves(np.array([a[:rounds] for a in aurocs], dtype=float), scores,
                      np.concatenate([te for _, te in folds]), round_steps)


def _recording(kind: TaskKind, seen: list[np.ndarray]) -> Callable[[np.ndarray, np.ndarray], float]:
    """A validation metric that also keeps each round's scores (the out-of-fold predictions of that round)."""
    def metric(y_true: np.ndarray, y_score: np.ndarray) -> float:
        seen.append(np.array(y_score, copy=True))
        return macro_auroc(y_true, y_score, kind)
    return metric


def pool_config(cfg: RunConfig, cv: CvOutcome):
    """The TrainConfig of the final fit: the run's, cut to the chosen number of rounds of the folds' length
    (a gradual run's stages truncated where the folds' models were at that round), with no early stop."""
    rounds = cv.chosen_round
    update = {"epochs": rounds, "steps": rounds * cv.round_steps, "patience": None}
    if cfg.train.strategy == Strategy.GRADUAL:
        per_stage = list(cfg.train.gradual_epochs) if cfg.train.gradual_epochs else split_epochs(cfg.train.epochs)
        left, cut = rounds, []
        for e in per_stage:
            cut.append(min(e, left))
            left -= cut[-1]
        update["gradual_epochs"] = cut
    return cfg.train.model_copy(update=update)


def fit_on_pool(cfg: RunConfig, data: PreparedData, cv: CvOutcome, model: torch.nn.Module, device: torch.device,
                log: Log, on_step=None, features: FeatureTable | None = None) -> FitResult:
    """The run's model trained on the whole N-pool for the folds' chosen length; nothing validated."""
    pool = cv.plan.pool
    log(f"cv: {len(cv.plan.folds)} folds, mean fold AUROC {cv.mean:.4f} (SE {cv.se:.4f}) at round "
        f"{cv.chosen_round}; training on the whole N-pool ({len(pool)} images, {cv.pool_patients} patients) for "
        f"{cv.chosen_round} round(s), {cv.chosen_round * cv.round_steps} steps")
    empty = np.empty((0, *data.images.shape[1:]), dtype=data.images.dtype)
    no_labels = np.empty((0, *np.shape(data.labels)[1:]), dtype=np.asarray(data.labels).dtype)
    head = None if features is None else features.head_inputs(pool, pool[:0])
    return fit(model, data.images[pool], data.labels[pool], empty, no_labels, task_kind=cfg.task.kind,
               cfg=pool_config(cfg, cv), device=device, log=log, on_step=on_step, features=head)

"""The test estimate of a run whose test split is too small to be one (``train.test_estimate``).

A 20% test split of 500 images holds a few dozen patients of the rarer class: its AUROC moves by 0.1 from one
split to the next, and its bootstrap interval describes that split's patients, not the recipe. With
``outer_cv`` (``auto``: when the test split holds fewer than ``SMALL_TEST_CLASS`` patients of a class) the run
is then also estimated by patient-grouped, stratified outer cross-validation over the *whole labelled set*:

* The whole labelled set is every image the run's data source gives it (its train, validation and test
  splits; with ``data.partition``, its pool), not the N-subset: the outer folds' held-out images are the test
  set, so every labelled patient is tested once, by a model that never saw them.
* Each outer fold is one run at the run's N ("at its N"): the other folds are split into training and
  validation patients in the proportions of ``data.split_fractions`` (70:10 by default), the run's N-subset is
  drawn from that training part with the run's seed and ``data.subset_by`` (and a proportional validation set
  with ``data.val_size=proportional``), the run's own selection runs inside it (``runs.cv.plan_selection``:
  holdout, or cross-validation over the fold's N-pool, so the selection is nested in the outer fold), and the
  fold's model, trained from the run's untrained model with its init, scores the held-out fold. A fold whose
  training part is smaller than N trains on all of it and says so.
* The out-of-fold scores are pooled: one AUROC over every labelled image with a patient-clustered bootstrap
  interval (``evaluate.per_run``), and each fold's AUROC with their mean and standard error.

The model kept in the run folder is still the one trained on the run's own split (its ``test`` block in
metrics.json is that split's), so a recipe's run id, weights and split results do not depend on this key;
the estimate goes to metrics.json's ``test_estimate`` (``TestEstimate``), its scores to
``predictions_outer_cv.csv``, and train.log and ``medtransfer train`` say which estimate to read. A study keeps
one shared test split for every grid run (nesting each would cost K times its grid); ``study.grid`` sets
``split`` on its runs and the report says when that split is small.

Each fold seeds itself as a run does (``train.fit``), writes only inside the run folder and shares no state
with other runs, so runs in parallel processes are as independent with it as without it.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..config import RunConfig
from ..data import PreparedData, nested_subset, proportional_val, strata_matrix
from ..data.splits import carve_val, fold_strata, pool_folds
from ..evaluate.metrics import macro_auroc, one_vs_rest_targets
from ..evaluate.summary import cv_corrected_ci
from ..evaluate.per_run import SMALL_TEST_CLASS, class_names, fewest_patients, patients_per_class, run_interval
from ..kinds import TestEstimateKind, auroc_name
from ..run_folder import RunFolder, RunMetrics
from .cv import plan_selection
from .features import split_scores
from .folder_protocol import Log
from .scoring import write_predictions

DEFAULT_VAL_SHARE = 1 / 8     # validation share of a fold's training part when data.split_fractions has none (70:10)


@dataclass(frozen=True)
class OuterPlan:
    """Which test estimate a run makes and why; for ``outer_cv``, the outer folds (dataset indices: the fold's
    training part, its held-out images) and a copy of the run's model before it was trained."""
    kind: TestEstimateKind
    reason: str
    folds: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)
    untrained: torch.nn.Module | None = None
    split_fewest: tuple[str, int] | None = None      # the test split's rarest class and its patients


@dataclass(frozen=True)
class OuterFold:
    """One outer fold: what it trained and validated on, how it selected, and its held-out AUROC (NaN: undefined)."""
    fold: int
    train_images: int
    train_patients: int
    val_images: int
    test_images: int
    test_patients: int
    selection: str
    auroc: float
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["auroc"] = _num(self.auroc)
        if not self.note:
            del out["note"]
        return out


@dataclass(frozen=True)
class TestEstimate:
    """metrics.json's ``test_estimate``: how the run's test performance was estimated, and (outer_cv) the pooled
    out-of-fold AUROC with its patient-clustered interval, the folds, and the sentence a reader sees first."""
    __test__ = False   # not a pytest class, whatever its name
    kind: TestEstimateKind
    reason: str
    statement: str = ""
    auroc: float | None = None
    auroc_ci: dict[str, Any] | None = None
    folds: tuple[OuterFold, ...] = ()
    n_images: int = 0
    n_patients: int = 0
    seconds: float = 0.0
    auroc_label: str = "AUROC"

    @property
    def fold_auroc(self) -> list[float]:
        return [f.auroc for f in self.folds]

    @property
    def mean(self) -> float:
        values = [v for v in self.fold_auroc if math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    @property
    def se(self) -> float:
        """Standard error of the mean fold AUROC, Nadeau-Bengio corrected (the folds share training images, as
        everywhere else in medtransfer: ``evaluate.summary.cv_corrected_ci``); NaN with under 2 scored folds."""
        return cv_corrected_ci(self.fold_auroc, len(self.fold_auroc)).sd

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "reason": self.reason}
        if self.kind is TestEstimateKind.SPLIT:
            return out
        out.update({"statement": self.statement, "auroc": _num(self.auroc), "auroc_ci": self.auroc_ci,
                    "folds": len(self.folds), "fold_auroc": [_num(v) for v in self.fold_auroc],
                    "fold_auroc_mean": _num(self.mean), "fold_auroc_se": _num(self.se),
                    "n_images": self.n_images, "n_patients": self.n_patients, "per_fold": [f.to_json() for f in self.folds],
                    "kept_model": "trained on the run's own split; its test block is that split's",
                    "predictions": RunFolder.OUTER_PREDICTIONS, "seconds": round(self.seconds, 2),
                    "auroc_label": self.auroc_label})
        return out

    @classmethod
    def from_json(cls, payload: Any) -> "TestEstimate | None":
        """A recorded ``test_estimate`` (None when the run has none or it is not one)."""
        if not isinstance(payload, dict) or payload.get("kind") not in set(TestEstimateKind):
            return None
        folds = tuple(OuterFold(**{**f, "auroc": math.nan if f.get("auroc") is None else f["auroc"]})
                      for f in payload.get("per_fold") or [])
        return cls(TestEstimateKind(payload["kind"]), str(payload.get("reason", "")), payload.get("statement", ""),
                   payload.get("auroc"), payload.get("auroc_ci"), folds, int(payload.get("n_images") or 0),
                   int(payload.get("n_patients") or 0), float(payload.get("seconds") or 0.0),
                   payload.get("auroc_label") or "AUROC")

    def lines(self) -> list[str]:
        """What train.log and ``medtransfer train`` print: nothing for a split estimate, else the statement,
        the pooled AUROC with its interval, the folds', and which model is kept."""
        if self.kind is TestEstimateKind.SPLIT:
            return []
        ci = self.auroc_ci or {}
        pooled = "undefined" if self.auroc is None else f"{self.auroc:.4f}" + (
            f" (95% CI {ci['low']:.4f} to {ci['high']:.4f}, {ci.get('n_boot')} resamples of the {ci.get('resampled')})"
            if "low" in ci else " (no interval)")
        folds = ", ".join("undefined" if not math.isfinite(v) else f"{v:.3f}" for v in self.fold_auroc)
        low = ci.get("low")
        chance = ("verdict (outer cross-validation): " + (
            "its test AUROC has no interval, so it is not shown better than chance" if low is None or self.auroc is None
            else f"better than chance: {self.auroc:.3f}, 95% CI {low:.3f} to {ci['high']:.3f}, lies above 0.5"
            if low > 0.5 else f"no better than chance: {self.auroc:.3f}, its 95% CI {low:.3f} to {ci['high']:.3f} "
            "contains 0.5"))
        return [chance, self.statement,
                f"outer cross-validation: test {self.auroc_label} {pooled} over all {self.n_images} labelled images "
                f"({self.n_patients} patients); per fold {folds}; mean {self.mean:.4f} (SE {self.se:.4f}; the pooled "
                f"AUROC ranks the scores of {len(self.folds)} differently calibrated models together, so it can sit below "
                "the fold mean)",
                "the kept model (model.safetensors) is the one trained on the run's own split, whose test "
                f"{self.auroc_label} is the split's; the outer folds' models are not kept"]


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def plan_test_estimate(cfg: RunConfig, data: PreparedData, idx: dict[str, np.ndarray], model: torch.nn.Module,
                       log: Log) -> OuterPlan:
    """Resolve ``train.test_estimate`` before the run's fit (``model`` is still untrained: an outer_cv plan keeps
    a copy of it for the folds), and say in train.log which estimate the run makes and why."""
    mode, kind = cfg.train.test_estimate, cfg.task.kind
    fewest = fewest_patients(patients_per_class(data.labels[idx["test"]], kind, data.clusters(idx["test"]),
                                                class_names(data.label_names, kind)))
    held = f"the test split holds {fewest[1]} patients of '{fewest[0]}'" if fewest else "the test split is empty"
    if mode == "split":
        return OuterPlan(TestEstimateKind.SPLIT, "train.test_estimate=split", split_fewest=fewest)
    if mode == "auto" and fewest is not None and fewest[1] >= SMALL_TEST_CLASS:
        reason = f"auto: {held} (its fewest; at least {SMALL_TEST_CLASS})"
        log(f"test estimate: the run's own test split ({reason})")
        return OuterPlan(TestEstimateKind.SPLIT, reason, split_fewest=fewest)
    why = f"auto: {held} (fewer than {SMALL_TEST_CLASS})" if mode == "auto" else f"train.test_estimate=outer_cv; {held}"
    rows = np.arange(len(data.labels))
    targets = one_vs_rest_targets(data.labels, kind, len(data.label_names))
    folds = pool_folds(data.clusters(rows), fold_strata(targets), cfg.data.split_seed, cfg.train.outer_folds)
    if not folds:
        log(f"test estimate: {why}, but the labelled set has fewer than 2 patients of its rarest class: "
            "estimated on the split only")
        return OuterPlan(TestEstimateKind.SPLIT, f"{why}; the labelled set cannot be cross-validated (fewer than "
                         "2 patients of a class)", split_fewest=fewest)
    fewer = f" (fewer than train.outer_folds={cfg.train.outer_folds}: a class has that few patients)" \
        if len(folds) < cfg.train.outer_folds else ""
    log(f"test estimate: {why}: the run is also estimated by {len(folds)}-fold patient-grouped outer "
        f"cross-validation over all {len(rows)} labelled images{fewer}, after its own fit")
    return OuterPlan(TestEstimateKind.OUTER_CV, why, [(rows[tr], rows[te]) for tr, te in folds],
                     copy.deepcopy(model), fewest)


FitRun = Callable[..., Any]   # runs.cnn.fit_prepared: (cfg, prepared run, log) -> FitResult


def estimate_test(cfg: RunConfig, plan: OuterPlan, run, folder: RunFolder, metrics: RunMetrics, log: Log,
                  fit_run: FitRun) -> RunMetrics:
    """``metrics`` with its ``test_estimate`` block; for outer_cv, after training and scoring every outer fold.

    ``run`` is the run's ``runs.cnn.PreparedRun`` and ``fit_run`` its ``fit_prepared``: each fold is the same
    prepared run with the fold's indices, selection and a fresh copy of the untrained model, fitted the way the
    run itself was."""
    if plan.kind is TestEstimateKind.SPLIT:
        metrics.details["test_estimate"] = TestEstimate(plan.kind, plan.reason).to_json()
        return metrics
    started, data, kind = time.time(), run.data, cfg.task.kind
    folds, rows, scores = [], [], []
    for k, (train_part, held_out) in enumerate(plan.folds, start=1):
        fold, fold_scores = _run_fold(cfg, plan, run, (k, train_part, held_out), log, fit_run)
        folds.append(fold)
        rows.append(held_out)
        scores.append(fold_scores)
    fold_of = np.concatenate([np.full(len(r), k, dtype=int) for k, r in enumerate(rows, start=1)])
    rows, scores = np.concatenate(rows), np.concatenate(scores)
    order = np.argsort(rows, kind="stable")
    rows, scores, fold_of = rows[order], scores[order], fold_of[order]
    estimate = _pooled(cfg, plan, data, (rows, scores), folds, time.time() - started)
    write_predictions(folder.outer_predictions_path, [data.image_ids[i] for i in rows], data.labels[rows], scores,
                      data.label_names, kind, data.patient_ids[rows] if data.has_patient_ids else None,
                      first={"outer_fold": fold_of})
    for line in estimate.lines():
        log(line)
    metrics.details["test_estimate"] = estimate.to_json()
    return metrics


def _pooled(cfg: RunConfig, plan: OuterPlan, data: PreparedData, oof: tuple[np.ndarray, np.ndarray],
            folds: list[OuterFold], seconds: float) -> TestEstimate:
    """The pooled out-of-fold AUROC with its patient-clustered bootstrap interval, and the sentence saying so."""
    rows, scores = oof
    kind = cfg.task.kind
    clusters = data.clusters(rows)
    interval = run_interval(data.labels[rows], scores, kind, clusters, by_patient=bool(data.has_patient_ids),
                            image_ids=np.asarray(data.image_ids)[rows])
    point = macro_auroc(data.labels[rows], scores, kind)
    grouped = "patient-grouped" if data.has_patient_ids else "image-level (no patient ids)"
    held = f" (the split held {plan.split_fewest[1]} patients of '{plan.split_fewest[0]}')" if plan.split_fewest else ""
    statement = f"test estimated by {len(folds)}-fold {grouped} outer cross-validation{held}"
    return TestEstimate(TestEstimateKind.OUTER_CV, plan.reason, statement,
                        None if not math.isfinite(point) else float(point),
                        None if interval is None else interval.to_json(), tuple(folds), int(len(rows)),
                        int(len(np.unique(clusters))), seconds, auroc_name(kind))


def fold_indices(cfg: RunConfig, data: PreparedData, train_part: np.ndarray, held_out: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], str]:
    """One outer fold as a run's ``idx``: its training part split into training and validation patients as
    ``data.split_fractions`` splits the data, the run's N-subset drawn from the training patients (all of them
    when N is larger, with a note), a proportional validation set when the run uses one, and the held-out fold."""
    strata = strata_matrix(data.labels, cfg.task.kind)
    f_train, f_val, _ = cfg.data.split_fractions
    share = f_val / (f_train + f_val) if f_val > 0 else DEFAULT_VAL_SHARE
    train, val = carve_val(train_part, data.patient_ids, strata, share, cfg.data.split_seed)
    n, note = cfg.train.n_train, ""
    if n != "all" and n > len(train):
        n, note = "all", f"N = {cfg.train.n_train} exceeds the fold's {len(train)} training images: trained on all"
    subset = nested_subset(train, data.patient_ids, strata, n, cfg.train.seed, cfg.data.subset_by)
    if cfg.data.val_size == "proportional":
        val = proportional_val(val, len(subset), data.patient_ids, strata, cfg.data.split_fractions, cfg.train.seed,
                               [], cfg.data.subset_by)
    return {"train": subset, "val": val, "test": np.sort(held_out)}, note


def _run_fold(cfg: RunConfig, plan: OuterPlan, run, fold: tuple[int, np.ndarray, np.ndarray], log: Log,
              fit_run: FitRun) -> tuple[OuterFold, np.ndarray]:
    """Fit one outer fold as the run was fitted (its own selection inside the fold) and score its held-out images."""
    k, train_part, held_out = fold
    data, kind = run.data, cfg.task.kind
    idx, note = fold_indices(cfg, data, train_part, held_out)
    held_out = idx["test"]
    fold_log = (lambda line: log(f"  outer fold {k}: {line}"))
    selection = plan_selection(cfg, data, idx)
    n_patients = int(len(np.unique(data.patient_ids[idx["train"]])))
    log(f"outer fold {k}/{len(plan.folds)}: training on {len(idx['train'])} images from {n_patients} patients, "
        f"validating on {len(idx['val'])}, testing {len(held_out)}; selection: {selection.kind.value} "
        f"({selection.reason})" + (f"; {note}" if note else ""))
    fold_run = dataclasses.replace(run, idx=idx, model=copy.deepcopy(plan.untrained), n_patients=n_patients,
                                   overlap={}, selection=selection, cv=None)
    fit_run(cfg, fold_run, fold_log)
    scores = split_scores(fold_run.model, data, held_out, run.features, kind, max(cfg.train.batch_size, 128),
                          run.device)   # through the head alone when the run reads cached features
    auroc = macro_auroc(data.labels[held_out], scores, kind)
    fold_log(f"held-out {auroc_name(kind)} {auroc:.4f}" if math.isfinite(auroc) else
             f"held-out {auroc_name(kind)} undefined")
    return OuterFold(k, int(len(idx["train"])), n_patients, int(len(idx["val"])), int(len(held_out)),
                     int(len(np.unique(data.clusters(held_out)))), selection.kind.value, float(auroc), note), scores


def outer_cv_summary(details: dict[str, Any]) -> list[str]:
    """The lines ``medtransfer train`` prints after its test line, from metrics.json's details (none for a split)."""
    estimate = TestEstimate.from_json(details.get("test_estimate"))
    return [] if estimate is None else estimate.lines()

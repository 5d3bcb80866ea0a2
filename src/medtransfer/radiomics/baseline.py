"""The yardstick: radiomics features -> logistic regression, one model per label.

Median-impute (from the training rows), drop features that are constant in training,
standardise, then one ``LogisticRegression(class_weight="balanced")`` per output column
(one-vs-rest for multi-label and multiclass; binary is one model). The penalty is L2 by
default (lbfgs), L1 or elastic-net with saga.

How C is chosen (``radiomics.selection``):

* ``val``: fit on the training subset at each C of ``radiomics.c_grid``; keep the C with
  the highest validation macro AUROC (ties: the smaller C, i.e. the stronger penalty).
* ``grouped_cv``: k-fold CV on train subset + val, folds grouped by patient and stratified
  by label, k = min(5, the rarer class count, the number of patients); mean fold macro AUROC.
* ``pool_cv`` (default): k-fold CV over the N-pool, the images a user with N labelled images
  would hold: the training subset plus its proportional validation share (the caller passes
  that share as the validation rows; ``baseline_run`` does). Folds grouped by patient and
  stratified by label, k = min(5, the patients of the rarer class); fewer than 2 such patients:
  no CV, C = the grid value nearest 1, with a note. Never the full validation split: a C tuned
  on ~5,000 images and applied to a 50-image fit is not what a user with 50 images could do.
* ``auto`` (the default before issue 23; kept so the runs that used it keep their ids):
  ``grouped_cv`` when some label that has both classes in the training subset has fewer than
  ``AUTO_CV_MIN_CASES`` (20) cases of its rarer class in the training subset or in val, else ``val``.

Whatever the selection, the final model is fit on the training subset alone, so N means
the same on the radiomics curve as on the CNN curves; val only informs C (the CNN uses
val the same way, for early stopping). A label with a single class in training gets a
constant score (its training prevalence) and a note. Everything is deterministic.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..data.splits import fold_strata, pool_folds
from ..errors import DataError
from ..evaluate import macro_auroc, one_vs_rest_targets
from ..kinds import TaskKind, auroc_name

AUTO_CV_MIN_CASES = 20
CV_FOLDS = 5
MAX_ITER = {"lbfgs": 1000, "saga": 5000}


@dataclass
class RadiomicsBaseline:
    """A fitted baseline: ``predict_scores(X)`` gives (N, K) scores like a CNN's sigmoid / softmax."""
    preprocess: Pipeline                     # median imputer -> VarianceThreshold(0) -> StandardScaler
    models: list                             # per output column: a LogisticRegression, or a constant score
    task_kind: TaskKind
    C: float
    selection: str                           # 'pool_cv' | 'val' | 'grouped_cv'
    selection_scores: dict[float, float | None]   # C -> val (or mean CV) macro AUROC
    feature_names: list[str]                 # columns of X as given
    kept_features: list[str]                 # after dropping empty / constant ones
    notes: list[str] = field(default_factory=list)
    chosen_on: dict = field(default_factory=dict)   # what C was chosen on: image / patient counts, folds
    fold_auroc: list[float] | None = None    # pool CV: each fold's macro AUROC at the chosen C (NaN: undefined)
    oof_scores: np.ndarray | None = None     # pool CV: out-of-fold scores at the chosen C, rows as train then val
    refit_on_pool: bool = False              # fitted on train + val rows (cross-validated selection), not train

    def predict_scores(self, X) -> np.ndarray:
        with _quiet():
            return _predict(self.preprocess, self.models, _matrix(X), self.task_kind)

    def coefficients(self, label_names: list[str]) -> pd.DataFrame:
        """Weights per standardised feature (rows) and label (columns); 0 for a constant-score label."""
        cols = {name: (m.coef_[0] if isinstance(m, LogisticRegression) else np.zeros(len(self.kept_features)))
                for name, m in zip(label_names, self.models)}
        return pd.DataFrame(cols, index=pd.Index(self.kept_features, name="feature"))


@dataclass(frozen=True)
class BaselineOptions:
    """What ``fit_radiomics_baseline`` takes besides the tables, task and settings (all optional)."""
    groups_train: object = None              # patient id per training row (None: each row its own patient)
    groups_val: object = None                # patient id per validation row
    seed: int = 0
    n_outputs: int | None = None             # multiclass: the class count (None: the largest index seen + 1)
    label_names: list[str] | None = None     # name the outputs in notes
    cv_folds: int = 5                        # pool_cv: folds (train.cv_folds, so the CNN runs' folds are the same)
    refit_on_pool: bool = False              # pool_cv: fit the chosen C on train + val rows (the whole N-pool),
    #                                          as a cross-validated CNN run trains on its whole pool (runs.cv)


def fit_radiomics_baseline(X_train, y_train, X_val, y_val, task_kind: TaskKind, rcfg, **options):
    """Choose C (see the module docstring), fit on the training rows -> (model, chosen_C, selection_note).

    ``X_*``: (N, F) features (DataFrame or array; NaN/inf are imputed with training medians).
    ``y_*``: labels as the data layer gives them ((N, K) 0/1, or (N,) class indices for multiclass).
    ``options``: the fields of ``BaselineOptions``, as keywords (``groups_train``, ``groups_val``, ``seed``,
    ``n_outputs``, ``label_names``).
    """
    opts = BaselineOptions(**options)
    with _quiet():
        return _fit(_inputs(X_train, y_train, X_val, y_val, task_kind, opts), task_kind, rcfg, opts)


@dataclass(frozen=True)
class _Inputs:
    """The tables as matrices, the labels as one-vs-rest 0/1 columns, and a patient id per row."""
    names: list[str]            # feature names (the columns of X as given)
    Xtr: np.ndarray
    Xva: np.ndarray
    Ytr: np.ndarray
    Yva: np.ndarray
    y_val: object               # the validation labels as given: what the validation AUROC scores
    gtr: np.ndarray
    gva: np.ndarray
    labels: list[str]


def _inputs(X_train, y_train, X_val, y_val, task_kind: TaskKind, opts: BaselineOptions) -> _Inputs:
    names = list(X_train.columns) if isinstance(X_train, pd.DataFrame) else [f"f{i}" for i in range(np.shape(X_train)[1])]
    Xtr, Xva = _matrix(X_train), _matrix(X_val)
    if Xtr.shape[1] != Xva.shape[1]:
        raise DataError(f"radiomics baseline: train has {Xtr.shape[1]} features but val has {Xva.shape[1]}")
    n_outputs = opts.n_outputs
    if n_outputs is None:
        n_outputs = (int(max(np.max(y_train), np.max(y_val))) + 1 if task_kind == TaskKind.MULTICLASS
                     else np.asarray(y_train).reshape(len(Xtr), -1).shape[1])
    Ytr = one_vs_rest_targets(y_train, task_kind, n_outputs)
    Yva = one_vs_rest_targets(y_val, task_kind, n_outputs)
    labels = list(opts.label_names) if opts.label_names else [str(k) for k in range(n_outputs)]
    gtr = _groups(opts.groups_train, len(Xtr), "train")
    gva = _groups(opts.groups_val, len(Xva), "val")
    return _Inputs(names, Xtr, Xva, Ytr, Yva, y_val, gtr, gva, labels)


def _fit(data: _Inputs, task_kind: TaskKind, rcfg, opts: BaselineOptions):
    seed, grid = opts.seed, sorted(float(c) for c in rcfg.c_grid)
    selection, why = _selection(rcfg.selection, data.Ytr, data.Yva, len(np.unique(np.concatenate([data.gtr, data.gva]))),
                                data.labels)
    notes: list[str] = []
    chosen_on = {"train_images": len(data.Xtr), "val_images": len(data.Xva),
                 "patients": int(len(np.unique(np.concatenate([data.gtr, data.gva])))), "folds": None}
    X_pool, Y_pool = np.vstack([data.Xtr, data.Xva]), np.vstack([data.Ytr, data.Yva])
    per_fold: dict[float, tuple[list[float], np.ndarray]] = {}
    if selection in ("grouped_cv", "pool_cv"):
        groups = np.concatenate([data.gtr, data.gva])
        folds = (pool_folds(groups, fold_strata(Y_pool), seed, opts.cv_folds) if selection == "pool_cv"
                 else grouped_folds(groups, fold_strata(Y_pool), seed))
        per_fold = {c: _cv_scores(X_pool, Y_pool, folds, c, task_kind, rcfg, seed) for c in grid} if folds else {}
        scores = {c: _mean_or_none(per_fold[c][0]) if folds else None for c in grid}
        pool = "the N-pool (training subset + its validation share)" if selection == "pool_cv" else "train+val"
        where = (f"{len(folds)}-fold patient-grouped CV on {pool} ({len(X_pool)} images)" if folds else
                 f"no CV on {pool} ({len(X_pool)} images): fewer than 2 patients of the rarer class")
        chosen_on["folds"] = len(folds)
    else:
        scores = _val_scores(data, grid, task_kind, rcfg, seed)
        where = f"validation {auroc_name(task_kind)} ({len(data.Xva)} images)"
    chosen = _best_c(scores)
    if all(v is None for v in scores.values()):
        notes.append(f"{auroc_name(task_kind)} undefined for every C ({where}): C={chosen:g} taken by default")
    refit = bool(opts.refit_on_pool and per_fold and selection == "pool_cv")
    X_fit, Y_fit = (X_pool, Y_pool) if refit else (data.Xtr, data.Ytr)
    prep = _fit_preprocess(X_fit)
    models, fit_notes = _fit_columns(prep.transform(X_fit), Y_fit, chosen, rcfg, seed, data.labels)
    notes.extend(fit_notes)
    names = data.names
    kept = list(prep.get_feature_names_out(names))
    if len(kept) < len(names):
        notes.append(f"{len(names) - len(kept)} of {len(names)} features dropped (empty or constant in training)")
    shown = ", ".join(f"{c:g}: {'n/a' if s is None else f'{s:.3f}'}" for c, s in scores.items())
    note = f"C={chosen:g} chosen by {where}{why}; per C: {shown}" + ("; fitted on the whole pool" if refit else "")
    fold_auroc, oof = per_fold.get(chosen, (None, None))
    model = RadiomicsBaseline(prep, models, task_kind, chosen, selection, scores, names, kept, notes, chosen_on,
                              fold_auroc, oof, refit)
    return model, chosen, note


def _mean_or_none(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _val_scores(data: _Inputs, grid: list[float], task_kind: TaskKind, rcfg, seed: int) -> dict[float, float | None]:
    """C -> validation macro AUROC of the baseline fitted on the training rows."""
    prep = _fit_preprocess(data.Xtr)
    Ztr, Zva = prep.transform(data.Xtr), prep.transform(data.Xva)
    scores = {}
    for c in grid:
        models, _ = _fit_columns(Ztr, data.Ytr, c, rcfg, seed)
        scores[c] = _auroc(data.y_val, _predict(None, models, Zva, task_kind), task_kind)
    return scores


@contextlib.contextmanager
def _quiet():
    """One BLAS thread (threaded BLAS on these small matrices is ~10x slower, worse on a busy machine), and
    no imputer warning for all-empty features: they are dropped and counted in the notes."""
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping features without any observed values")
        yield


def grouped_folds(groups: np.ndarray, strata: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped, label-stratified folds: no patient is ever in two folds."""
    n_groups = len(np.unique(groups))
    _, counts = np.unique(strata, return_counts=True)
    k = max(2, min(CV_FOLDS, n_groups, int(counts.min()) if len(counts) > 1 else CV_FOLDS))
    if n_groups < 2:
        raise DataError(f"radiomics baseline: grouped CV needs at least 2 patients in train+val, got {n_groups}")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has only N members": expected at small N
        warnings.simplefilter("ignore", UserWarning)
        return [(tr, te) for tr, te in cv.split(np.zeros(len(groups)), strata, groups)]


def _selection(mode: str, Ytr: np.ndarray, Yva: np.ndarray, n_patients: int, labels: list[str]) -> tuple[str, str]:
    if mode != "auto":
        return mode, f" (radiomics.selection={mode})"
    scored = [k for k in range(Ytr.shape[1]) if 0 < Ytr[:, k].sum() < len(Ytr)]
    rarest = {k: (_minority(Ytr[:, k]), _minority(Yva[:, k])) for k in scored}
    small = [k for k, n in rarest.items() if min(n) < AUTO_CV_MIN_CASES]
    if small and n_patients >= 2:
        k = min(small, key=lambda j: min(rarest[j]))
        return "grouped_cv", (f" (auto: '{labels[k]}' has {rarest[k][0]} cases of its rarer class in the training "
                              f"subset and {rarest[k][1]} in val, fewer than {AUTO_CV_MIN_CASES})")
    return "val", f" (auto: every label has at least {AUTO_CV_MIN_CASES} cases of each class in train and val)"


def _minority(y: np.ndarray) -> int:
    pos = int(y.sum())
    return min(pos, len(y) - pos)


def _cv_scores(X, Y, folds, c, task_kind, rcfg, seed) -> tuple[list[float], np.ndarray]:
    """Each fold's macro AUROC (NaN where undefined) and the out-of-fold scores, for one C."""
    values, oof = [], np.zeros((len(X), Y.shape[1]), dtype=float)
    for tr, te in folds:
        prep = _fit_preprocess(X[tr])
        models, _ = _fit_columns(prep.transform(X[tr]), Y[tr], c, rcfg, seed)
        scores = _predict(prep, models, X[te], task_kind)
        oof[te] = scores
        value = _auroc(_as_labels(Y[te], task_kind), scores, task_kind)
        values.append(math.nan if value is None else value)
    return values, oof


def _as_labels(Y: np.ndarray, task_kind: TaskKind) -> np.ndarray:
    return Y.argmax(1) if task_kind == TaskKind.MULTICLASS else Y


def _auroc(y, scores, task_kind) -> float | None:
    value = macro_auroc(y, scores, task_kind)
    return None if math.isnan(value) else value


def _best_c(scores: dict[float, float | None]) -> float:
    """Highest score; ties go to the smaller C. No score at all: the grid value nearest C=1."""
    defined = {c: s for c, s in scores.items() if s is not None}
    if not defined:
        return min(scores, key=lambda c: (abs(math.log10(c)), c))
    best = max(defined.values())
    return min(c for c, s in defined.items() if s >= best - 1e-12)


def _fit_preprocess(X: np.ndarray) -> Pipeline:
    prep = Pipeline([("impute", SimpleImputer(strategy="median")), ("constant", VarianceThreshold(0.0)),
                     ("scale", StandardScaler())])
    try:
        return prep.fit(X)
    except ValueError:
        raise DataError(f"radiomics baseline: every feature is empty or constant over the {len(X)} training "
                        "images; nothing to fit") from None


def _fit_columns(Z: np.ndarray, Y: np.ndarray, c: float, rcfg, seed: int,
                 labels: list[str] | None = None) -> tuple[list, list[str]]:
    models, notes = [], []
    for k in range(Y.shape[1]):
        y, name = Y[:, k], labels[k] if labels else str(k)
        if y.min() == y.max():
            models.append(float(y[0]))
            notes.append(f"{name}: only {'positive' if y[0] else 'negative'} cases in the training subset: "
                         f"constant score {y[0]:g}")
            continue
        lr = LogisticRegression(C=c, class_weight="balanced", random_state=seed, **_penalty_kwargs(rcfg))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            lr.fit(Z, y.astype(int))
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            notes.append(f"{name}: the solver did not converge in {lr.max_iter} iterations at C={c:g}")
        models.append(lr)
    return models, notes


_NEW_API = inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated"  # sklearn >= 1.8


def _penalty_kwargs(rcfg) -> dict:
    ratio = {"l2": 0.0, "l1": 1.0, "elasticnet": float(rcfg.l1_ratio)}[rcfg.penalty]
    solver = "lbfgs" if rcfg.penalty == "l2" else "saga"
    kw = {"solver": solver, "max_iter": MAX_ITER[solver]}
    if _NEW_API:
        return kw | {"l1_ratio": ratio}
    return kw | {"penalty": rcfg.penalty} | ({"l1_ratio": ratio} if rcfg.penalty == "elasticnet" else {})


def _predict(prep: Pipeline | None, models: list, X: np.ndarray, task_kind: TaskKind) -> np.ndarray:
    Z = prep.transform(X) if prep is not None else X
    cols = [m.predict_proba(Z)[:, 1] if isinstance(m, LogisticRegression) else np.full(len(Z), m) for m in models]
    scores = np.column_stack(cols) if cols else np.zeros((len(Z), 0))
    if task_kind == TaskKind.MULTICLASS:   # one-vs-rest probabilities normalised per row, like sklearn's OvR
        total = scores.sum(1, keepdims=True)
        scores = np.where(total > 0, scores / np.where(total > 0, total, 1), 1.0 / scores.shape[1])
    return scores


def _matrix(X) -> np.ndarray:
    X = np.array(X, dtype=np.float64, copy=True)
    if X.ndim != 2:
        raise DataError(f"radiomics baseline: features must be a 2-D table, got shape {X.shape}")
    X[~np.isfinite(X)] = np.nan
    return X


def _groups(groups, n: int, split: str) -> np.ndarray:
    if groups is None:
        return np.array([f"{split}:{i}" for i in range(n)], dtype=object)
    groups = np.asarray(groups).astype(str).astype(object)
    if len(groups) != n:
        raise DataError(f"radiomics baseline: {len(groups)} patient ids for {n} {split} images")
    return groups

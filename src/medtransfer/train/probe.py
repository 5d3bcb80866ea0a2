"""The linear probe (``train.strategy: probe``): a logistic regression on a frozen backbone's features, written
into the model's linear head, so a probe is an ordinary model (``predict`` and CAMs load its weights as any other).

C is chosen on the N-pool's patient-grouped, stratified folds (``data.splits.pool_folds``: the folds on which the
CNN runs' cross-validated selection and the radiomics baseline's C are chosen, so a probe is compared with them
fold by fold): for each C of ``PROBE_C_GRID`` every fold is fitted on the other folds and scored; the C with the
best mean fold AUROC wins (ties: the smaller C, the stronger penalty; no folds: C = 1 with a note). Then one fit
on the rows the caller gives (the training subset, or the whole pool when the run cross-validates). Features are
standardised on the fitted rows (scikit-learn's StandardScaler) and the scaler is folded into the head's weights,
so the head takes the backbone's raw features.

Binary and multi-label: one logistic regression per label (one-vs-rest), ``class_weight="balanced"`` (as the CNN's
loss weighs positives by the negatives/positives ratio); a label with one class among the fitted rows gets
weight 0 and a constant score, with a note. Multiclass: one multinomial regression (the head's softmax); a class
absent from the fitted rows gets weight 0 and a logit of ``-CONSTANT_LOGIT``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from ..data.splits import fold_strata, pool_folds
from ..errors import ConfigError, DataError
from ..evaluate.metrics import macro_auroc, one_vs_rest_targets
from ..kinds import TaskKind
from .features import backbone_features

PROBE_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)   # inverse L2 strength on standardised features
DEFAULT_C = 1.0            # when the pool cannot be cross-validated
CONSTANT_LOGIT = 30.0      # a constant score of 1 (sigmoid(30) = 1 - 1e-13) or 0, or an absent class
MAX_ITER = 1000


@dataclass(frozen=True)
class LinearHead:
    """A linear map from backbone features to the model's outputs: ``logits = x @ weight.T + bias``."""
    weight: np.ndarray     # (K, F)
    bias: np.ndarray       # (K,)

    def scores(self, x: np.ndarray, kind: TaskKind) -> np.ndarray:
        """The probabilities the model's head gives: sigmoid per label, softmax over classes (multiclass)."""
        logits = np.asarray(x, dtype=np.float64) @ self.weight.T + self.bias
        if kind == TaskKind.MULTICLASS:
            logits = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            return e / e.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-logits))

    def write_into(self, model: nn.Module) -> None:
        """Copy into the model's final linear layer (``model.head[-1]``), which must have this shape."""
        layer = model.head[-1]
        if tuple(layer.weight.shape) != self.weight.shape:
            raise ConfigError(f"probe: the model's head is {tuple(layer.weight.shape)} but the logistic regression "
                              f"is {self.weight.shape}")
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(self.weight).to(layer.weight.dtype))
            layer.bias.copy_(torch.from_numpy(self.bias).to(layer.bias.dtype))


@dataclass(frozen=True)
class ProbeFit:
    """The fitted probe and how its C was chosen."""
    head: LinearHead
    C: float
    c_scores: dict[float, float | None]     # C -> mean fold AUROC (None: undefined on every fold)
    fold_auroc: list[float]                 # each fold's AUROC at the chosen C (NaN: undefined on that fold)
    oof_scores: np.ndarray | None           # out-of-fold scores at the chosen C, in pool order (None: no folds)
    notes: list[str] = field(default_factory=list)

    @property
    def cv_mean(self) -> float:
        finite = [v for v in self.fold_auroc if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan


def fit_probe_head(x: np.ndarray, labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                   fit_rows: np.ndarray, kind: TaskKind, n_outputs: int, seed: int = 0) -> ProbeFit:
    """Choose C on ``folds`` (positions into ``x``), then fit on ``x[fit_rows]`` (see the module docstring).

    ``x``: (n, F) features of the pool; ``labels``: its labels as the data layer gives them.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(labels):
        raise DataError(f"probe: {len(labels)} labels for features of shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"probe: {int((~np.isfinite(x)).any(axis=1).sum())} images have NaN or infinite features")
    with threadpool_limits(1):   # threaded BLAS on these small matrices is slower, worse on a busy machine
        per_c = {c: _cross_validate(x, labels, folds, c, kind, n_outputs, seed) for c in PROBE_C_GRID} if folds else {}
        c_scores = {c: _mean_or_none(per_c[c][0]) if folds else None for c in PROBE_C_GRID}
        chosen = _best_c(c_scores)
        head, notes = _fit(x[fit_rows], np.asarray(labels)[fit_rows], chosen, kind, n_outputs, seed, named=True)
    if not folds:
        notes.insert(0, f"the N-pool has fewer than 2 patients of its rarest class: no cross-validation, C={chosen:g}")
    elif all(v is None for v in c_scores.values()):
        notes.insert(0, f"the fold AUROC is undefined at every C: C={chosen:g} taken by default")
    fold_auroc, oof = per_c.get(chosen, ([], None))
    return ProbeFit(head, chosen, c_scores, list(fold_auroc), oof, notes)


def probe_images(model: nn.Module, images: np.ndarray, labels: np.ndarray, groups: np.ndarray, kind: TaskKind,
                 seed: int, cv_folds: int, device: torch.device) -> ProbeFit:
    """A probe on in-memory images, for a caller without a run folder or an image cache (``advise``'s search):
    the backbone's features of ``images`` (one pass, not cached), C on their patient-grouped folds (``groups``:
    a patient id per image), the regression fitted on all of them and written into ``model``'s head."""
    n_outputs = int(model.head[-1].out_features)
    fitted = probe_features(backbone_features(model, images, device), labels, groups, kind, (seed, cv_folds), n_outputs)
    fitted.head.write_into(model)
    return fitted


def probe_features(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, kind: TaskKind,
                   folding: tuple[int, int], n_outputs: int) -> ProbeFit:
    """The probe on features already computed: C on their patient-grouped folds (``folding``: seed, folds;
    ``groups``: a patient id per row), the regression fitted on all of them."""
    seed, cv_folds = folding
    strata = fold_strata(one_vs_rest_targets(labels, kind, n_outputs))
    return fit_probe_head(features, labels, pool_folds(np.asarray(groups), strata, seed, cv_folds),
                          np.arange(len(features)), kind, n_outputs, seed)


def _cross_validate(x, labels, folds, c, kind, n_outputs, seed) -> tuple[list[float], np.ndarray]:
    """Each fold's AUROC at ``c`` (NaN where undefined) and the out-of-fold scores."""
    labels = np.asarray(labels)
    values, oof = [], np.zeros((len(x), n_outputs), dtype=np.float64)
    for tr, te in folds:
        head, _ = _fit(x[tr], labels[tr], c, kind, n_outputs, seed)
        oof[te] = head.scores(x[te], kind)
        values.append(macro_auroc(labels[te], oof[te], kind))
    return values, oof


def _fit(x: np.ndarray, labels: np.ndarray, c: float, kind: TaskKind, n_outputs: int, seed: int,
         named: bool = False) -> tuple[LinearHead, list[str]]:
    """Standardise, fit the regression(s) at ``c``, fold the scaler into the weights."""
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if kind == TaskKind.MULTICLASS:
            weight, bias, notes = _multinomial(z, labels, c, n_outputs, seed)
        else:
            weight, bias, notes = _one_vs_rest(z, one_vs_rest_targets(labels, kind, n_outputs), c, seed)
    if named and any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(f"the solver did not converge in {MAX_ITER} iterations at C={c:g}")
    weight = weight / scaler.scale_
    bias = bias - weight @ scaler.mean_
    return LinearHead(weight, bias), notes if named else []


def _regression(c: float, seed: int) -> LogisticRegression:
    # L2 (the default penalty, in the API before and after scikit-learn 1.8 alike) with lbfgs
    return LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER, random_state=seed)


def _one_vs_rest(z: np.ndarray, targets: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    weight, bias, notes = np.zeros((targets.shape[1], z.shape[1])), np.zeros(targets.shape[1]), []
    for k in range(targets.shape[1]):
        y = targets[:, k].astype(int)
        if y.min() == y.max():
            bias[k] = CONSTANT_LOGIT if y[0] else -CONSTANT_LOGIT
            notes.append(f"output {k}: only {'positive' if y[0] else 'negative'} cases among the fitted images: "
                         f"constant score {y[0]}")
            continue
        lr = _regression(c, seed).fit(z, y)
        weight[k], bias[k] = lr.coef_[0], lr.intercept_[0]
    return weight, bias, notes


def _multinomial(z: np.ndarray, labels: np.ndarray, c: float, n_outputs: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    weight, bias = np.zeros((n_outputs, z.shape[1])), np.full(n_outputs, -CONSTANT_LOGIT)
    present = np.unique(y)
    notes = [f"class {k}: no case among the fitted images: score 0" for k in range(n_outputs) if k not in present]
    if len(present) == 1:
        bias[present[0]] = 0.0
        return weight, bias, notes
    lr = _regression(c, seed).fit(z, y)
    if len(lr.classes_) == 2:   # scikit-learn fits one logit for two classes: the first class's is 0
        bias[lr.classes_] = (0.0, lr.intercept_[0])
        weight[lr.classes_[1]] = lr.coef_[0]
    else:
        weight[lr.classes_], bias[lr.classes_] = lr.coef_, lr.intercept_
    return weight, bias, notes


def _mean_or_none(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _best_c(scores: dict[float, float | None]) -> float:
    """The highest mean fold AUROC (ties: the smaller C); none defined: ``DEFAULT_C``."""
    defined = {c: s for c, s in scores.items() if s is not None}
    if not defined:
        return DEFAULT_C
    best = max(defined.values())
    return min(c for c, s in defined.items() if s >= best - 1e-12)

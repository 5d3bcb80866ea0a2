"""A short adaptive search over recipes: successive halving on the training subset and the validation split.

Every arm (an initialisation x fine-tuning strategy x LR policy) trains a short budget of optimiser
steps; the better half by VALIDATION macro AUROC is kept and trained again with twice the steps,
until two arms remain; among those the pick is named by the one-standard-error rule, as a study's
report names its recipe (``choice``: the cheapest within 1 SE of the best, and which are within noise).
Where a run with this config would cross-validate (``runs.cv``: a validation split of fewer than 50
images, or fewer than 10 of a class), so does every trial, on the folds the final run will use: each
arm trains once per fold and is scored by its mean fold AUROC (``cross_validated_data``). The pick's full budget (the config's own
step budget, ``final_steps``, unless the budget shortened it) is then trained once more by the caller
as the final run, which is standard successive halving's last rung of one arm. Arms are ordered by
the candidates' ranking, so ties go to the better-ranked initialisation; a tight budget may stop
the halving earlier or cut a rung (``plan.py``, ``BudgetClock``).

The search cannot read the test split: it receives a ``SearchData``, built by ``search_data_of``
from the training pool and the validation rows only (no test index is ever passed in), and trains
with ``fit`` / ``predict`` in memory. Nothing here writes a file.

Time: the plan (``plan.py``) is sized to what is left of ``--budget`` from a cost model measured by a
short capped run (``timing.probe_cost``); while running, ``run_halving`` asks its ``BudgetClock`` before
every trial whether the trial and what must follow it (the final run) still fit before the deadline, both
rescaled by how long the finished trials took against the cost model. When they do not, it starts no new
trial: the pick comes from the last completed rung (from the trials done, when the first rung is cut), and
``HalvingResult.stopped`` says so.

The CLI imports ``parse_budget`` from here before it checks the user's arguments, so the training layers
(torch, scikit-learn) and pandas are imported where a trial trains, not at module level (``command.py``
has the measurement).
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..config import RunConfig
from ..errors import MedtransferError, reason_of
from ..kinds import Strategy, TaskKind
from .choice import PickChoice, one_se_pick
from .trials import SearchData, SplitArrays, Trial
from .plan import RUNNING_MARGIN, Arm, SearchPlan, recipe_config

CHOICE = "best validation macro AUROC at the last rung (ties: the better-ranked initialisation)"
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def parse_budget(text: str | float | int) -> float:
    """``--budget``: ``10m``, ``90s``, ``1.5h`` or plain seconds -> seconds; a one-line error otherwise."""
    match = _BUDGET.match(str(text))
    if not match:
        raise MedtransferError(f"--budget {text!r}: expected a duration such as 10m, 90s or 1h")
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise MedtransferError(f"--budget {text!r}: must be longer than 0 s")
    return seconds


# ---------------------------------------------------------------------------------------------- inputs
def curve_sizes(n_train: int, minimum: int = 8) -> tuple[int, ...]:
    """The smaller sizes the pick is trained at for the learning curve: N/4 and N/2 (at least ``minimum``)."""
    return tuple(sorted({n for n in (n_train // 4, n_train // 2) if minimum <= n < n_train}))


def search_data_of(data, train_idx: np.ndarray, val_idx: np.ndarray, train_pool: np.ndarray,
                   sizes: tuple[int, ...], seed: int, task_kind: TaskKind, by: str = "patients") -> SearchData:
    """The search's arrays from a PreparedData: rows of ``train_idx`` (the N-subset), ``val_idx`` and, for
    the nested sizes (drawn ``by`` data.subset_by, as the N-subset was), the training pool ``train_pool``.
    No other row of ``data`` is read."""
    from ..data.splits import nested_subset, strata_matrix   # lazy (pandas): see the module docstring

    def rows(idx: np.ndarray) -> SplitArrays:
        return SplitArrays(data.images[idx], np.asarray(data.labels[idx]), np.asarray(data.clusters(idx)))

    train_idx = np.asarray(train_idx, dtype=np.int64)
    pool = np.asarray(train_pool, dtype=np.int64)
    strata = strata_matrix(np.asarray(data.labels[pool]), task_kind)
    nested = {}
    for n in sizes:
        chosen = pool[nested_subset(np.arange(len(pool)), np.asarray(data.patient_ids)[pool], strata, n, seed, by)]
        positions = np.searchsorted(train_idx, chosen)
        if np.any(positions >= len(train_idx)) or np.any(train_idx[np.minimum(positions, len(train_idx) - 1)] != chosen):
            raise MedtransferError(f"the nested {n}-image subset is not inside the {len(train_idx)}-image training "
                                   "subset (the training subset is not train.n_train's nested draw)")
        nested[int(n)] = positions
    return SearchData(rows(train_idx), rows(np.asarray(val_idx, dtype=np.int64)), task_kind,
                      list(data.label_names), nested)


def cross_validated_data(search: SearchData, data, plan) -> SearchData:
    """``search`` turned cross-validated by a ``runs.cv.SelectionPlan`` of kind cv (the rule and the folds a
    run with this config draws, so the final run's folds are the search's): ``train`` and ``val`` become the
    N-pool, whose first rows are the training subset, so ``nested`` positions stay valid."""
    pool = np.asarray(plan.pool, dtype=np.int64)
    arrays = SplitArrays(data.images[pool], np.asarray(data.labels[pool]), np.asarray(data.clusters(pool)))
    folds = tuple((np.asarray(tr), np.asarray(te)) for tr, te in plan.folds)
    return SearchData(arrays, arrays, search.task_kind, search.label_names, search.nested, folds, plan.reason)


# ---------------------------------------------------------------------------------------------- training
def train_arm(data: SearchData, arm: Arm, steps: int, base: RunConfig, device, rung: int = 0,
              positions: np.ndarray | None = None) -> Trial:
    """Fit ``arm`` for ``steps`` optimiser steps on the training images (or the subset at ``positions``) and
    score it on the validation images (cross-validated data: on each fold, out of fold); a run that fails
    (diverges, a weight file that does not fit) is a trial with its one-line error and a NaN AUROC, so the
    search goes on."""
    from ..models import create_model               # lazy (torch, scikit-learn): see the module docstring
    from ..models.init_resolve import resolve_init
    from ..train.device import seed_everything

    started = time.perf_counter()
    cfg = recipe_config(base, arm, steps)
    idx = np.arange(len(data.train)) if positions is None else np.asarray(positions)
    try:
        seed_everything(cfg.train.seed)   # as train_run: the new layers' init comes from the global RNG
        model = create_model(arm.arch, data.n_outputs, init=resolve_init(arm.init), dropout=cfg.model.dropout,
                             log=lambda _line: None)
        if arm.strategy == Strategy.PROBE:
            scored = (_probe_cross_validated if data.folds else _probe_held_out)(data, cfg, arm, model, device, idx)
        else:
            scored = (_cross_validated if data.folds else _held_out)(data, cfg, model, device, idx)
    except (MedtransferError, RuntimeError, ValueError) as err:   # e.g. a source whose input size does not fit
        why = reason_of(err)
        return Trial(arm, rung, int(steps), len(idx), math.nan, time.perf_counter() - started, None, why)
    auroc, scores, folds = scored
    return Trial(arm, rung, int(steps), len(idx), float(auroc), time.perf_counter() - started, scores,
                 fold_auroc=folds)


def _held_out(data: SearchData, cfg: RunConfig, model, device, idx: np.ndarray):
    """(validation AUROC, validation scores, no folds) of ``model`` trained on the training rows ``idx``."""
    from ..evaluate.metrics import macro_auroc
    from ..train import fit, predict

    fit(model, data.train.images[idx], data.train.labels[idx], data.val.images, data.val.labels,
        task_kind=data.task_kind, cfg=cfg.train, device=device, log=lambda _line: None,
        val_metric=lambda yy, ss: macro_auroc(yy, ss, data.task_kind))
    scores = predict(model, data.val.images, data.task_kind, max(cfg.train.batch_size, 128), device)
    return macro_auroc(data.val.labels, scores, data.task_kind), scores, ()


def _cross_validated(data: SearchData, cfg: RunConfig, model, device, idx: np.ndarray):
    """(mean fold AUROC at the best mean round, out-of-fold scores in pool order, fold AUROCs): each fold trains
    on its training positions that are in ``idx`` (a learning-curve size trains on fewer) and is scored on
    all of its held-out positions, so every size is scored on the same pool images."""
    from ..runs.cv import fold_curves

    keep = np.zeros(len(data.train), dtype=bool)
    keep[idx] = True
    folds = [(tr[keep[tr]], te) for tr, te in data.folds]
    curves = fold_curves(cfg, (data.train.images, data.train.labels), folds, model, device, lambda _line: None)
    chosen = curves.chosen_round
    scores = np.empty((len(data.train), *curves.oof_scores(chosen).shape[1:]), dtype=np.float64)
    scores[curves.rows] = curves.oof_scores(chosen)
    fold_auroc = tuple(curves.fold_auroc(chosen))
    mean = float(np.nanmean(fold_auroc)) if np.isfinite(fold_auroc).any() else math.nan
    return mean, scores, fold_auroc


def _probe_held_out(data: SearchData, cfg: RunConfig, arm: Arm, model, device, idx: np.ndarray):
    """A probe trial on a validation split: the logistic regression on the frozen features of the training rows
    ``idx`` (C by their patient-grouped folds, as a probe run chooses it), scored on the validation images."""
    from ..evaluate.metrics import macro_auroc
    from ..train.probe import probe_features

    train = data.train
    fitted = probe_features(_frozen_features(data, arm, model, device, "train")[idx], train.labels[idx],
                            train.clusters[idx], data.task_kind, (cfg.train.seed, cfg.train.cv_folds), data.n_outputs)
    scores = fitted.head.scores(_frozen_features(data, arm, model, device, "val"), data.task_kind)
    return macro_auroc(data.val.labels, scores, data.task_kind), scores, ()


def _probe_cross_validated(data: SearchData, cfg: RunConfig, arm: Arm, model, device, idx: np.ndarray):
    """A probe trial on the pool's folds: one feature pass over the pool, C and the fold scores on the same folds
    the CNN trials train on (each fold fitted on its training positions in ``idx``), out-of-fold scores in pool
    order, as ``_cross_validated`` returns them."""
    from ..train.probe import fit_probe_head

    keep = np.zeros(len(data.train), dtype=bool)
    keep[idx] = True
    folds = [(tr[keep[tr]], te) for tr, te in data.folds]
    fitted = fit_probe_head(_frozen_features(data, arm, model, device, "train"), data.train.labels, folds,
                            np.asarray(idx), data.task_kind, data.n_outputs, cfg.train.seed)
    if fitted.oof_scores is None:
        raise MedtransferError("probe: the pool's folds hold too few patients of a class to score a probe")
    return fitted.cv_mean, np.asarray(fitted.oof_scores, dtype=np.float64), tuple(fitted.fold_auroc)


def _frozen_features(data: SearchData, arm: Arm, model, device, split: str) -> np.ndarray:
    """The arm's backbone features of ``data.train`` or ``data.val`` (the same pool when cross-validated), computed
    by the first probe trial of its initialisation and kept in ``data.features`` for the search's later ones."""
    from ..train.features import backbone_features

    split = "train" if data.folds else split
    key = (arm.init_name, arm.arch, split)
    if key not in data.features:
        data.features[key] = backbone_features(model, (data.train if split == "train" else data.val).images, device)
    return data.features[key]


def _ranked(trials: list[Trial], order: dict[Arm, int]) -> list[Trial]:
    """Best validation AUROC first; failed / undefined last; ties to the arm listed first (better-ranked init)."""
    return sorted(trials, key=lambda t: (-(t.val_auroc if math.isfinite(t.val_auroc) else -math.inf), order[t.arm]))


@dataclass(frozen=True)
class HalvingResult:
    """Every trial by rung, the pick (best of the last completed rung) and why the search stopped early, if it did."""
    rungs: list[list[Trial]]
    pick: Arm
    pick_trial: Trial
    stopped: str | None
    seconds: float
    cost_scale: float = 1.0    # measured seconds / the cost model's seconds over every trial
    choice: PickChoice | None = None   # how the last rung's pick was named (None: built by hand, in tests)
    selection: str = "holdout"         # what the trials were scored by: "holdout" or "cv"
    folds: int = 0
    selection_reason: str = ""

    @property
    def trials(self) -> list[Trial]:
        return [t for rung in self.rungs for t in rung]

    def best_at_rung(self, rung: int, init_name: str) -> Trial | None:
        """The best trial of one initialisation at a rung (None when it was not trained there)."""
        mine = [t for t in self.rungs[rung - 1] if t.arm.init_name == init_name and math.isfinite(t.val_auroc)]
        return max(mine, key=lambda t: t.val_auroc) if mine else None

    @property
    def seconds_rounded(self) -> float:
        """The search's seconds as advice.json records it (and advice.html shows it): to 0.1 s."""
        return round(self.seconds, 1)

    def to_json(self) -> dict:
        """advice.json's "search" block: every trial by rung, and how the pick was chosen."""
        return {"test_split_used": False, "stopped": self.stopped, "seconds": self.seconds_rounded,
                "cost_scale": round(self.cost_scale, 3),
                "rungs": [{"rung": r, "steps": rung[0].steps if rung else None,
                           "trials": [t.to_json() for t in rung]} for r, rung in enumerate(self.rungs, 1)],
                "selection": self.selection, "folds": self.folds or None, "selection_reason": self.selection_reason,
                "choice": self.choice.rule if self.choice else CHOICE,
                "pick_choice": self.choice.to_json() if self.choice else None}


@dataclass
class BudgetClock:
    """The running search's view of its deadline: what must still follow the search (``reserve_seconds``,
    in the cost model's seconds) and how far off the cost model has been (``scale``: the seconds the
    finished trials took over the seconds the model gave them). ``now`` is injectable for tests."""
    deadline: float | None                        # a ``now()`` value; None: no deadline
    reserve_seconds: float = 0.0
    now: Callable[[], float] = time.monotonic
    margin: float = RUNNING_MARGIN
    spent: float = 0.0
    expected: float = 0.0

    @property
    def scale(self) -> float:
        return self.spent / self.expected if self.expected > 0 else 1.0

    def record(self, seconds: float, estimate: float) -> None:
        self.spent += seconds
        self.expected += estimate

    def seconds_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - self.now()

    def holds(self, estimate: float) -> bool:
        """Whether work of ``estimate`` model seconds, then the reserve, ends by the deadline at the measured
        scale, with ``margin`` to spare."""
        return self.margin * self.scale * (estimate + self.reserve_seconds) <= self.seconds_left()


def run_halving(data: SearchData, plan: SearchPlan, base: RunConfig, device, *,
                log: Callable[[str], None] = print, clock: BudgetClock | None = None) -> HalvingResult:
    """Successive halving of ``plan.arms`` over ``plan.rung_steps`` on ``data`` (train and validation only).

    Before every trial but the first, ``clock`` (default: no deadline) says whether it still fits; when it
    does not, no further trial starts and ``stopped`` says where the search stopped and what the pick is.
    """
    clock = clock or BudgetClock(None)
    started = clock.now()
    order = {arm: i for i, arm in enumerate(plan.arms)}
    counts = plan.rung_counts()
    alive = first_rung_order(plan.arms, base)
    if base is not None and base.train.epochs != plan.trial_rounds:   # the plan validates its trials less often
        base = base.model_copy(deep=True)
        base.train.epochs = plan.trial_rounds
    rungs: list[list[Trial]] = []
    probes: dict[Arm, Trial] = {}
    stopped = None
    for r, steps in enumerate(plan.rung_steps, start=1):
        trials, stopped = _train_rung(data, (plan, base, device), alive, (r, steps), clock, log, probes)
        if stopped and r > 1:
            if trials:    # a cut rung: shown, but its trials are not compared with the ones it never trained
                rungs.append([_marked(t, False) for t in trials])
            break
        keep = 1 if (r == len(counts) or stopped) else math.ceil(len(trials) / 2)
        ranked = _ranked(trials, order)
        rungs.append([_marked(t, t in ranked[:keep]) for t in trials])
        alive = [t.arm for t in ranked[:keep]]
        if stopped:       # rung 1 cut: the pick is the best of the trials it has
            break
    last = r - 1 if (stopped and r > 1) else len(rungs)   # the last completed rung chooses
    final = rungs[last - 1]
    if not any(math.isfinite(t.val_auroc) for t in final):
        raise MedtransferError(f"every recipe of the last rung failed or had an undefined validation AUROC "
                               f"(e.g. {final[0].arm.label}: {final[0].error or 'AUROC undefined'})")
    choice = one_se_pick(data, final, order)
    rungs[last - 1] = [_marked(t, t is choice.pick) for t in final]
    pick_trial = next(t for t in rungs[last - 1] if t.kept)
    return HalvingResult(rungs, pick_trial.arm, pick_trial, stopped, clock.now() - started, clock.scale, choice,
                         data.selection, len(data.folds), data.selection_reason)


def first_rung_order(arms, base: RunConfig | None) -> list[Arm]:
    """The order rung 1 trains in: the probes (a forward pass each, and at small N often the best recipe), then
    every initialisation's arm with the config's own strategy and LR policy (in ranking order), then the rest.
    When the clock cuts the first rung, the initialisations have been compared on the user's recipe and the
    probe, and at worst the pick is one of them. Ties are still broken by the plan's order (``_ranked``), not
    by this one."""
    own = None if base is None else (base.train.strategy, base.train.lr_policy)
    return sorted(arms, key=lambda a: (a.strategy != Strategy.PROBE, own is not None and (a.strategy, a.lr_policy) != own))


def _train_rung(data: SearchData, how: tuple[SearchPlan, RunConfig, object], alive: list[Arm],
                rung: tuple[int, int], clock: BudgetClock, log: Callable[[str], None],
                probes: dict[Arm, Trial]) -> tuple[list[Trial], str | None]:
    """One rung's trials, in ranking order, while ``clock`` holds each (the first trial of the search always
    runs); (the trials, why the rung stopped early or None). A probe arm trains once: ``probes`` keeps its
    first trial, which later rungs carry (0 s), since more steps would fit the same regression."""
    (plan, base, device), (r, steps) = how, rung
    n_rungs = len(plan.rung_steps)
    trials: list[Trial] = []
    for arm in alive:
        estimate = plan.cost.arm_seconds(arm, steps, plan.trial_rounds)
        if (r > 1 or trials) and not clock.holds(estimate):
            stopped = _stop_note(r, len(trials), len(alive), steps, clock)
            log(stopped)
            return trials, stopped
        carried = arm in probes
        if carried:   # a probe takes no steps: its first trial stands
            trial = dataclasses.replace(probes[arm], rung=r, steps=int(steps), seconds=0.0, kept=False)
        else:
            trial = train_arm(data, arm, steps, base, device, rung=r)
            if arm.strategy == Strategy.PROBE:
                probes[arm] = trial   # not recorded in the clock: a second's feature pass says nothing of step costs
            else:
                clock.record(trial.seconds, estimate)
        trials.append(trial)
        shown = f"{trial.val_auroc:.4f}" if math.isfinite(trial.val_auroc) else f"failed ({trial.error})"
        when = f"carried from rung {probes[arm].rung}" if carried else f"{trial.seconds:.1f} s"
        log(f"rung {r}/{n_rungs} ({steps} steps): {arm.label}: {data.score_name} {shown} ({when})")
    return trials, None


def _stop_note(r: int, done: int, arms: int, steps: int, clock: BudgetClock) -> str:
    """Why the search stopped where it did, and where the pick comes from."""
    left = f"{max(clock.seconds_left(), 0.0):.0f} s left, runs taking x{clock.scale:.2f} the estimate"
    if done == 0:
        return (f"stopped before rung {r} ({arms} arms x {steps} steps) to stay within the budget ({left}): "
                f"the pick is the best of rung {r - 1}")
    if r == 1:
        return (f"stopped during rung 1 after {done} of {arms} arms to stay within the budget ({left}): the pick "
                f"is the best of those {done}")
    return (f"stopped during rung {r} after {done} of {arms} arms to stay within the budget ({left}): the pick is "
            f"the best of rung {r - 1} (rung {r}'s {done} trial(s) are shown, not compared)")


def _marked(t: Trial, kept: bool) -> Trial:
    return dataclasses.replace(t, kept=kept)


def run_sizes(data: SearchData, arm: Arm, steps: int, base: RunConfig, device, *,
              log: Callable[[str], None] = print, deadline: float | None = None,
              seconds_per_run: float = 0.0) -> tuple[list[Trial], list[int]]:
    """The pick at each nested smaller size in ``data.nested`` (same steps, same validation images), for
    the learning curve, and the sizes skipped: those whose run (about ``seconds_per_run``) would end after
    ``deadline`` (a ``time.monotonic()`` value)."""
    trials, skipped = [], []
    for n, positions in sorted(data.nested.items()):
        if deadline is not None and time.monotonic() + seconds_per_run > deadline:
            skipped.append(int(n))
            continue
        trial = train_arm(data, arm, steps, base, device, rung=0, positions=positions)
        trials.append(trial)
        shown = f"{trial.val_auroc:.4f}" if math.isfinite(trial.val_auroc) else f"failed ({trial.error})"
        effort = "a probe" if arm.strategy == Strategy.PROBE else f"{steps} steps"
        log(f"learning curve: {arm.label} at N={n} ({effort}): {data.score_name} {shown} ({trial.seconds:.1f} s)")
    return trials, skipped

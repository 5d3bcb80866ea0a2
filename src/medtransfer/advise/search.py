"""A short adaptive search over recipes: successive halving on the training subset and the validation split.

Every arm (an initialisation x fine-tuning strategy x LR policy) trains a short budget of optimiser
steps; the better half by VALIDATION macro AUROC is kept and trained again with twice the steps,
until two arms remain; the better of those is the pick. The pick's full budget (the config's own
step budget, ``final_steps``) is then trained once more by the caller as the final run, which is
standard successive halving's last rung of one arm. Arms are ordered by the candidates' ranking,
so ties go to the better-ranked initialisation.

The search cannot read the test split: it receives a ``SearchData``, built by ``search_data_of``
from the training pool and the validation rows only (no test index is ever passed in), and trains
with ``fit`` / ``predict`` in memory. Nothing here writes a file.

Time: ``plan_search`` sizes the search to ``--budget`` from a cost model measured by two short
training runs (``measure_cost``); while running, ``run_halving`` recalibrates on the measured
seconds and stops starting rungs that would overrun the deadline (the pick then comes from the
last completed rung, and says so).

The CLI imports ``parse_budget`` from here before it checks the user's arguments, so the training layers
(torch, scikit-learn) and pandas are imported where a trial trains, not at module level (``command.py``
has the measurement).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import RunConfig
from ..errors import MedtransferError, reason_of
from ..kinds import Init, InitKind, Strategy, TaskKind
from .candidates import REFERENCE_NAMES

MIN_RUNG_STEPS = 5            # a rung shorter than this says nothing about a recipe
DEFAULT_STRATEGIES = tuple(Strategy)
DEFAULT_LR_POLICIES = ("constant", "one_cycle")
STRATEGY_COST = {Strategy.FROZEN: 0.35, Strategy.GRADUAL: 0.7, Strategy.FULL: 1.0}   # step cost relative to full fine-tuning
CHOICE = "best validation macro AUROC at the last rung (ties: the better-ranked initialisation)"
GRACE = 1.15                  # a rung may start when the projected end is within this multiple of the budget
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
@dataclass(frozen=True)
class SplitArrays:
    """One split's uint8 images (n, S, S), labels, and cluster ids (patients; images when there are none)."""
    images: np.ndarray
    labels: np.ndarray
    clusters: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class SearchData:
    """Everything the search may see: the user's N training images and the validation split, no test.

    ``nested`` maps a smaller training-set size n to the positions (into ``train``) of the nested
    n-subset a run with ``train.n_train=n`` would draw, for the learning-curve sizes.
    """
    train: SplitArrays
    val: SplitArrays
    task_kind: TaskKind
    label_names: list[str]
    nested: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def n_outputs(self) -> int:
        return len(self.label_names)


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
        clusters = data.patient_ids[idx] if data.has_patient_ids else np.asarray(data.image_ids)[idx]
        return SplitArrays(data.images[idx], np.asarray(data.labels[idx]), np.asarray(clusters))

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


# ---------------------------------------------------------------------------------------------- arms
@dataclass(frozen=True)
class Arm:
    """One recipe the search can train: an initialisation (by candidate name) x strategy x LR policy."""
    init_name: str
    init: Init
    arch: str
    strategy: Strategy
    lr_policy: str

    @property
    def label(self) -> str:
        return f"{self.init_name} / {self.strategy} / {self.lr_policy}"

    def to_json(self) -> dict:
        return {"init_name": self.init_name, "init": str(self.init), "arch": self.arch, "strategy": self.strategy,
                "lr_policy": self.lr_policy}


@dataclass(frozen=True)
class SearchSpace:
    strategies: tuple[Strategy, ...] = DEFAULT_STRATEGIES
    lr_policies: tuple[str, ...] = DEFAULT_LR_POLICIES

    def arms(self, inits: list[tuple[str, Init, str]]) -> list[Arm]:
        """Arms of ``inits`` ((name, init, arch), in ranking order); scratch is never frozen (a random backbone)."""
        return [Arm(name, init, arch, strategy, policy)
                for name, init, arch in inits for strategy in self.strategies for policy in self.lr_policies
                if not (strategy == Strategy.FROZEN and init.kind is InitKind.SCRATCH)]


def recipe_config(base: RunConfig, arm: Arm, steps: int) -> RunConfig:
    """``base`` with the arm's arch, init, strategy and LR policy and exactly ``steps`` optimiser steps."""
    cfg = base.model_copy(deep=True)
    cfg.model.arch = arm.arch
    cfg.model.init = arm.init
    cfg.train.strategy = arm.strategy
    cfg.train.lr_policy = arm.lr_policy
    cfg.train.steps = int(steps)
    return cfg


# ---------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class CostModel:
    """Seconds a run is expected to take: a fixed part (building the model, copying the arrays, the
    validation rounds) plus its optimiser steps (full fine-tuning; other strategies scaled by STRATEGY_COST)."""
    step_seconds: float
    fixed_seconds: float = 0.0
    final_extra_seconds: float = 0.0   # the final run's test pass, bootstrap and files

    def run_seconds(self, strategy_cost: float, steps: int) -> float:
        return self.fixed_seconds + strategy_cost * self.step_seconds * steps

    def to_json(self) -> dict:
        return {"step_seconds": round(self.step_seconds, 4), "fixed_seconds": round(self.fixed_seconds, 3),
                "final_extra_seconds": round(self.final_extra_seconds, 3)}


def measure_cost(data: SearchData, arm: Arm, base: RunConfig, device, final_extra_seconds: float = 0.0
                 ) -> CostModel:
    """Time ``arm`` at one and at four optimiser steps per validation round (after one untimed warm-up run):
    the difference is the cost of the extra steps, the rest the fixed cost of a run."""
    rounds = base.train.epochs
    train_arm(data, arm, rounds, base, device)   # warm-up: first-call costs would shrink the difference
    short = train_arm(data, arm, rounds, base, device)
    longer = train_arm(data, arm, 4 * rounds, base, device)
    step = max((longer.seconds - short.seconds) / (3 * rounds), 1e-4)
    return CostModel(step, max(short.seconds - rounds * step, 0.0), final_extra_seconds)


@dataclass(frozen=True)
class SearchPlan:
    """The arms, each rung's step budget (the choice is made after the last rung), the final budget and
    the learning-curve sizes, with the plan's estimated seconds (search + final run + size runs)."""
    arms: tuple[Arm, ...]
    rung_steps: tuple[int, ...]
    final_steps: int
    rounds: int                 # validation rounds per run (train.epochs)
    sizes: tuple[int, ...]
    estimated_seconds: float
    cost: CostModel
    notes: tuple[str, ...] = ()

    def rung_counts(self) -> list[int]:
        return rung_counts(len(self.arms))

    @property
    def estimated_seconds_rounded(self) -> float:
        """The estimate as advice.json records it (and advice.html shows it): to 0.1 s."""
        return round(self.estimated_seconds, 1)

    def to_json(self) -> dict:
        return {"arms": [a.label for a in self.arms], "rung_counts": self.rung_counts(),
                "rung_steps": list(self.rung_steps), "final_steps": self.final_steps, "rounds": self.rounds,
                "learning_curve_sizes": list(self.sizes), "estimated_seconds": self.estimated_seconds_rounded,
                "cost_model": self.cost.to_json(), "notes": list(self.notes)}


def rung_counts(n_arms: int) -> list[int]:
    """Arms per rung: halving (rounded up) until two or fewer remain; the last rung chooses the pick."""
    counts = [max(int(n_arms), 1)]
    while counts[-1] > 2:
        counts.append(math.ceil(counts[-1] / 2))
    return counts


def rung_steps_for(n_rungs: int, final_steps: int, rounds: int = 1) -> tuple[int, ...]:
    """Doubling step budgets ending at half the final budget (the final run is the last, one-arm rung).

    Each is a whole number of validation rounds (a fit rounds its step budget up to one), so the
    steps a rung reports are the steps it trains."""
    def whole_rounds(steps: int) -> int:
        return rounds * math.ceil(steps / rounds)
    return tuple(min(final_steps, whole_rounds(max(MIN_RUNG_STEPS, math.ceil(final_steps / 2 ** (n_rungs - r)))))
                 for r in range(n_rungs))


def estimate_seconds(arms: list[Arm], rung_steps: tuple[int, ...], final_steps: int, n_sizes: int,
                     cost: CostModel) -> float:
    """The plan's seconds: every rung (at the arms' mean strategy cost), the final run and the size runs."""
    mean_cost = float(np.mean([STRATEGY_COST.get(a.strategy, 1.0) for a in arms])) if arms else 1.0
    counts = rung_counts(len(arms))
    search = sum(c * cost.run_seconds(mean_cost, s) for c, s in zip(counts, rung_steps))
    final = cost.run_seconds(mean_cost, final_steps) + cost.final_extra_seconds
    return search + final + n_sizes * cost.run_seconds(mean_cost, final_steps)


def plan_search(inits: list[tuple[str, Init, str]], space: SearchSpace, final_steps: int, rounds: int,
                sizes: tuple[int, ...], cost: CostModel, budget_seconds: float) -> SearchPlan:
    """The largest plan whose estimate fits ``budget_seconds`` (what is left of --budget when the search is planned).

    ``inits`` are (name, init, arch) in ranking order. Scratch and ImageNet (the references the gains
    are measured against) are always in; of the other candidates the top-ranked are admitted, as many
    as fit. When even one source does not fit, the learning-curve sizes are dropped (N/2, then N/4);
    when nothing fits, the smallest plan runs and a note says by how much it exceeds the budget.
    """
    refs = [i for i in inits if i[0] in REFERENCE_NAMES]
    others = [i for i in inits if i[0] not in REFERENCE_NAMES]
    order = {i[0]: k for k, i in enumerate(inits)}
    size_options = [sizes[:k] for k in range(len(sizes), -1, -1)]
    fewest = min(1, len(others))
    tried = []
    for size_option in size_options:
        for k in range(len(others), fewest - 1, -1):
            chosen = sorted(refs + others[:k], key=lambda i: order[i[0]])
            arms = space.arms(chosen)
            steps = rung_steps_for(len(rung_counts(len(arms))), final_steps, rounds)
            seconds = estimate_seconds(arms, steps, final_steps, len(size_option), cost)
            tried.append((arms, steps, size_option, seconds, k))
            if seconds <= budget_seconds:
                return SearchPlan(tuple(arms), steps, final_steps, rounds, size_option, seconds, cost,
                                  tuple(_plan_notes(others, k, sizes, size_option)))
    arms, steps, size_option, seconds, k = tried[-1]
    notes = _plan_notes(others, k, sizes, size_option)
    notes.append(f"the smallest plan is estimated at {seconds:.0f} s, more than the {budget_seconds:.0f} s left of "
                 "the --budget after ranking and timing: it runs anyway (a larger --budget searches more)")
    return SearchPlan(tuple(arms), steps, final_steps, rounds, size_option, seconds, cost, tuple(notes))


def _plan_notes(others, k: int, sizes, size_option) -> list[str]:
    notes = []
    if k < len(others):
        left = ", ".join(name for name, _, _ in others[k:])
        notes.append(f"budget: only the top {k} ranked source(s) searched; not searched: {left}")
    if len(size_option) < len(sizes):
        notes.append(f"budget: learning-curve size(s) {', '.join(map(str, sizes[len(size_option):]))} not trained")
    return notes


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True, eq=False)
class Trial:
    """One arm trained at one rung (or one learning-curve size): its validation AUROC and scores."""
    arm: Arm
    rung: int                 # 1-based; 0 for a learning-curve size run
    steps: int
    n_train: int
    val_auroc: float          # NaN when undefined or the run failed
    seconds: float
    val_scores: np.ndarray | None = None
    error: str | None = None
    kept: bool = False        # promoted to the next rung, or the pick at the last

    @property
    def val_auroc_or_none(self) -> float | None:
        """The validation AUROC, None when it is undefined (as advice.json records it)."""
        return None if not math.isfinite(self.val_auroc) else self.val_auroc

    @property
    def seconds_rounded(self) -> float:
        """The trial's seconds as advice.json records it (and advice.html shows it): to 0.01 s."""
        return round(self.seconds, 2)

    def to_json(self) -> dict:
        return {"arm": self.arm.label, **self.arm.to_json(), "rung": self.rung, "steps": self.steps,
                "n_train": self.n_train, "val_auroc": self.val_auroc_or_none,
                "seconds": self.seconds_rounded, "kept": self.kept, "error": self.error}


def train_arm(data: SearchData, arm: Arm, steps: int, base: RunConfig, device, rung: int = 0,
              positions: np.ndarray | None = None) -> Trial:
    """Fit ``arm`` for ``steps`` optimiser steps on the training images (or the subset at ``positions``) and
    score it on the validation images; a run that fails (diverges, a weight file that does not fit) is a
    trial with its one-line error and a NaN AUROC, so the search goes on."""
    from ..evaluate.metrics import macro_auroc      # lazy (torch, scikit-learn): see the module docstring
    from ..models import create_model
    from ..models.init_resolve import resolve_init
    from ..train import fit, predict
    from ..train.device import seed_everything

    started = time.perf_counter()
    cfg = recipe_config(base, arm, steps)
    idx = np.arange(len(data.train)) if positions is None else np.asarray(positions)
    x, y = data.train.images[idx], data.train.labels[idx]
    quiet = lambda _line: None  # noqa: E731
    try:
        seed_everything(cfg.train.seed)   # as train_run: the new layers' init comes from the global RNG
        model = create_model(arm.arch, data.n_outputs, init=resolve_init(arm.init), dropout=cfg.model.dropout,
                             log=quiet)
        fit(model, x, y, data.val.images, data.val.labels, task_kind=data.task_kind, cfg=cfg.train, device=device,
            log=quiet, val_metric=lambda yy, ss: macro_auroc(yy, ss, data.task_kind))
        scores = predict(model, data.val.images, data.task_kind, max(cfg.train.batch_size, 128), device)
        auroc = macro_auroc(data.val.labels, scores, data.task_kind)
    except (MedtransferError, RuntimeError, ValueError) as err:   # e.g. a source whose input size does not fit
        why = reason_of(err)
        return Trial(arm, rung, int(steps), len(idx), math.nan, time.perf_counter() - started, None, why)
    return Trial(arm, rung, int(steps), len(idx), float(auroc), time.perf_counter() - started, scores)


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
                "choice": CHOICE}


def run_halving(data: SearchData, plan: SearchPlan, base: RunConfig, device, *,
                log: Callable[[str], None] = print, deadline: float | None = None,
                reserve_seconds: float = 0.0) -> HalvingResult:
    """Successive halving of ``plan.arms`` over ``plan.rung_steps`` on ``data`` (train and validation only).

    ``deadline`` (a ``time.monotonic()`` value): a rung after the first starts only when its projected
    end, plus ``reserve_seconds`` for what must follow (the final run, in the cost model's seconds),
    stays within the deadline x GRACE; both are the plan's cost model scaled by the seconds the finished
    trials actually took (``HalvingResult.cost_scale``).
    """
    started = time.monotonic()
    order = {arm: i for i, arm in enumerate(plan.arms)}
    counts = plan.rung_counts()
    alive = list(plan.arms)
    rungs: list[list[Trial]] = []
    stopped = None
    spent = expected = 0.0
    for r, (count, steps) in enumerate(zip(counts, plan.rung_steps), start=1):
        if rungs and deadline is not None:
            scale = spent / expected if expected > 0 else 1.0
            projected = scale * sum(plan.cost.run_seconds(STRATEGY_COST.get(a.strategy, 1.0), steps) for a in alive)
            left = deadline - time.monotonic() - scale * reserve_seconds
            if projected > left * GRACE:
                stopped = (f"stopped before rung {r} ({len(alive)} arms x {steps} steps, about {projected:.0f} s) "
                           f"to stay within the budget: the pick is the best of rung {r - 1}")
                log(stopped)
                break
        trials = []
        for arm in alive:
            trial = train_arm(data, arm, steps, base, device, rung=r)
            trials.append(trial)
            spent += trial.seconds
            expected += plan.cost.run_seconds(STRATEGY_COST.get(arm.strategy, 1.0), steps)
            shown = f"{trial.val_auroc:.4f}" if math.isfinite(trial.val_auroc) else f"failed ({trial.error})"
            log(f"rung {r}/{len(counts)} ({steps} steps): {arm.label}: val AUROC {shown} ({trial.seconds:.1f} s)")
        keep = math.ceil(len(trials) / 2) if r < len(counts) else 1
        kept = {id(t) for t in _ranked(trials, order)[:keep]}
        rungs.append([_marked(t, id(t) in kept) for t in trials])
        alive = [t.arm for t in _ranked(trials, order)[:keep]]
    pick_trial = _ranked(rungs[-1], order)[0]
    if stopped:   # the pick is the one kept arm of the last completed rung
        rungs[-1] = [_marked(t, t is pick_trial) for t in rungs[-1]]
        pick_trial = next(t for t in rungs[-1] if t.kept)
    if not math.isfinite(pick_trial.val_auroc):
        raise MedtransferError(f"every recipe of the last rung failed or had an undefined validation AUROC "
                               f"(e.g. {pick_trial.arm.label}: {pick_trial.error or 'AUROC undefined'})")
    return HalvingResult(rungs, pick_trial.arm, pick_trial, stopped, time.monotonic() - started,
                         spent / expected if expected > 0 else 1.0)


def _marked(t: Trial, kept: bool) -> Trial:
    return Trial(t.arm, t.rung, t.steps, t.n_train, t.val_auroc, t.seconds, t.val_scores, t.error, kept)


def run_sizes(data: SearchData, arm: Arm, steps: int, base: RunConfig, device, *,
              log: Callable[[str], None] = print, deadline: float | None = None,
              seconds_per_run: float = 0.0) -> tuple[list[Trial], list[str]]:
    """The pick at each nested smaller size in ``data.nested`` (same steps, same validation images), for
    the learning curve; a size whose run (about ``seconds_per_run``) would end after ``deadline`` (a
    ``time.monotonic()`` value) is skipped and named in the notes."""
    trials, notes = [], []
    for n, positions in sorted(data.nested.items()):
        if deadline is not None and time.monotonic() + seconds_per_run > deadline:
            notes.append(f"learning-curve size N={n} skipped: the budget is spent")
            continue
        trial = train_arm(data, arm, steps, base, device, rung=0, positions=positions)
        trials.append(trial)
        shown = f"{trial.val_auroc:.4f}" if math.isfinite(trial.val_auroc) else f"failed ({trial.error})"
        log(f"learning curve: {arm.label} at N={n} ({steps} steps): val AUROC {shown} ({trial.seconds:.1f} s)")
    return trials, notes

"""The search's plan, sized to what is left of ``--budget``: which recipes, how many rungs of how many steps,
which learning-curve sizes, and how long the final run trains.

A plan's seconds are estimated from a ``CostModel`` (``timing.probe_cost`` measures one on the machine at
hand). ``plan_search`` tries plans from the largest down (``plan_shapes``) and takes the first whose
estimate times ``LOAD_MARGIN`` fits; in order it gives up

1. lower-ranked sources, then the learning-curve sizes (N/2, then N/4), as before;
2. validation rounds of the search's trials (half, a quarter, at least ``MIN_SEARCH_ROUNDS``; the final run
   keeps the config's): a trial of 12 steps validated 12 times spends two thirds of its time validating
   (ResNet-18 at 32 px on 524 validation images, measured on a loaded CPU), and every arm of a rung is
   validated alike, so the comparison stays fair;
3. rungs of successive halving (halving stops earlier; the pick is the best of the last rung trained);
4. steps per rung (down to ``MIN_RUNG_STEPS`` in whole validation rounds);
5. recipes per initialisation (the config's LR policy only, then the config's strategy only);
6. validation rounds of the final run, as of the trials (the recipe then says ``train.epochs``): 13
   validation passes were 24 s of a 56 s final run of 36 steps on a loaded CPU;
7. steps of the final run (half, then a quarter of the config's).

Scratch and ImageNet (the references the gains are measured against) and the top-ranked source stay in
every plan. Once the search is over, ``final_steps_within`` sets the final run's steps on the seconds
actually left (fewer when the search ran slow, back up to the config's when it left room). When even the smallest plan does not fit, it comes back with ``fits=False`` and the caller
refuses the budget, naming the smallest one that would do (``needed_budget``). This module is torch-free.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..config import RunConfig, TrainConfig
from ..kinds import Init, InitKind, Strategy
from .candidates import REFERENCE_NAMES

MIN_RUNG_STEPS = 5            # a rung shorter than this says nothing about a recipe
# The probe is searched by default (issue 25): a logistic regression on frozen features costs one forward pass, and
# at small N it can beat every fine-tuned arm; it is one arm per pretrained initialisation, trained once.
DEFAULT_STRATEGIES = (Strategy.PROBE, Strategy.FROZEN, Strategy.FULL, Strategy.GRADUAL)
DEFAULT_LR_POLICIES = ("constant", "one_cycle")
# step cost relative to full fine-tuning; a probe takes no step (its cost is one forward pass over its images)
STRATEGY_COST = {Strategy.PROBE: 0.0, Strategy.FROZEN: 0.35, Strategy.GRADUAL: 0.7, Strategy.FULL: 1.0}
NO_RANDOM_BACKBONE = (Strategy.FROZEN, Strategy.PROBE)   # a scratch start would keep its random backbone
# A plan is taken only when its estimate x LOAD_MARGIN fits the seconds left: the cost model is measured in a
# few seconds, and the machine's other work may take more of it later (the running search rescales its
# estimates by what its trials measured, but the plan decides how much work there is to rescale).
LOAD_MARGIN = 1.25
# While running, the search and the final run's length are decided on the cost model rescaled by what the
# finished trials measured; the final run cannot be cut once started, and the load may rise again while it
# trains, so what must follow a decision is kept with this much room.
RUNNING_MARGIN = 1.1
FINAL_SHORTENINGS = (2, 4)    # a plan that does not fit otherwise trains the final run 1/2, then 1/4 as long
MAX_SHIFT = 30                # enough halvings of every rung's steps to reach the MIN_RUNG_STEPS floor
MIN_SEARCH_ROUNDS = 3         # a gradual trial needs a round per stage (head, +late, all)


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
        """``init / strategy / LR policy``; a probe has no LR policy (it takes no optimiser step)."""
        if self.strategy == Strategy.PROBE:
            return f"{self.init_name} / {self.strategy}"
        return f"{self.init_name} / {self.strategy} / {self.lr_policy}"

    def effort(self, steps: int) -> str:
        """What training this arm for ``steps`` means, in the log's and the page's words."""
        if self.strategy == Strategy.PROBE:
            return "a logistic regression on frozen features, no optimiser steps"
        return f"{steps} optimiser steps"

    def to_json(self) -> dict:
        return {"init_name": self.init_name, "init": str(self.init), "arch": self.arch, "strategy": self.strategy,
                "lr_policy": self.lr_policy}


@dataclass(frozen=True)
class SearchSpace:
    strategies: tuple[Strategy, ...] = DEFAULT_STRATEGIES
    lr_policies: tuple[str, ...] = DEFAULT_LR_POLICIES

    def arms(self, inits: list[tuple[str, Init, str]]) -> list[Arm]:
        """Arms of ``inits`` ((name, init, arch), in ranking order); scratch is never frozen or probed (a random
        backbone), and a probe, which has no LR policy, is one arm per initialisation (under the first policy)."""
        return [Arm(name, init, arch, strategy, policy)
                for name, init, arch in inits for strategy in self.strategies for policy in self.lr_policies
                if not (strategy in NO_RANDOM_BACKBONE and init.kind is InitKind.SCRATCH)
                and not (strategy == Strategy.PROBE and policy != self.lr_policies[0])]

    def narrowed(self, strategy: Strategy, policy: str) -> list[SearchSpace]:
        """The smaller spaces a tight budget falls back to, each inside the one before: one LR policy (the
        config's, when searched), then also one strategy (the config's when searched and neither frozen nor probe,
        since a scratch start can be neither; else full fine-tuning or the first searched), with the probe beside
        it when searched (a forward pass, nearly free)."""
        kept_policy = policy if policy in self.lr_policies else self.lr_policies[0]
        usable = [s for s in self.strategies if s not in NO_RANDOM_BACKBONE] or list(self.strategies)
        kept_strategy = strategy if strategy in usable else (Strategy.FULL if Strategy.FULL in usable else usable[0])
        probe = (Strategy.PROBE,) if Strategy.PROBE in self.strategies and kept_strategy != Strategy.PROBE else ()
        spaces = [SearchSpace(self.strategies, (kept_policy,)), SearchSpace(probe + (kept_strategy,), (kept_policy,))]
        return [s for k, s in enumerate(spaces) if s != self and s not in spaces[:k]]


def recipe_config(base: RunConfig, arm: Arm, steps: int) -> RunConfig:
    """``base`` with the arm's arch, init, strategy and LR policy and exactly ``steps`` optimiser steps."""
    cfg = base.model_copy(deep=True)
    cfg.model.arch = arm.arch
    cfg.model.init = arm.init
    cfg.train.strategy = arm.strategy
    cfg.train.lr_policy = arm.lr_policy
    cfg.train.steps = int(steps)
    return cfg


# ---------------------------------------------------------------------------------------------- cost
@dataclass(frozen=True)
class CostModel:
    """Seconds a run is expected to take: a fixed part (building the model, copying the arrays), a validation
    pass per round and one after the run, and its optimiser steps (full fine-tuning; other strategies scaled
    by STRATEGY_COST)."""
    step_seconds: float
    fixed_seconds: float = 0.0
    final_extra_seconds: float = 0.0   # the final run's test pass, bootstrap and files, and the advice's own
    val_seconds: float = 0.0           # one pass over the validation images (cross-validated: over one fold)
    fits: int = 1                      # fits per search trial: the folds when the search cross-validates
    # Per initialisation (by candidate name): its backbone's forward seconds per image, from the ranking's feature
    # pass. A candidate's runs cost its forward time over the timed one's (``relative``), so a ViT-B source next
    # to a ResNet-18 config is priced as a ViT-B; a probe costs one pass over ``probe_images`` images.
    image_seconds: tuple[tuple[str, float], ...] = ()
    timed_image_seconds: float = 0.0   # the timed arm's candidate's
    probe_images: int = 0              # images a probe trial passes: the N-pool (cross-validated) or train + val

    def relative(self, arm: Arm) -> float:
        """The arm's backbone's forward time over the timed backbone's (1.0 when either is unknown)."""
        own = dict(self.image_seconds).get(arm.init_name)
        return own / self.timed_image_seconds if own and self.timed_image_seconds > 0 else 1.0

    def arm_seconds(self, arm: Arm, steps: int, rounds: int = 0) -> float:
        """One search trial (or learning-curve size) of ``arm``: a probe is its build and one feature pass."""
        if arm.strategy == Strategy.PROBE:
            return self.fixed_seconds + dict(self.image_seconds).get(arm.init_name, 0.0) * self.probe_images
        return self.relative(arm) * self.trial_seconds(STRATEGY_COST.get(arm.strategy, 1.0), steps, rounds)

    def arm_final_seconds(self, arm: Arm, steps: int, rounds: int = 0) -> float:
        """The final run of ``arm`` with its extras (a probe's: one feature pass, then the test and the files)."""
        if arm.strategy == Strategy.PROBE:
            return self.arm_seconds(arm, steps, rounds) + self.final_extra_seconds
        strategy_cost = STRATEGY_COST.get(arm.strategy, 1.0)
        return self.relative(arm) * self.final_fits * self.run_seconds(strategy_cost, steps, rounds) + \
            self.final_extra_seconds

    def run_seconds(self, strategy_cost: float, steps: int, rounds: int = 0) -> float:
        """A run of ``steps`` optimiser steps validated ``rounds`` times (and once more after it)."""
        return self.fixed_seconds + (rounds + 1) * self.val_seconds + strategy_cost * self.step_seconds * steps

    def trial_seconds(self, strategy_cost: float, steps: int, rounds: int = 0) -> float:
        """A search trial (or learning-curve size): one run, or one per fold when cross-validated."""
        return self.fits * self.run_seconds(strategy_cost, steps, rounds)

    @property
    def final_fits(self) -> int:
        """Fits of the final run: one, or (cross-validated, as ``train`` does it) the folds and the pool fit."""
        return self.fits + 1 if self.fits > 1 else 1

    def final_seconds(self, strategy_cost: float, steps: int, rounds: int = 0) -> float:
        """The final run, its fits and its extras (test pass, bootstrap, files, the advice's own)."""
        return self.final_fits * self.run_seconds(strategy_cost, steps, rounds) + self.final_extra_seconds

    def to_json(self) -> dict:
        return {"step_seconds": round(self.step_seconds, 4), "fixed_seconds": round(self.fixed_seconds, 3),
                "val_seconds": round(self.val_seconds, 3), "final_extra_seconds": round(self.final_extra_seconds, 3),
                "fits_per_trial": self.fits, "probe_images": self.probe_images,
                "forward_seconds_per_image": {name: round(v, 6) for name, v in self.image_seconds}}


@dataclass(frozen=True)
class SearchPlan:
    """The arms, each rung's step budget (the choice is made after the last rung), the final budget and
    the learning-curve sizes, with the plan's estimated seconds (search + final run + size runs).
    ``fits`` is False only for the smallest plan returned when none fits the budget."""
    arms: tuple[Arm, ...]
    rung_steps: tuple[int, ...]
    final_steps: int
    rounds: int                 # validation rounds per run (train.epochs)
    sizes: tuple[int, ...]
    estimated_seconds: float
    cost: CostModel
    notes: tuple[str, ...] = ()
    fits: bool = True
    search_rounds: int | None = None   # validation rounds of a search trial (None: ``rounds``)
    final_rounds: int | None = None    # validation rounds of the final run (None: ``rounds``)

    @property
    def trial_rounds(self) -> int:
        return self.search_rounds or self.rounds

    @property
    def final_run_rounds(self) -> int:
        return self.final_rounds or self.rounds

    def rung_counts(self) -> list[int]:
        return rung_counts(len(self.arms))[:len(self.rung_steps)]

    @property
    def estimated_seconds_rounded(self) -> float:
        """The estimate as advice.json records it (and advice.html shows it): to 0.1 s."""
        return round(self.estimated_seconds, 1)

    def describe(self) -> str:
        """One line: the arms, rungs, final run and sizes, as the log and a refusal show them."""
        arms = f"{len(self.arms)} arm" + ("s" if len(self.arms) != 1 else "")
        return (f"{arms}, rungs of {self.rung_counts()} arms at {list(self.rung_steps)} steps, final "
                f"{self.final_steps} steps, learning-curve sizes {list(self.sizes) or 'none'}")

    def to_json(self) -> dict:
        return {"arms": [a.label for a in self.arms], "rung_counts": self.rung_counts(),
                "rung_steps": list(self.rung_steps), "final_steps": self.final_steps, "rounds": self.rounds,
                "search_rounds": self.trial_rounds, "final_rounds": self.final_run_rounds,
                "learning_curve_sizes": list(self.sizes), "estimated_seconds": self.estimated_seconds_rounded,
                "cost_model": self.cost.to_json(), "notes": list(self.notes)}


def rung_counts(n_arms: int) -> list[int]:
    """Arms per rung: halving (rounded up) until two or fewer remain; the last rung chooses the pick."""
    counts = [max(int(n_arms), 1)]
    while counts[-1] > 2:
        counts.append(math.ceil(counts[-1] / 2))
    return counts


def whole_rounds(steps: float, rounds: int) -> int:
    """``steps`` rounded up to whole validation rounds (a fit rounds its step budget up to one)."""
    return rounds * math.ceil(steps / rounds)


def rung_steps_for(n_rungs: int, final_steps: int, rounds: int = 1) -> tuple[int, ...]:
    """Doubling step budgets ending at half the final budget (the final run is the last, one-arm rung).

    Each is a whole number of validation rounds (a fit rounds its step budget up to one), so the
    steps a rung reports are the steps it trains."""
    return tuple(min(final_steps, whole_rounds(max(MIN_RUNG_STEPS, math.ceil(final_steps / 2 ** (n_rungs - r))),
                                               rounds))
                 for r in range(n_rungs))


def estimate_seconds(arms: list[Arm], rung_steps: tuple[int, ...], final_steps: int, n_sizes: int,
                     cost: CostModel, rounds: tuple[int, int] = (0, 0)) -> float:
    """The plan's seconds: every rung (at the arms' mean trial cost: ``CostModel.arm_seconds``), the final run and
    the size runs (at the dearest arm's cost: the pick is not known yet, and the running search keeps that much
    room, ``reserve_seconds``); ``rounds``: the validation rounds of a search trial and of the final (and size)
    runs."""
    trial_rounds, final_rounds = rounds
    if not arms:
        return cost.final_seconds(1.0, final_steps, final_rounds)
    counts = rung_counts(len(arms))
    search = sum(c * float(np.mean([cost.arm_seconds(a, s, trial_rounds) for a in arms]))
                 for c, s in zip(counts, rung_steps))
    final = reserve_seconds(cost, arms, final_steps, final_rounds)
    return search + final + n_sizes * max(cost.arm_seconds(a, final_steps, final_rounds) for a in arms)


def reserve_seconds(cost: CostModel, arms, final_steps: int, rounds: int) -> float:
    """The dearest final run any of ``arms`` could need: what a running search keeps room for."""
    return max((cost.arm_final_seconds(a, final_steps, rounds) for a in arms),
               default=cost.final_seconds(1.0, final_steps, rounds))


# ---------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class PlanShape:
    """One size of plan, before it meets the initialisations: how much of each dimension it keeps."""
    sources: int                  # top-ranked non-reference sources searched
    sizes: tuple[int, ...]        # learning-curve sizes trained
    space: SearchSpace
    rungs: int | None = None      # rungs trained (None: halve until two arms remain)
    shift: int = 0                # extra halvings of every rung's step budget (0: the doubling ladder's own)
    final_divisor: int = 1        # the final run trains 1/final_divisor of the config's steps
    search_rounds: int | None = None   # validation rounds of a search trial (None: the config's)
    final_rounds: int | None = None    # validation rounds of the final run (None: the config's)


def plan_shapes(n_sources: int, sizes: tuple[int, ...], space: SearchSpace, narrower: list[SearchSpace],
                limits: tuple[int, list[int]]) -> Iterator[PlanShape]:
    """Plan shapes from the largest to the smallest, in the order of the module docstring; ``limits``: the
    rungs of the smallest full search, and the fewer validation rounds a search trial may have."""
    max_rungs, fewer_rounds = limits
    fewest = min(1, n_sources)
    for kept in range(len(sizes), -1, -1):
        for k in range(n_sources, fewest - 1, -1):
            yield PlanShape(k, sizes[:kept], space)
    for rounds in fewer_rounds:
        yield PlanShape(fewest, (), space, search_rounds=rounds)
    least = (fewer_rounds or [None])[-1]
    for rungs in range(max_rungs - 1, 0, -1):
        yield PlanShape(fewest, (), space, rungs, search_rounds=least)
    for shift in range(1, MAX_SHIFT + 1):
        yield PlanShape(fewest, (), space, 1, shift, search_rounds=least)
    for smaller in narrower:
        yield PlanShape(fewest, (), smaller, 1, MAX_SHIFT, search_rounds=least)
    narrowest = (narrower or [space])[-1]
    for rounds in fewer_rounds:
        yield PlanShape(fewest, (), narrowest, 1, MAX_SHIFT, 1, least, rounds)
    for divisor in FINAL_SHORTENINGS:
        yield PlanShape(fewest, (), narrowest, 1, MAX_SHIFT, divisor, least, least)


def fewer_search_rounds(train: TrainConfig) -> list[int]:
    """The validation rounds a search trial may drop to (half, a quarter, MIN_SEARCH_ROUNDS), largest first;
    none when ``train.gradual_epochs`` fixes the stages in rounds of their own."""
    if train.gradual_epochs is not None:
        return []
    options = {train.epochs // 2, train.epochs // 4, MIN_SEARCH_ROUNDS}
    return sorted((r for r in options if MIN_SEARCH_ROUNDS <= r < train.epochs), reverse=True)


def plan_search(inits: list[tuple[str, Init, str]], space: SearchSpace, final_steps: int, sizes: tuple[int, ...],
                cost: CostModel, budget_seconds: float, train: TrainConfig) -> SearchPlan:
    """The largest plan whose estimate x LOAD_MARGIN fits ``budget_seconds`` (what is left of --budget when
    the search is planned); the smallest, with ``fits=False``, when none does.

    ``inits`` are (name, init, arch) in ranking order; ``train`` is the config's: its validation rounds
    (``epochs``), and its strategy and LR policy, kept when the space narrows.
    """
    refs = [i for i in inits if i[0] in REFERENCE_NAMES]
    others = [i for i in inits if i[0] not in REFERENCE_NAMES]
    order = {i[0]: k for k, i in enumerate(inits)}
    narrower = space.narrowed(train.strategy, train.lr_policy)
    fewest = sorted(refs + others[:min(1, len(others))], key=lambda i: order[i[0]])
    limits = (len(rung_counts(len(space.arms(fewest)))), fewer_search_rounds(train))
    seen, smallest = set(), None
    for shape in plan_shapes(len(others), sizes, space, narrower, limits):
        chosen = sorted(refs + others[:shape.sources], key=lambda i: order[i[0]])
        plan = _plan_of(shape, shape.space.arms(chosen), final_steps, train.epochs, cost)
        key = (plan.arms, plan.rung_steps, plan.sizes, plan.final_steps, plan.trial_rounds, plan.final_run_rounds)
        if key in seen:
            continue
        seen.add(key)
        notes = tuple(_plan_notes(others, shape, sizes, space, (plan, final_steps)))
        if plan.estimated_seconds * LOAD_MARGIN <= budget_seconds:
            return dataclasses.replace(plan, notes=notes)
        if smallest is None or plan.estimated_seconds < smallest.estimated_seconds:
            smallest = dataclasses.replace(plan, notes=notes, fits=False)
    return smallest


def _plan_of(shape: PlanShape, arms: list[Arm], final_steps: int, rounds: int, cost: CostModel) -> SearchPlan:
    """The plan of one shape for these arms: its rung steps (the first ``shape.rungs`` of a doubling ladder
    ``shape.shift`` halvings longer, in whole rounds of a search trial) and final steps (whole rounds of the
    final run, never under the longest rung's nor over the config's)."""
    natural = len(rung_counts(len(arms)))
    trial_rounds, final_rounds = shape.search_rounds or rounds, shape.final_rounds or rounds
    steps = rung_steps_for(natural + shape.shift, final_steps, trial_rounds)[:min(shape.rungs or natural, natural)]
    final = final_steps
    if shape.final_divisor > 1 or final_rounds != rounds:
        final = whole_rounds(max(final_steps / shape.final_divisor, max(steps)), final_rounds)
        final = final if final <= final_steps else final_rounds * (final_steps // final_rounds)
    seconds = estimate_seconds(arms, steps, final, len(shape.sizes), cost, (trial_rounds, final_rounds))
    return SearchPlan(tuple(arms), steps, final, rounds, shape.sizes, seconds, cost,
                      search_rounds=shape.search_rounds, final_rounds=shape.final_rounds)


def _plan_notes(others, shape: PlanShape, sizes, space: SearchSpace, planned: tuple[SearchPlan, int]) -> list[str]:
    """What the budget left out of a plan, one note each (nothing for the full plan)."""
    plan, final_steps = planned
    notes = []
    if shape.sources < len(others):
        left = ", ".join(name for name, _, _ in others[shape.sources:])
        notes.append(f"budget: only the top {shape.sources} ranked source(s) searched; not searched: {left}")
    if len(shape.sizes) < len(sizes):
        notes.append(f"budget: learning-curve size(s) {', '.join(map(str, sizes[len(shape.sizes):]))} not trained")
    if shape.search_rounds is not None:
        kept = f" (the final run keeps {plan.rounds})" if shape.final_rounds is None else ""
        notes.append(f"budget: a search trial is validated {shape.search_rounds} times, not the config's "
                     f"{plan.rounds}{kept}")
    natural = len(rung_counts(len(plan.arms)))
    if shape.rungs is not None and len(plan.rung_steps) < natural:
        notes.append(f"budget: {len(plan.rung_steps)} rung(s) of successive halving instead of {natural}: the pick "
                     f"is the best of {plan.rung_counts()[-1]} arms at {plan.rung_steps[-1]} steps")
    ladder = rung_steps_for(natural, final_steps, plan.trial_rounds)
    if shape.shift and plan.rung_steps != ladder[:len(plan.rung_steps)]:
        notes.append(f"budget: rungs of {list(plan.rung_steps)} steps, shorter than the doubling ladder's {list(ladder)}")
    if shape.space != space:
        notes.append(f"budget: only strategy {'/'.join(shape.space.strategies)} with LR policy "
                     f"{'/'.join(shape.space.lr_policies)} searched (the space: {'/'.join(space.strategies)} x "
                     f"{'/'.join(space.lr_policies)})")
    if shape.final_rounds is not None:
        notes.append(f"budget: the final run is validated {shape.final_rounds} times, not the config's {plan.rounds} "
                     f"(its recipe says train.epochs={shape.final_rounds})")
    if plan.final_steps < final_steps:
        notes.append(f"budget: the final run trains {plan.final_steps} steps, not the config's {final_steps}")
    return notes


# ---------------------------------------------------------------------------------------------- the clock
def final_steps_within(plan: SearchPlan, pick: Arm, scale: float, seconds_left: float,
                       bounds: tuple[int, int]) -> int:
    """The final run's steps, decided when the search is over: the most whole validation rounds whose estimate
    (the cost model x ``scale``, how far off the search found it, x RUNNING_MARGIN) fits ``seconds_left``,
    within ``bounds``: at least the pick's steps in the search (a final run shorter than its own trial would
    undo the search), at most the config's. So a search that ran slow shortens the final run, and one that
    left room gives back steps a plan short of time had cut (the plan decided with LOAD_MARGIN, on less). The
    pick is priced as the plan priced it (``CostModel.arm_final_seconds``), which is linear in its steps."""
    floor, most = bounds
    rounds, scale = plan.final_run_rounds, scale * RUNNING_MARGIN
    fixed = scale * plan.cost.arm_final_seconds(pick, 0, rounds)
    per_step = scale * plan.cost.arm_final_seconds(pick, 1, rounds) - fixed
    if per_step <= 0:   # a probe: no optimiser step
        return plan.final_steps
    fitting = rounds * math.floor(max(seconds_left - fixed, 0.0) / per_step / rounds + 1e-9)   # (float rounding)
    return int(min(rounds * (most // rounds), max(whole_rounds(floor, rounds), fitting)))


def needed_budget(spent_before_plan: float, plan: SearchPlan, probe_share: float) -> float:
    """The smallest --budget (seconds) under which ``plan`` would have fitted: what ranking and timing took
    (of which the probe grows with the budget, as ``probe_share`` of it) plus the plan with its margin,
    rounded up to half a minute."""
    seconds = (spent_before_plan + LOAD_MARGIN * plan.estimated_seconds) / (1.0 - probe_share)
    return 30.0 * math.ceil(seconds / 30.0)

"""advise's budget (issue 24, item 3): the plan shrinks until it fits, a budget too small for any plan is refused
with one that would do, the running search stops launching trials the clock cannot hold, the final run shortens
when the search ran slow, and the timing probe stops at its share of the budget.

Nothing here depends on how fast this machine is: costs are a fake ``CostModel`` and time a fake clock.
The wall-clock figures (``--budget 2m`` under load) are benchmarks/advise_budget.py's.
"""
import math

import numpy as np
import dataclasses

import pytest
from torch import nn

from medtransfer.advise import search as search_module
from medtransfer.advise.plan import (LOAD_MARGIN, Arm, RUNNING_MARGIN, CostModel, SearchPlan, SearchSpace,
                                     final_steps_within, needed_budget, plan_search)
from medtransfer.advise.search import BudgetClock, SearchData, SplitArrays, Trial, first_rung_order, run_halving
from medtransfer.advise.timing import PROBE_SHARE, choose_threads, cost_from_stamps, probe_cost
from medtransfer.advise.workflow import train_command
from medtransfer.config import TrainConfig, config_from_dict
from medtransfer.errors import MedtransferError, WeightsUnavailable
from medtransfer.kinds import IMAGENET, SCRATCH, Init, Strategy
from medtransfer.models import Backbone, register_family

# pneumoniamnist at N = 200 (the acceptance case): 12 validation rounds, 108 final steps, scratch only
SCRATCH_ONLY = [("scratch", SCRATCH, "resnet18")]
COST = CostModel(step_seconds=0.3, fixed_seconds=1.0, final_extra_seconds=5.0, val_seconds=0.7)
FULL_PICK, FROZEN_PICK = (Arm("src", Init.checkpoint("a"), "resnet18", strategy, "constant")
                          for strategy in (Strategy.FULL, Strategy.FROZEN))
TRAIN = TrainConfig(epochs=12, strategy="full", lr_policy="one_cycle")


def _plan(budget, inits=SCRATCH_ONLY, sizes=(50, 100), final=108, cost=COST, train=TRAIN):
    return plan_search(inits, SearchSpace(), final, sizes, cost, budget, train)


# ---------------------------------------------------------------------------------------------- the plan
def _stage(plan) -> str:
    """Which step of the shrinking a plan of the acceptance case is at (plan.py's module docstring)."""
    if plan.sizes or plan.trial_rounds == 12:
        return "sizes"
    if len(plan.rung_steps) > 1:
        return "rounds"
    if len(plan.arms) == 4:
        return "rungs" if plan.rung_steps == (27,) else "steps"     # 27: the first rung of [27, 54], 3 rounds
    if plan.final_steps == 108:
        return "recipes" if plan.final_run_rounds == 12 else "final rounds"
    return "final steps"


def test_the_plan_gives_up_sizes_rounds_rungs_steps_recipes_then_the_final_runs_rounds_and_steps():
    roomy = _plan(1e6)
    assert roomy.fits and roomy.sizes == (50, 100) and roomy.rung_counts() == [4, 2] and roomy.notes == ()
    seen, previous = [], None
    for budget in np.geomspace(roomy.estimated_seconds * LOAD_MARGIN, 10.0, 400):
        plan = _plan(float(budget))
        if not plan.fits:
            break
        assert plan.estimated_seconds * LOAD_MARGIN <= budget
        if previous is not None:
            assert plan.estimated_seconds <= previous.estimated_seconds   # a smaller budget never plans more
        previous = plan
        stage = _stage(plan)
        if not seen or seen[-1] != stage:
            seen.append(stage)
    assert seen == ["sizes", "rounds", "rungs", "steps", "recipes", "final rounds", "final steps"]
    assert previous.arms[0].label == "scratch / full / one_cycle"     # the config's recipe is the one kept
    assert any("the final run trains" in n for n in previous.notes)


def test_the_smallest_plan_is_returned_unfitting_and_keeps_the_references_and_the_top_source():
    inits = [("src", Init.checkpoint("a"), "resnet18"), ("scratch", SCRATCH, "resnet18"),
             ("other", Init.checkpoint("b"), "resnet18"), ("imagenet", IMAGENET, "resnet18")]
    tiny = _plan(1.0, inits)
    assert not tiny.fits
    # ranking order, one fine-tuned recipe each, and the probe of every pretrained one (a scratch backbone is random)
    assert [(a.init_name, a.strategy) for a in tiny.arms] == [
        ("src", Strategy.PROBE), ("src", Strategy.FULL), ("scratch", Strategy.FULL),
        ("imagenet", Strategy.PROBE), ("imagenet", Strategy.FULL)]
    assert {a.lr_policy for a in tiny.arms} == {"one_cycle"}
    assert tiny.trial_rounds == 3 and tiny.rung_steps == (6,)    # MIN_RUNG_STEPS in whole rounds of 3
    assert tiny.final_steps == 27 and tiny.final_run_rounds == 3 and tiny.sizes == ()   # 108 / 4, 3 rounds
    notes = " ".join(tiny.notes)
    for said in ("not searched: other", "50, 100 not trained", "validated 3 times, not the config's 12",
                 "only strategy probe/full with LR policy one_cycle", "train.epochs=3", "final run trains 27 steps"):
        assert said in notes
    assert tiny.estimated_seconds == min(_plan(b, inits).estimated_seconds for b in (1.0, 1e3, 1e4, 1e6))


def test_the_budget_a_refusal_names_would_fit_the_smallest_plan():
    smallest = _plan(1.0)
    spent = 7.0                                     # ranking before the probe
    needed = needed_budget(spent, smallest, PROBE_SHARE)
    assert needed % 30 == 0
    left = needed - spent - PROBE_SHARE * needed    # what the plan would be given under that budget
    assert _plan(left).fits
    assert not _plan(needed - 30 - spent - PROBE_SHARE * (needed - 30)).fits   # and it is the smallest such


def test_a_frozen_config_keeps_full_fine_tuning_when_the_space_narrows():
    spaces = SearchSpace().narrowed(Strategy.FROZEN, "cosine")
    assert spaces == [SearchSpace(lr_policies=("constant",)),
                      SearchSpace((Strategy.PROBE, Strategy.FULL), ("constant",))]   # the probe is kept: ~free
    assert SearchSpace((Strategy.FULL,), ("constant",)).narrowed(Strategy.FULL, "constant") == []
    assert SearchSpace((Strategy.PROBE, Strategy.FULL), ("constant",)).narrowed(Strategy.FULL, "constant") == []


# ---------------------------------------------------------------------------------------------- the running search
class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


_EMPTY = SplitArrays(np.zeros((0, 4, 4), np.uint8), np.zeros(0), np.zeros(0))
_NO_DATA = SearchData(_EMPTY, _EMPTY, "binary", ["finding"])   # the fake trials never read it


def _trial(strategy, steps):
    """The cost model's seconds of a trial of the full plan (12 validation rounds)."""
    return COST.run_seconds(1.0 if strategy == Strategy.FULL else 0.7, steps, 12)


def _fake_search(monkeypatch, deadline, slowdown=1.0, reserve=0.0):
    """A [4, 2]-arm search whose trials 'take' the cost model's seconds x slowdown on a fake clock."""
    clock = FakeClock()
    auroc = {"constant": 0.7, "one_cycle": 0.8}
    started = []

    def fake_train_arm(data, arm, steps, base, device, rung=0, positions=None):
        started.append((rung, arm.label, clock.t))
        seconds = slowdown * _trial(arm.strategy, steps)
        clock.t += seconds
        bonus = 0.05 if arm.strategy == Strategy.FULL else 0.0
        return Trial(arm, rung, steps, 200, auroc[arm.lr_policy] + bonus, seconds)

    monkeypatch.setattr(search_module, "train_arm", fake_train_arm)
    plan = _plan(1e6, sizes=())
    budget = BudgetClock(deadline, reserve_seconds=reserve, now=clock, margin=1.0)   # exact arithmetic here
    result = run_halving(_NO_DATA, plan, None, None, log=lambda _line: None, clock=budget)
    return plan, result, started, clock, budget


def test_without_a_deadline_every_rung_runs(monkeypatch):
    plan, result, started, _, budget = _fake_search(monkeypatch, None)
    assert [len(r) for r in result.rungs] == [4, 2] and result.stopped is None
    assert result.pick.label == "scratch / full / one_cycle" and budget.scale == pytest.approx(1.0)


def test_the_search_starts_no_trial_the_clock_cannot_hold_and_picks_from_the_last_full_rung(monkeypatch):
    rung1 = sum(_trial(s, 36) for s in (Strategy.GRADUAL,) * 2 + (Strategy.FULL,) * 2)
    second = _trial(Strategy.FULL, 60)                 # rung 2's first arm (full / one_cycle, the best of rung 1)
    deadline = rung1 + second + 1.0 + 100.0            # room for one rung-2 trial, the 100 s reserve and a second
    plan, result, started, clock, _ = _fake_search(monkeypatch, deadline, reserve=100.0)
    assert [len(r) for r in result.rungs] == [4, 1]
    assert "stopped during rung 2 after 1 of 2 arms" in result.stopped and "best of rung 1" in result.stopped
    assert clock.t + 100.0 <= deadline                 # what must follow still fits
    assert result.pick_trial.rung == 1 and result.pick.label == "scratch / full / one_cycle"
    assert [t.kept for t in result.rungs[0]] == [t is result.pick_trial for t in result.rungs[0]]
    assert not any(t.kept for t in result.rungs[1])


def test_a_slower_machine_than_measured_stops_the_search_sooner(monkeypatch):
    rung1 = sum(_trial(s, 36) for s in (Strategy.GRADUAL,) * 2 + (Strategy.FULL,) * 2)
    deadline = 1.5 * rung1
    _, on_time, _, _, _ = _fake_search(monkeypatch, deadline)
    _, slow, started, clock, budget = _fake_search(monkeypatch, deadline, slowdown=2.0)
    assert len(on_time.trials) > len(slow.trials)
    assert budget.scale == pytest.approx(2.0)
    assert clock.t <= deadline or len(started) == 1
    assert "stopped during rung 1" in slow.stopped and slow.pick_trial in slow.rungs[0]


def test_the_first_trial_always_runs_and_a_cut_first_rung_picks_among_its_trials(monkeypatch):
    _, result, started, _, _ = _fake_search(monkeypatch, deadline=1.0)
    assert len(started) == 1 and [len(r) for r in result.rungs] == [1]
    assert "stopped during rung 1 after 1 of 4 arms" in result.stopped and result.pick_trial.kept


def test_the_clock_keeps_its_margin_for_what_must_follow():
    clock = FakeClock()
    budget = BudgetClock(100.0, reserve_seconds=50.0, now=clock)
    assert budget.holds(100.0 / RUNNING_MARGIN - 50.0) and not budget.holds(100.0 / RUNNING_MARGIN - 49.0)
    budget.record(seconds=20.0, estimate=10.0)      # the machine runs at half the measured speed
    clock.t = 20.0
    assert budget.scale == 2.0 and not budget.holds(0.0) and BudgetClock(None).holds(1e9)


def test_rung_one_trains_the_probes_then_the_configs_own_recipe_of_every_initialisation_first():
    from medtransfer.config import TrainConfig

    class Base:
        train = TrainConfig(strategy="full", lr_policy="one_cycle")

    inits = [("src", Init.checkpoint("a"), "resnet18"), ("scratch", SCRATCH, "resnet18")]
    arms = SearchSpace().arms(inits)
    order = first_rung_order(arms, Base)
    assert [a.label for a in order[:3]] == ["src / probe", "src / full / one_cycle", "scratch / full / one_cycle"]
    assert sorted(order, key=arms.index) == arms
    assert [a.label for a in first_rung_order(arms, None)] == ["src / probe"] + [a.label for a in arms
                                                                                if a.strategy != "probe"]


def test_the_final_run_shortens_to_whole_rounds_when_the_search_ran_slow():
    plan = SearchPlan((), (36,), 108, 12, (), 0.0, COST)
    on_time = RUNNING_MARGIN * (COST.run_seconds(1.0, 108, 12) + COST.final_extra_seconds)
    bounds = (36, 108)
    assert final_steps_within(plan, FULL_PICK, 1.0, on_time, bounds) == 108
    assert final_steps_within(plan, FULL_PICK, 1.0, on_time - 1.0, bounds) < 108   # the margin is kept
    steps = final_steps_within(plan, FULL_PICK, 1.5, on_time, bounds)
    assert steps % 12 == 0 and 36 <= steps < 108
    assert RUNNING_MARGIN * 1.5 * (COST.run_seconds(1.0, steps, 12) + COST.final_extra_seconds) <= on_time
    assert final_steps_within(plan, FULL_PICK, 10.0, on_time, bounds) == 36       # never below the pick's trial
    assert final_steps_within(plan, FROZEN_PICK, 1.5, on_time, bounds) == 108     # a frozen pick is cheaper


def test_a_final_run_validated_less_often_gets_whole_rounds_of_its_own():
    plan = SearchPlan((), (6,), 27, 12, (), 0.0, COST, search_rounds=3, final_rounds=3)
    left = RUNNING_MARGIN * (COST.run_seconds(1.0, 51, 3) + COST.final_extra_seconds)
    assert final_steps_within(plan, FULL_PICK, 1.0, left, (6, 108)) == 51      # 17 rounds of 3
    assert final_steps_within(plan, FULL_PICK, 1.0, 1e6, (6, 100)) == 99       # the config's, in whole rounds


def test_a_search_that_left_room_gives_the_final_run_back_the_steps_the_plan_cut():
    plan = SearchPlan((), (6,), 60, 12, (), 0.0, COST)                               # planned short: 60 of 108
    roomy = RUNNING_MARGIN * (COST.run_seconds(1.0, 108, 12) + COST.final_extra_seconds)
    assert final_steps_within(plan, FULL_PICK, 1.0, 10 * roomy, (6, 108)) == 108  # never over the config's
    some = final_steps_within(plan, FULL_PICK, 1.0, roomy - 5.0, (6, 108))
    assert 60 < some < 108 and some % 12 == 0


# ---------------------------------------------------------------------------------------------- threads and the probe
def test_threads_are_the_cores_other_work_leaves_free():
    assert choose_threads(2, 2.0) == 1          # another 2-thread process on 2 cores
    assert choose_threads(2, 3.7) == 1
    assert choose_threads(2, 0.2) == 2
    assert choose_threads(16, 3.6) == 12
    assert choose_threads(2, None) == 2 and choose_threads(2, math.nan) == 2


def test_the_command_carries_the_threads_advise_chose_and_the_rounds_the_budget_set():
    cfg = config_from_dict({"data": {"source": "medmnist", "name": "pneumoniamnist"}, "task": {"kind": "binary"}})
    words = train_command("c.yaml", "data", "out", [], cfg, cfg, threads=1)
    assert "train.threads=1" in words and "train.threads" not in train_command("c.yaml", "d", "o", [], cfg, cfg)
    best = cfg.model_copy(deep=True)
    best.train.epochs = 3
    assert "train.epochs=3" in train_command("c.yaml", "d", "o", [], cfg, best)
    assert "train.epochs" not in train_command("c.yaml", "d", "o", [], cfg, cfg)


def test_the_probe_step_is_the_median_interval_and_a_run_counts_every_validation_pass():
    cost = cost_from_stamps([10.0, 11.0, 12.5, 13.5], build_seconds=0.5, to_first_step=2.0, val_pass=0.25)
    assert cost.step_seconds == 1.0 and cost.fixed_seconds == pytest.approx(0.5 + 1.0) and cost.val_seconds == 0.25
    assert cost.run_seconds(1.0, 10, 12) == pytest.approx(1.5 + 13 * 0.25 + 10)   # a pass per round and one after
    with pytest.raises(MedtransferError, match="needs 2"):
        cost_from_stamps([1.0], 0.0, 0.0, 0.0)


PROBE_ARCH = "advise-budget-test-cnn"


@register_family([PROBE_ARCH])
def _probe_cnn(name, *, in_chans, pretrained, log):
    if pretrained:
        raise WeightsUnavailable(f"{name} has no ImageNet weights")
    return Backbone(nn.Sequential(nn.Conv2d(in_chans, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten()), 4, early=["0"], late=["1"])


def test_the_probe_stops_at_its_share_of_the_budget():
    """Every call of the fake clock is a second: the probe must stop its steps once 3/4 of its 5 s are spent
    (after at least three steps), not train its 30."""
    from medtransfer.advise.plan import Arm

    rng = np.random.default_rng(0)
    split = SplitArrays(rng.integers(0, 255, (32, 16, 16)).astype(np.uint8),
                        (np.arange(32) % 2).astype(np.float32)[:, None], np.arange(32))
    data = SearchData(split, split, "binary", ["finding"])
    cfg = config_from_dict({"data": {"source": "medmnist", "name": "x"}, "task": {"kind": "binary"},
                            "image_size": 16, "model": {"arch": PROBE_ARCH},
                            "train": {"epochs": 4, "batch_size": 8, "threads": 1}})
    ticks = iter(range(1000))
    calls = []

    def clock():
        calls.append(next(ticks))
        return float(calls[-1])

    import torch
    cost = probe_cost(data, Arm("scratch", SCRATCH, PROBE_ARCH, Strategy.FULL, "constant"), cfg,
                      torch.device("cpu"), 5.0, clock=clock)
    # clock: start 0, built 1, steps at 2, 3, 4 (4 s spent, 3/4 of 5: stop), validation 5 -> 6
    assert len(calls) == 7 and cost.step_seconds == 1.0
    assert cost.fixed_seconds == pytest.approx(1.0 + 0.0) and cost.val_seconds == 1.0   # build + setup; the pass


def test_the_probe_times_the_validation_pass_on_the_images_its_time_allows():
    from medtransfer.advise.timing import _val_images

    assert _val_images(524, 10.0, 2.0) == 524
    assert _val_images(524, 1.0, 2.0) == 262
    assert _val_images(524, 0.0, 2.0) == 64 and _val_images(40, 0.0, 2.0) == 40


def test_search_trials_are_validated_as_often_as_the_plan_says_and_the_final_run_as_the_config(monkeypatch):
    from medtransfer.advise.plan import fewer_search_rounds

    assert fewer_search_rounds(TRAIN) == [6, 3] and fewer_search_rounds(TrainConfig(epochs=3)) == []
    assert fewer_search_rounds(TrainConfig(epochs=12, gradual_epochs=[4, 4, 4])) == []   # stages in their own rounds
    plan = next(p for p in (_plan(b) for b in np.geomspace(1e4, 10.0, 300)) if p.trial_rounds == 3)
    base = config_from_dict({"data": {"source": "medmnist", "name": "x"}, "task": {"kind": "binary"},
                             "train": {"epochs": 12, "strategy": "full", "lr_policy": "one_cycle"}})
    seen = []

    def fake_train_arm(data, arm, steps, trial_base, device, rung=0, positions=None):
        seen.append((steps, trial_base.train.epochs))
        return Trial(arm, rung, steps, 200, 0.8, 1.0)

    monkeypatch.setattr(search_module, "train_arm", fake_train_arm)
    run_halving(_NO_DATA, plan, base, None, log=lambda _line: None)
    assert seen and all(rounds == 3 and steps % 3 == 0 for steps, rounds in seen)
    assert base.train.epochs == 12 and plan.rounds == 12 and plan.final_steps % 12 == 0


def test_each_arm_is_priced_at_its_own_backbones_speed_and_a_probe_at_one_feature_pass():
    """A ViT-B source beside a ResNet-18 config costs what its forward pass costs, not the timed ResNet's; a probe
    costs its build and one pass over its images (found by review: probes were priced at ~0, so the first one
    blew up the clock's scale and cut rung 1)."""
    from medtransfer.advise.plan import Arm, estimate_seconds

    cost = dataclasses.replace(COST, image_seconds=(("vit", 0.02), ("res", 0.002)), timed_image_seconds=0.002,
                               probe_images=100)
    vit_full, res_full = (Arm(n, Init.checkpoint(n), "x", Strategy.FULL, "constant") for n in ("vit", "res"))
    vit_probe = Arm("vit", Init.checkpoint("vit"), "x", Strategy.PROBE, "constant")
    assert cost.arm_seconds(vit_full, 60, 3) == pytest.approx(10 * cost.arm_seconds(res_full, 60, 3))
    assert cost.arm_seconds(res_full, 60, 3) == pytest.approx(COST.trial_seconds(1.0, 60, 3))   # the timed one
    assert cost.arm_seconds(vit_probe, 60, 3) == pytest.approx(COST.fixed_seconds + 0.02 * 100)
    assert cost.arm_final_seconds(vit_probe, 60, 3) < cost.arm_final_seconds(res_full, 60, 3)
    assert estimate_seconds([vit_full], (30,), 60, 0, cost, (3, 3)) > 5 * estimate_seconds([res_full], (30,), 60, 0,
                                                                                               cost, (3, 3))
    plan = SearchPlan((vit_full, res_full), (36,), 108, 12, (), 0.0, cost)
    left = 2 * RUNNING_MARGIN * (COST.run_seconds(1.0, 108, 12) + COST.final_extra_seconds)
    assert final_steps_within(plan, vit_full, 1.0, left, (12, 108)) < final_steps_within(plan, res_full, 1.0, left,
                                                                                          (12, 108)) == 108

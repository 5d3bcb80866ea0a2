"""The study ETA is priced by the probe from the start, then rescaled by what finished runs really took."""
import pytest

from medtransfer.durations import format_duration
from medtransfer.study.eta import StudyEta


def test_probe_prices_before_any_run_finishes():
    eta = StudyEta({"a": 10.0, "b": 30.0, "c": 60.0}, ["a", "b", "c"])
    assert eta.seconds_left() == pytest.approx(100.0)
    assert "probe" in eta.describe() and "1 min 40 s" in eta.describe()


def test_finished_runs_rescale_what_is_left():
    eta = StudyEta({"a": 10.0, "b": 30.0, "c": 60.0}, ["a", "b", "c"])
    eta.finished("a", 30.0)            # this machine is 3x slower than the probe said
    assert eta.seconds_left() == pytest.approx(3 * 90.0)
    assert "measured" in eta.describe()


def test_skipped_runs_leave_the_estimate_without_calibrating_it():
    eta = StudyEta({"a": 10.0, "b": 30.0}, ["a", "b"])
    eta.finished("a", 0.0)             # skipped: took no time, says nothing about speed
    assert eta.seconds_left() == pytest.approx(30.0) and not eta.calibrated


def test_parallel_runs_divide_and_unpriced_runs_are_named():
    eta = StudyEta({"a": 40.0, "b": 40.0}, ["a", "b", "x"], parallel=2)
    assert eta.seconds_left() == pytest.approx(40.0)
    assert "1 run(s) not priced" in eta.describe()
    assert StudyEta({}, ["x"]).describe() == "ETA unknown"


def test_format_duration():
    assert [format_duration(s) for s in (5, 65, 3725, float("nan"), None)] == ["5 s", "1 min 05 s", "1 h 02 min", "?", "?"]


def test_estimate_prices_every_run_it_counts(tmp_path):
    from medtransfer.study import plan_study
    from medtransfer.study.dryrun import estimate_time

    from test_study_runner import write_spec
    plan = plan_study(write_spec(tmp_path))
    est = estimate_time(plan, tmp_path, step_timer=lambda arch, size, device, batch: 0.01)
    assert len(est.per_run) == est.runs_estimated
    assert sum(est.per_run.values()) == pytest.approx(est.seconds)
    by_n = {}
    for run in plan.runs:
        by_n.setdefault(run.config.train.n_train, set()).add(est.per_run[run.run_id])
    assert max(by_n[50]) < min(by_n[200])   # a bigger N is priced higher


def test_estimate_times_each_runs_batch_and_prices_only_the_validation_images_it_scores(tmp_path):
    """The probe runs at the runs' own batch (per-image cost falls with it), and data.val_size=proportional
    runs validate on N/7 images each round, not on the whole validation split."""
    import json

    from medtransfer.budget import budget_of
    from medtransfer.study import plan_study
    from medtransfer.study.dryrun import estimate_time

    from test_study_runner import SPEC, write_spec
    base = json.loads(json.dumps(SPEC["base"]))
    base["train"]["batch_size"] = 64
    base["train"]["selection"] = "holdout"   # this prices validation images; N = 50 would cross-validate under auto
    batches = []

    def timer(arch, size, device, batch):
        batches.append(batch)
        return 0.01

    fixed_plan = plan_study(write_spec(tmp_path, base=base))
    fixed = estimate_time(fixed_plan, tmp_path, step_timer=timer)
    assert sorted(batches) == [50, 64]   # N = 50 trains in batches of 50; N = 200 and the source in 64s
    base["data"]["val_size"] = "proportional"
    prop_plan = plan_study(write_spec(tmp_path, base=base))
    prop = estimate_time(prop_plan, tmp_path, step_timer=timer)

    def n50(plan, est):
        return {est.per_run[r.run_id] for r in plan.runs if r.config.train.n_train == 50}

    rounds = budget_of(50, fixed_plan.runs[0].config.train).rounds
    # pneumoniamnist's validation split has 524 images; N = 50 validates on ceil(50 x 0.1 / 0.7) = 8 of them
    (fixed_s,), (prop_s,) = n50(fixed_plan, fixed), n50(prop_plan, prop)
    assert fixed_s - prop_s == pytest.approx((524 - 8) * rounds / 3 * 0.01)

"""The study ETA is priced by the probe from the start, then rescaled by what finished runs really took."""
import pytest

from medtransfer.study.eta import StudyEta, format_duration


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
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5 s", "1 min 05 s", "1 h 02 min"]


def test_estimate_prices_every_run_it_counts(tmp_path):
    from medtransfer.study import plan_study
    from medtransfer.study.dryrun import estimate_time

    from test_study_runner import write_spec
    plan = plan_study(write_spec(tmp_path))
    est = estimate_time(plan, tmp_path, step_timer=lambda arch, size, device: 0.01)
    assert len(est["per_run"]) == est["runs_estimated"]
    assert sum(est["per_run"].values()) == pytest.approx(est["seconds"])
    by_n = {}
    for run in plan.runs:
        by_n.setdefault(run.config.train.n_train, set()).add(est["per_run"][run.run_id])
    assert max(by_n[50]) < min(by_n[200])   # a bigger N is priced higher

"""The Ray executor on a local CPU instance gives the same run ids and metrics as the local one."""
import sqlite3

import pytest

ray = pytest.importorskip("ray")

import test_study_runner as fakes  # noqa: E402  (the fake run function lives with the runner tests)
from medtransfer.study import StudyOptions, run_study  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One small local instance for the module: the test module's fakes travel by value to its workers."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(fakes)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(fakes)


def results(out):
    with sqlite3.connect(out / "results.sqlite") as db:
        return {row[0]: row[1:] for row in db.execute("SELECT run_id, status, test_auroc, val_auroc, reason FROM runs")}


def test_ray_matches_local_on_a_tiny_grid(tmp_path, local_ray):
    spec = fakes.write_spec(tmp_path, grid={"model.init": ["scratch", "source:chest", "imagenet"],
                                            "train.n_train": [50, 200], "train.seed": [0, 1]})
    kw = dict(data_root=tmp_path, run_fn=fakes.fake_run, probe=False)
    local = run_study(spec, tmp_path / "local", StudyOptions(overrides=("train.threads=1",), **kw))  # Ray's share
    on_ray = run_study(spec, tmp_path / "ray", StudyOptions(executor="ray", **kw))
    assert local.counts == on_ray.counts == {"done": 9, "failed": 0, "skipped": 4, "pending": 0}
    assert results(tmp_path / "local") == results(tmp_path / "ray")
    assert ray.is_initialized()  # an instance the caller started is left running

"""The study runner and store with a fake run function: resume, retries, skips, kill -9 safety.

The fake writes a run folder the way ``train_run`` does (metrics.json last, atomically) and
derives its AUROC from the config, so two executions of the same run agree exactly.
"""
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medtransfer.errors import TrainingDiverged, WeightsUnavailable
from medtransfer.kinds import InitKind
from medtransfer.run_folder import RunMetrics
from medtransfer.study import Store, StudyOptions, plan_study, run_study, study_status
from medtransfer.study.executors import Job, run_one

TESTS = Path(__file__).resolve().parent
WEIGHTS_HINT = "place resnet18-f37072fd.pth in ~/.cache/torch/hub/checkpoints"


def fake_run(cfg, out, data_root, *, overwrite=False, echo=True, progress=True):
    """Stands in for train_run: imagenet -> WeightsUnavailable, lr 0.666 -> diverged, else metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    if cfg.model.init.kind is InitKind.IMAGENET:
        raise WeightsUnavailable(f"ImageNet weights for {cfg.model.arch} are not on disk: {WEIGHTS_HINT}")
    if cfg.train.lr == 0.666:
        raise TrainingDiverged("loss became NaN at epoch 1")
    if cfg.model.init.kind is InitKind.CHECKPOINT:
        assert cfg.model.init.path.is_file(), cfg.model.init
    time.sleep(float(os.environ.get("FAKE_RUN_SECONDS", "0")))
    tree = cfg.model_dump(mode="json")
    if cfg.model.init.kind is InitKind.CHECKPOINT:  # same source folder in another STUDY_DIR = same result
        tree["model"]["init"] = cfg.model.init.path.parent.name
    digest = int(hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest(), 16)
    auroc = 0.5 + (digest % 1000) / 2000
    n = 100 if cfg.train.n_train == "all" else cfg.train.n_train
    block = {"auroc_macro": auroc, "auprc_macro": auroc, "auroc": {"Pneumonia": auroc}, "auprc": {"Pneumonia": auroc},
             "n_images": 10, "undefined": {}}
    metrics = {"task_kind": cfg.task.kind, "label_names": ["Pneumonia"], "val": block, "test": block,
               "n_train_images": n, "n_train_patients": n, "epochs_run": 1, "best_epoch": 1, "seconds": 0.01}
    (out / "model.safetensors").write_bytes(b"fake weights")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics))
    os.replace(tmp, out / "metrics.json")
    return metrics


def fake_run_lr_fails(cfg, out, data_root, **kw):
    if cfg.train.lr == 0.01:
        raise TrainingDiverged("loss became NaN at epoch 2")
    return fake_run(cfg, out, data_root, **kw)


def fake_run_source_fails(cfg, out, data_root, **kw):
    if cfg.data.source == "nih14":
        raise RuntimeError("corrupt PNG")
    return fake_run(cfg, out, data_root, **kw)


SPEC = {
    "name": "tiny",
    "base": {"data": {"source": "medmnist", "name": "pneumoniamnist", "split": "given"}, "task": {"kind": "binary"},
             "image_size": 28, "model": {"arch": "resnet18", "init": "scratch"}, "train": {"epochs": 1, "min_steps": 0}},
    "sources": {"chest": {"data": {"source": "nih14", "path": "nih14-mini"}, "task": {"kind": "multilabel"},
                          "model": {"init": "scratch"}}},
    "grid": {"model.init": ["scratch", "source:chest"], "train.n_train": [50, 200], "train.seed": [0, 1, 2]},
}


def write_spec(tmp_path, **changes) -> Path:
    tree = json.loads(json.dumps(SPEC))
    tree.update(changes)
    path = tmp_path / "tiny-study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def run(spec, out, fn=fake_run, **kw):
    return run_study(spec, out, StudyOptions(data_root=out.parent, run_fn=fn, probe=False, **kw))


def db_rows(out) -> list[dict]:
    if not (out / "results.sqlite").is_file():
        return []
    with sqlite3.connect(out / "results.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs")]


def test_run_resume_and_store(tmp_path):
    spec, out = write_spec(tmp_path), tmp_path / "S"
    summary = run(spec, out)
    assert summary.total == 13 and summary.counts["done"] == 13 and summary.ran == 13
    rows = db_rows(out)
    assert len(rows) == 13 and len({r["run_id"] for r in rows}) == 13
    assert {r["role"] for r in rows} == {"source", "grid"}
    grid = [r for r in rows if r["role"] == "grid"]
    assert all((out / r["run_dir"] / "metrics.json").is_file() for r in rows)
    kept = {r["role"] for r in rows if (out / r["run_dir"] / "model.safetensors").is_file()}
    assert kept == {"source"}  # grid weights are dropped unless keep_weights: true
    assert all(r["test_auroc"] is not None and r["config_json"] and r["n_train_images"] for r in grid)
    assert {r["recipe"] for r in grid} == {"scratch / full / one_cycle", "chest / full / one_cycle"}
    assert (out / "study.yaml").read_text() == spec.read_text()
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM per_class WHERE split='test'").fetchone()[0] == 13
    before = {r["run_id"]: r["finished_at"] for r in rows}
    again = run(spec, out)
    assert again.ran == 0 and again.counts["done"] == 13
    assert {r["run_id"]: r["finished_at"] for r in db_rows(out)} == before
    status = study_status(out)
    assert "13 runs: 13 done, 0 failed, 0 skipped, 0 pending" in status
    assert "train.n_train: 50 6/6, 200 6/6" in status


def test_weights_unavailable_is_skipped_with_the_file_to_place(tmp_path):
    spec, out = write_spec(tmp_path, grid={"model.init": ["scratch", "imagenet"], "train.seed": [0]}), tmp_path / "S"
    summary = run(spec, out)
    assert summary.counts == {"done": 1, "failed": 0, "skipped": 1, "pending": 0}
    skipped = [r for r in db_rows(out) if r["status"] == "skipped"]
    assert WEIGHTS_HINT in skipped[0]["reason"]
    assert "skipped (1)" in study_status(out)
    assert not [r for r in db_rows(out) if r["role"] == "source"]  # no grid run needs the source: not trained


def test_failed_runs_rerun_only_with_retry_failed(tmp_path):
    spec = write_spec(tmp_path, grid={"train.lr": [0.001, 0.01], "train.seed": [0, 1]})
    out = tmp_path / "S"
    first = run(spec, out, fn=fake_run_lr_fails)
    assert first.counts["failed"] == 2 and first.counts["done"] == 2
    failed = {r["run_id"]: r for r in db_rows(out) if r["status"] == "failed"}
    assert all("NaN" in r["reason"] for r in failed.values())
    assert run(spec, out).ran == 0  # the fixed run function is not even called without --retry-failed
    retried = run(spec, out, retry_failed=True)
    assert retried.ran == 2 and retried.counts["done"] == 4
    assert len(db_rows(out)) == 4


def test_failed_source_skips_the_runs_that_need_it_and_the_study_goes_on(tmp_path):
    out = tmp_path / "S"
    summary = run(write_spec(tmp_path), out, fn=fake_run_source_fails)
    assert summary.counts == {"done": 6, "failed": 1, "skipped": 6, "pending": 0}
    reasons = {r["reason"] for r in db_rows(out) if r["status"] == "skipped"}
    assert reasons == {"source chest failed: RuntimeError: corrupt PNG"}
    fixed = run(write_spec(tmp_path), out, retry_failed=True)
    assert fixed.counts["done"] == 13


def test_run_one_turns_errors_into_outcomes(tmp_path):
    cfg = plan_study(write_spec(tmp_path)).runs[0].config
    job = Job("x", cfg.model_copy(update={}), tmp_path / "r", tmp_path)
    assert run_one(job, fake_run).status == "done"

    def no_metrics(cfg, out, data_root, **kw):
        return {}

    outcome = run_one(job, no_metrics)
    assert outcome.status == "failed" and "metrics.json is missing" in outcome.reason


def test_metrics_json_without_a_row_is_adopted_not_retrained(tmp_path):
    spec, out = write_spec(tmp_path), tmp_path / "S"
    run(spec, out)
    with sqlite3.connect(out / "results.sqlite") as db:
        victim = db.execute("SELECT run_id, finished_at FROM runs WHERE role='grid' LIMIT 1").fetchone()
        db.execute("DELETE FROM runs WHERE run_id=?", (victim[0],))
    assert run(spec, out).ran == 0
    assert {r["run_id"] for r in db_rows(out)} >= {victim[0]}


def test_local_workers_match_sequential(tmp_path):
    spec = write_spec(tmp_path, sources={}, grid={"train.n_train": [50, 200], "train.seed": [0, 1]},
                      keep_weights=True)
    seq, par, default = tmp_path / "seq", tmp_path / "par", tmp_path / "default"
    share = max(1, (os.cpu_count() or 1) // 2)
    run(spec, seq, overrides=(f"train.threads={share}",))
    run(spec, par, workers=2)
    run(spec, default)
    assert all((par / r["run_dir"] / "model.safetensors").is_file() for r in db_rows(par))
    pick = lambda out: {r["run_id"]: r["test_auroc"] for r in db_rows(out)}  # noqa: E731
    # the thread count is part of the config: --workers 2 runs equal sequential runs with the same threads ...
    assert pick(seq) == pick(par) and len(pick(seq)) == 4
    assert all(json.loads(r["config_json"])["train"]["threads"] == share for r in db_rows(par))
    # ... and are other run ids than runs with torch's default threads, so a resumed study never mixes them
    assert not set(pick(par)) & set(pick(default))


def test_dry_run_counts_and_estimate(tmp_path, capsys):
    spec = write_spec(tmp_path)
    summary = run_study(spec, None, StudyOptions(dry_run=True, probe=False))
    assert "total: 13 runs (12 grid + 1 sources)" in summary.text
    assert "train.seed (3 values): 0: 4, 1: 4, 2: 4" in summary.text
    from medtransfer.study.dryrun import describe_plan, estimate_time

    plan = plan_study(spec)
    est = estimate_time(plan, tmp_path, step_timer=lambda arch, size, device, batch: 0.01)
    assert est.runs_estimated == 13  # the N=all source's size comes from the demo bundle's nih14-mini
    spec.write_text(spec.read_text().replace("nih14-mini", "nih14-elsewhere"))
    est = estimate_time(plan_study(spec), tmp_path, step_timer=lambda arch, size, device, batch: 0.01)
    assert est.runs_estimated == 12  # a source with no data anywhere: its N=all run is left out
    assert "estimated compute" in describe_plan(plan, None, est, parallel=2)


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_study_runner import fake_run
from medtransfer.study import StudyOptions, run_study
run_study({spec!r}, {out!r}, StudyOptions(data_root={root!r}, run_fn=fake_run, probe=False))
"""


def test_sigkill_mid_study_then_resume_equals_an_uninterrupted_run(tmp_path):
    spec = write_spec(tmp_path, grid={"model.init": ["scratch", "source:chest"], "train.n_train": [50, 200],
                                      "train.seed": [0, 1, 2, 3]})
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=str(TESTS), spec=str(spec), out=str(out), root=str(tmp_path))
    env = dict(os.environ, FAKE_RUN_SECONDS="0.4")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if sum(r["status"] == "done" for r in db_rows(out)) >= 4:
                break
        except sqlite3.OperationalError:  # the store is not created yet
            pass
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["run_id"]: r["finished_at"] for r in db_rows(out)}
    assert 4 <= len(before) < 17
    resumed = run(spec, out)
    assert resumed.ran <= 17 - len(before)
    rows = db_rows(out)
    assert len(rows) == len({r["run_id"] for r in rows}) == 17
    assert all(r["status"] == "done" for r in rows)
    assert all(r["finished_at"] == before[r["run_id"]] for r in rows if r["run_id"] in before)
    clean = tmp_path / "clean"
    run(spec, clean)
    assert {r["run_id"]: r["test_auroc"] for r in db_rows(clean)} == {r["run_id"]: r["test_auroc"] for r in rows}


def test_store_upsert_never_duplicates(tmp_path):
    plan = plan_study(write_spec(tmp_path))
    store = Store(tmp_path / "results.sqlite")
    run0 = plan.runs[0]
    store.record_failed(run0, "boom")
    store.record_skipped(run0, "later")
    store.record_done(run0, RunMetrics.from_json({"test": {"auroc_macro": 0.7, "auroc": {"a": 0.7}}}), "t0", "t1", 1.0)
    assert store.counts() == {"done": 1}
    assert len(store.rows()) == 1 and store.rows()[0]["test_auroc"] == 0.7
    assert [r["label"] for r in store.per_class(run0.run_id)] == ["a"]
    store.record_failed(run0, "again")
    assert store.per_class(run0.run_id) == [] and store.done_ids() == set()


def test_dry_run_of_the_paper_grid_prints_its_full_size():
    summary = run_study(TESTS.parent / "examples" / "paper-nih14.yaml", None, StudyOptions(dry_run=True, probe=False))
    assert "total: 16874 runs (16800 grid + 70 radiomics + 4 sources)" in str(summary)
    for axis in ("train.lr_policy (3 values): constant", "cyclic", "train.discriminative (2 values)",
                 "model.dropout (2 values)", "baseline radiomics"):
        assert axis in str(summary), axis


def test_dry_run_names_the_n_above_the_train_pool(tmp_path):
    """nih14-mini's train split holds about 700 images: N = 5000 is bound to fail, and the dry run says so."""
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {data: {source: nih14, path: nih14-mini}, task: {kind: multilabel}, image_size: 16}\n"
                    "grid: {train.n_train: [50, 5000, all], train.seed: [0, 1]}\n")
    text = str(run_study(spec, None, StudyOptions(dry_run=True, probe=False, data_root=tmp_path)))
    lines = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "train.n_train=5000 is above the" in lines[0] and "2 run(s) bound to fail" in lines[0]


@pytest.mark.parametrize("kw, needle", [
    ({"executor": "slurm"}, "--executor must be local or ray"),
    ({"executor": "ray", "workers": 2}, "--workers applies to --executor local"),
    ({"ray_address": "auto"}, "--ray-address needs --executor ray"),
])
def test_bad_executor_arguments_fail_before_anything_runs(tmp_path, kw, needle):
    from medtransfer.errors import MedtransferError

    with pytest.raises(MedtransferError, match=needle):
        run(write_spec(tmp_path), tmp_path / "S", **kw)
    assert not (tmp_path / "S").exists()


def test_missing_datasets_fail_fast_naming_every_file(tmp_path):
    from medtransfer.errors import DataError

    spec = write_spec(tmp_path)   # datasets that are neither under tmp_path nor in the demo bundle
    spec.write_text(spec.read_text().replace("nih14-mini", "nih14-big").replace("pneumoniamnist", "breastmnist"))
    with pytest.raises(DataError, match="source chest data .*nih14-big.*; grid data .*breastmnist.npz"):
        run(spec, tmp_path / "S", check_data=True)
    assert not (tmp_path / "S").exists()


def test_a_new_executor_is_one_registered_class(tmp_path):
    """docs/architecture.md: an executor is one ExecutorKind subclass in study/executors.py; the study asks it
    for its flags, threads and parallelism instead of comparing names (here a test-only one, removed after)."""
    from medtransfer.errors import MedtransferError
    from medtransfer.study import executors

    @executors.register_executor("in-order")
    class InOrder(executors.ExecutorKind):
        @classmethod
        def from_options(cls, options):
            return executors.LocalExecutor(options.run_fn, 1)

        @classmethod
        def parallel_runs(cls, options):
            return 3

    try:
        assert "in-order" in executors.executor_names()
        assert executors.parallel_runs("in-order", executors.ExecutorOptions()) == 3
        with pytest.raises(MedtransferError, match="--workers applies to --executor local; in-order"):
            executors.check_executor_options("in-order", executors.ExecutorOptions(workers=2))
        spec = write_spec(tmp_path)
        summary = run(spec, tmp_path / "study", executor="in-order")
        assert summary.counts["done"] == summary.total > 0
    finally:
        executors.EXECUTORS.pop("in-order", None)

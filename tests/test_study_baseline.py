"""``baselines: [radiomics]`` in a study: one baseline run per (task, N, seed), stable ids, resumable.

Uses the fake run function of the runner tests (extended with ``method=``), plus one small real
study (tiny CSV, 1-epoch CNNs, stand-in features) that checks the pairing on test images.
"""
import json
import sqlite3

import pandas as pd
import pytest
import yaml

import test_study_runner as fakes
from medtransfer.study import StudyOptions, plan_study, run_study, study_status
from medtransfer.study.grid import RADIOMICS_RECIPE

# The ids of test_study_runner.SPEC's grid (seeds 0, 1). Adding the `radiomics` section did not change them;
# train.min_steps (2026-12-02, hashed even at 0: it changes what a small-N run trains) did, on purpose, and so
# did train.selection (issue 23: its default `auto` cross-validates small N; the source, holdout, kept its id).
PRE_RADIOMICS_IDS = {"41774af1e9a4df6a", "571226f5b98d0d0e", "5cac03bbbb81f25c", "5fee8708fb88066c",
                     "637fffa1b88a8fe3", "6af442dc6f893c3f", "d2ccf5224e344dbc", "d64fe062da790678",
                     "e629517277da3936"}
GRID = {"model.init": ["scratch", "source:chest"], "train.n_train": [50, 200], "train.seed": [0, 1]}
CALLS = []


def fake_run(cfg, out, data_root, *, method="cnn", **kw):
    """The runner tests' fake, for CNN and baseline runs alike (it records the method it was called with)."""
    CALLS.append(method)
    return fakes.fake_run(cfg, out, data_root, **kw)


def write(tmp_path, name="study.yaml", **changes):
    tree = json.loads(json.dumps(fakes.SPEC))
    tree["grid"] = json.loads(json.dumps(GRID))
    tree["baselines"] = ["radiomics"]
    tree.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def rows(out):
    with sqlite3.connect(out / "results.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs")]


def test_one_radiomics_run_per_n_and_seed_stored_and_resumed(tmp_path):
    spec, out = write(tmp_path), tmp_path / "S"
    CALLS.clear()
    summary = run_study(spec, out, StudyOptions(data_root=tmp_path, run_fn=fake_run, probe=False))
    assert summary.total == 13 and summary.counts["done"] == 13   # 8 CNN + 4 radiomics + 1 source
    assert sorted(CALLS) == ["cnn"] * 9 + ["radiomics"] * 4
    radiomics = [r for r in rows(out) if r["method"] == "radiomics"]
    assert sorted((r["n_train"], r["seed"]) for r in radiomics) == [(50, 0), (50, 1), (200, 0), (200, 1)]
    for r in radiomics:
        assert r["role"] == "grid" and r["recipe"] == RADIOMICS_RECIPE and r["status"] == "done"
        assert r["arch"] is None and r["init"] is None and r["strategy"] is None and r["lr_policy"] is None
        assert r["dropout"] is None and r["test_auroc"] is not None
        assert r["task"] == "pneumoniamnist:binary" and r["run_dir"] == f"runs/{r['run_id']}"
    assert {r["method"] for r in rows(out) if r["role"] == "grid"} == {"cnn", "radiomics"}

    CALLS.clear()
    again = run_study(spec, out, StudyOptions(data_root=tmp_path, run_fn=fake_run, probe=False))
    assert again.ran == 0 and CALLS == [] and len(rows(out)) == 13
    status = study_status(out)
    assert "13 runs: 13 done" in status and "baseline radiomics (done / planned): N=50 2/2, N=200 2/2" in status
    assert "train.n_train: 50 4/4, 200 4/4" in status   # the CNN axes count CNN runs only


def test_dry_run_counts_the_baseline(tmp_path):
    text = run_study(write(tmp_path), None, StudyOptions(dry_run=True, probe=False)).text
    assert "total: 13 runs (8 grid + 4 radiomics + 1 sources)" in text
    assert "baseline radiomics: one run per (task, N, seed): N=50: 2, N=200: 2" in text
    assert "train.seed (2 values): 0: 4, 1: 4" in text


def test_dry_run_estimate_includes_extraction(tmp_path):
    from medtransfer.study.dryrun import estimate_time

    spec = write(tmp_path)   # datasets that are neither under tmp_path nor in the demo bundle
    spec.write_text(spec.read_text().replace("nih14-mini", "nih14-elsewhere").replace("pneumoniamnist", "breastmnist"))
    plan = plan_study(spec)
    est = estimate_time(plan, tmp_path, step_timer=lambda arch, size, device, batch: 0.01,
                        extraction_timer=lambda size, rcfg: 0.05)
    # no data under tmp_path: the split sizes are unknown, so CNN runs at fixed N count, baselines do not
    assert est.runs_estimated == 8 and any("not readable" in n for n in est.notes)


def test_cnn_ids_do_not_depend_on_radiomics_settings_or_on_the_baseline(tmp_path):
    plain = plan_study(write(tmp_path, "a.yaml", baselines=[]))
    with_base = plan_study(write(tmp_path, "b.yaml"))
    tree = json.loads(json.dumps(fakes.SPEC))
    tree["base"]["radiomics"] = {"bin_width": 10, "penalty": "l1", "c_grid": [0.1, 1.0]}
    tuned = plan_study(write(tmp_path, "c.yaml", base=tree["base"]))
    cnn_ids = lambda plan: {r.run_id for r in plan.all_runs if not r.is_baseline}  # noqa: E731
    base_ids = lambda plan: {r.run_id for r in plan.runs if r.is_baseline}  # noqa: E731
    assert cnn_ids(plain) == cnn_ids(with_base) == cnn_ids(tuned) == PRE_RADIOMICS_IDS
    assert len(base_ids(with_base)) == len(base_ids(tuned)) == 4 and not base_ids(with_base) & base_ids(tuned)
    # ... and the baseline's ids do not depend on CNN-only keys
    tree = json.loads(json.dumps(fakes.SPEC))
    tree["base"]["train"].update(epochs=7, lr=0.05)
    tree["base"]["model"].update(arch="densenet121", dropout=0.3)
    other_cnn = plan_study(write(tmp_path, "d.yaml", base=tree["base"], grid=dict(GRID, **{"train.strategy": ["full", "gradual"]})))
    assert base_ids(other_cnn) == base_ids(with_base)


def test_baseline_follows_excludes_and_radiomics_axes(tmp_path):
    spec = write(tmp_path, grid=dict(GRID, **{"radiomics.bin_width": [10, 25]}),
                 exclude=[{"train.n_train": 200, "train.seed": 1}])
    plan = plan_study(spec)
    baselines = [r for r in plan.runs if r.is_baseline]
    cnn = [r for r in plan.runs if not r.is_baseline]
    assert len(cnn) == 6                      # the radiomics axis does not multiply the CNN runs
    assert len(baselines) == 6                # 3 (N, seed) pairs x 2 bin widths
    assert {r.recipe for r in baselines} == {f"{RADIOMICS_RECIPE} / bin_width 10", f"{RADIOMICS_RECIPE} / bin_width 25"}
    assert {r.recipe for r in cnn} == {"scratch / full / one_cycle", "chest / full / one_cycle"}
    assert not any(r.config.train.n_train == 200 and r.config.train.seed == 1 for r in baselines)
    text = run_study(spec, None, StudyOptions(dry_run=True, probe=False)).text
    assert "radiomics.bin_width (2 values): 10: 3, 25: 3" in text and "train.seed (2 values): 0: 4, 1: 2" in text


def test_real_study_pairs_radiomics_and_cnn_on_the_same_test_images(tmp_path, monkeypatch):
    """Real run functions (1-epoch CNNs; stand-in features so it stays fast) through the default dispatcher."""
    import test_radiomics_baseline_run as rb
    from medtransfer.radiomics import baseline_run as radiomics_run_module

    root, config = rb.make_tiny_csv(tmp_path)
    monkeypatch.setattr(radiomics_run_module, "default_feature_fn", lambda: rb.histogram_features)
    base = yaml.safe_load(config.read_text())
    base["data"]["path"] = str(root / "labels.csv")
    spec = tmp_path / "real.yaml"
    spec.write_text(yaml.safe_dump({"name": "real", "base": base, "baselines": ["radiomics"],
                                    "grid": {"train.n_train": [20], "train.seed": [0]}}))
    out = tmp_path / "S"
    summary = run_study(spec, out, StudyOptions(data_root=root, probe=False))
    assert summary.counts == {"done": 2, "failed": 0, "skipped": 0, "pending": 0}
    by_method = {}
    for r in rows(out):
        by_method.setdefault(r["method"], []).append(r)
        metrics = json.loads(r["metrics_json"])
        assert metrics.get("method", "cnn") == r["method"]
    assert len(by_method["radiomics"]) == len(by_method["cnn"]) == 1
    test_ids = {tuple(pd.read_csv(out / r["run_dir"] / "predictions_test.csv")["image_id"]) for r in rows(out)}
    assert len(test_ids) == 1
    assert all(not (out / r["run_dir"] / "model.safetensors").exists() for r in rows(out))


@pytest.mark.parametrize("baselines, needle", [(["radiomics", "radiomics"], "listed twice"),
                                               (["lasso"], "unknown baseline 'lasso'")])
def test_bad_baselines_are_refused(tmp_path, baselines, needle):
    from medtransfer.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        plan_study(write(tmp_path, baselines=baselines))

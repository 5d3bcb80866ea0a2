"""study best: the recipe is chosen on validation (never test), and the result is a run folder predict can use."""
import json

import pandas as pd
import pytest
import yaml

from medtransfer.cli import main
from medtransfer.config import config_from_dict
from medtransfer.errors import MedtransferError
from medtransfer.kinds import RunRole
from medtransfer.run_folder import RunFolder, RunMetrics
from medtransfer.study.best import export_best, parse_n, retrain_config, select_best
from medtransfer.study.grid import PlannedRun, task_label
from medtransfer.study.store import Store
from synthetic import write_labelled_pngs


def row(run_id, recipe, seed, val, test, n=200, task="t:binary", role="grid", method="cnn", status="done"):
    return dict(run_id=run_id, role=role, method=method, task=task, arch="resnet18", recipe=recipe, n_train=n,
                seed=seed, status=status, val_auroc=val, test_auroc=test, run_dir=f"runs/{run_id}", config_json="{}")


VAL_WINS = [row(f"a{s}", "A", s, v, t) for s, v, t in ((0, 0.80, 0.60), (1, 0.83, 0.61), (2, 0.81, 0.62))]
TEST_WINS = [row(f"b{s}", "B", s, v, t) for s, v, t in ((0, 0.78, 0.95), (1, 0.79, 0.96), (2, 0.77, 0.97))]


def test_the_recipe_with_the_best_mean_validation_auroc_wins_even_when_test_disagrees():
    best = select_best(VAL_WINS + TEST_WINS)
    assert best.recipe == "A" and best.n_train == 200 and best.n_candidates == 2
    assert best.mean_val_auroc == pytest.approx(0.8133, abs=1e-4)
    assert best.best_seed.seed == 1 and [s.seed for s in best.seeds] == [0, 1, 2]


def test_only_done_cnn_grid_runs_of_the_current_plan_count():
    noise = [row("old", "OLD", 0, 0.99, 0.99),                                  # an earlier spec version
             row("rad", "radiomics + LR", 0, 0.99, 0.99, method="radiomics"),
             row("src", "source chest", 0, 0.99, 0.99, role="source"),
             row("bad", "C", 0, None, None, status="failed")]
    plan = {r["run_id"] for r in VAL_WINS + TEST_WINS} | {"rad", "src", "bad"}
    assert select_best(VAL_WINS + TEST_WINS + noise, plan_ids=plan).recipe == "A"
    assert select_best(VAL_WINS + TEST_WINS + noise, plan_ids=None).recipe == "OLD"   # no plan recorded: all rows


def test_n_defaults_to_the_largest_and_a_missing_n_lists_the_ones_there():
    big = [row("c0", "C", 0, 0.70, 0.9, n=None)]   # n_train: all
    assert select_best(VAL_WINS + big).n_train == "all"
    assert select_best(VAL_WINS + big, n=200).recipe == "A"
    with pytest.raises(MedtransferError, match=r"--n 50: no done CNN run at that N .*N with done runs: 200, all"):
        select_best(VAL_WINS + big, n=50)
    assert parse_n("all") == "all" and parse_n("800") == 800 and parse_n(None) is None
    with pytest.raises(MedtransferError, match="positive integer or 'all'"):
        parse_n("lots")


def test_several_tasks_need_task():
    other = [row("k0", "A", 0, 0.9, 0.9, task="knee:multiclass")]
    with pytest.raises(MedtransferError, match=r"2 tasks .*pass --task"):
        select_best(VAL_WINS + other)
    assert select_best(VAL_WINS + other, task="knee:multiclass").task == "knee:multiclass"


# ---------------------------------------------------------------- a real store, retrain and copy

TINY = {"data": {"source": "csv", "path": "labels.csv", "image_column": "path", "patient_column": "patient"},
        "task": {"kind": "binary", "label_column": "finding"}, "image_size": 24,
        "model": {"arch": "resnet18", "init": "scratch"},
        "train": {"epochs": 1, "min_steps": 0, "batch_size": 8, "lr_policy": "constant", "lr": 0.001, "n_train": "all"}}


def planned(run_id, recipe, lr, seed, init="scratch", role=RunRole.GRID, run_dir=None):
    tree = json.loads(json.dumps(TINY))
    tree["train"].update(lr=lr, seed=seed)
    tree["model"]["init"] = init
    cfg = config_from_dict(tree)
    return PlannedRun(run_id=run_id, role=role, config=cfg, task=task_label(cfg), recipe=recipe,
                      run_dir=run_dir or f"runs/{run_id}", source="chest" if role is RunRole.SOURCE else None)


def record(store, run, val, test):
    store.record_done(run, RunMetrics.from_json({"val": {"auroc_macro": val}, "test": {"auroc_macro": test}}),
                      "t0", "t1", 1.0)


@pytest.fixture
def study(tmp_path):
    """A study store whose val and test disagree: 'lr 0.003' wins on validation, 'lr 0.001' on test.
    No run folder holds weights (keep_weights: false)."""
    write_labelled_pngs(tmp_path)
    (tmp_path / "study").mkdir()
    store = Store(tmp_path / "study" / "results.sqlite")
    runs = {"fast0": ("lr 0.003", 0.003, 0, 0.90, 0.50), "fast1": ("lr 0.003", 0.003, 1, 0.95, 0.55),
            "slow0": ("lr 0.001", 0.001, 0, 0.70, 0.99), "slow1": ("lr 0.001", 0.001, 1, 0.75, 0.98)}
    for run_id, (recipe, lr, seed, val, test) in runs.items():
        record(store, planned(run_id, recipe, lr, seed), val, test)
    store.record_plan(list(runs))
    return tmp_path


def test_best_retrains_when_weights_were_not_kept_and_predict_uses_the_result(study, capsys):
    out = study / "best"
    code = main(["study", "best", str(study / "study"), "--out", str(out), "--data-root", str(study), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "lr 0.003" in printed and "mean validation AUROC 0.9250 over 2 seed(s)" in printed
    assert "seed 1: retrained runs/fast1" in printed and f"predict --run {out}" in printed
    cfg = config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    assert cfg.train.lr == 0.003 and cfg.train.seed == 1
    assert RunFolder(out).has_weights and RunFolder(out).threshold_path.is_file()
    code = main(["predict", "--run", str(out), str(study / "img" / "0.png"), str(study / "img" / "1.png"),
                 "--out", str(study / "p.csv")])
    assert code == 0
    frame = pd.read_csv(study / "p.csv")
    assert list(frame.columns[-3:]) == ["predicted_finding", "threshold_finding", "criterion"] and len(frame) == 2


def test_best_copies_a_kept_run_folder_unless_told_to_retrain(study):
    folder = study / "study" / "runs" / "fast1"
    folder.mkdir(parents=True)
    for name, text in (("config.yaml", "x"), ("model.safetensors", "w"), ("threshold.json", "{}"),
                       ("metrics.json", "{}")):
        (folder / name).write_text(text)
    result = export_best(study / "study", study / "copy")
    assert result.action == "copied" and result.seed.run_id == "fast1"
    assert sorted(p.name for p in (study / "copy").iterdir()) == sorted(p.name for p in folder.iterdir())
    assert (study / "copy" / "model.safetensors").read_text() == "w"
    with pytest.raises(MedtransferError, match="--overwrite"):
        export_best(study / "study", study / "copy")
    trained = []

    def fake_train(cfg, out, data_root, **kw):
        trained.append((cfg.train.lr, cfg.train.seed))
        return RunMetrics.from_json({"val": {"auroc_macro": 0.9}})

    assert export_best(study / "study", study / "again", retrain=True, train=fake_train).action == "retrained"
    assert trained == [(0.003, 1)]


def test_a_source_init_is_retrained_from_the_study_source_weights(tmp_path):
    store = Store(tmp_path / "results.sqlite")
    source = planned("src", "source chest", 0.002, 0, role=RunRole.SOURCE, run_dir="sources/chest")
    grid = planned("g0", "chest / full / constant", 0.001, 0, init="source:chest")
    record(store, source, 0.8, 0.8)
    record(store, grid, 0.8, 0.8)
    store.record_plan(["src", "g0"])
    best = select_best(store.rows(), store.current_plan()[1])
    with pytest.raises(MedtransferError, match="source chest lost its weights"):
        retrain_config(best.best_seed, store.rows(), None, tmp_path)
    weights = RunFolder(tmp_path / "sources" / "chest").weights_path
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    cfg = retrain_config(best.best_seed, store.rows(), None, tmp_path)
    assert str(cfg.model.init) == f"checkpoint:{weights.resolve()}"


def test_not_a_study_folder_is_one_line(tmp_path, capsys):
    code = main(["study", "best", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "results.sqlite not found" in err and len(err.strip().splitlines()) == 1

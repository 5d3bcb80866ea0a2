"""The Python API (issue 24, item 7): ``import medtransfer as mt`` as a notebook uses it.

A tiny synthetic study (24-px PNGs, 1-epoch runs) through ``mt.study.run``, its typed answer and summary,
then ``mt.train`` / ``mt.predict`` on the same data; ``help(mt)`` lists the entry points; importing
medtransfer stays light; ``read_answer`` takes an answer.json with keys it does not know.
"""
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import medtransfer as mt
from medtransfer.errors import MedtransferError
from synthetic import write_labelled_pngs

SRC = Path(__file__).resolve().parents[1] / "src"
SPEC = """
name: api notebook
base:
  data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}
  task: {kind: binary, label_column: finding}
  image_size: 24
  model: {arch: resnet18, init: scratch}
  train: {epochs: 1, min_steps: 0, batch_size: 16, lr_policy: constant, lr: 0.001, augment: false}
grid:
  train.lr: [0.001, 0.01]
  train.seed: [0, 1]
"""
RUN = ("data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}\n"
       "task: {kind: binary, label_column: finding}\n"
       "image_size: 24\n"
       "model: {arch: resnet18, init: scratch}\n"
       "train: {epochs: 1, min_steps: 0, batch_size: 16, lr_policy: constant, lr: 0.01, augment: false}\n")
ENTRY_POINTS = ["load_config", "load_spec", "train", "study", "run", "status", "best", "advise", "predict",
                "read_answer", "summary", "report", "Answer"]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The cells of docs/python-api.md on synthetic data: a study run with its report, then its answer."""
    root = tmp_path_factory.mktemp("notebook")
    write_labelled_pngs(root)
    (root / "study.yaml").write_text(SPEC)
    shown = io.StringIO()
    summary = mt.study.run(root / "study.yaml", root / "study", data_root=root,
                           console=Console(file=shown, width=120))
    return root, summary, shown.getvalue()


def test_study_run_runs_the_grid_and_writes_the_report(notebook):
    root, summary, shown = notebook
    assert summary.counts["done"] == 4 and summary.counts["failed"] == 0
    assert summary.report == root / "study" / "report.html" and summary.report.is_file()
    assert {"answer.json", "summary.csv", "learning_curves.png"} <= {p.name for p in (root / "study").iterdir()}
    assert "4 runs: 4 done" in str(summary) and "done" in shown


def test_the_typed_answer_reads_like_the_report(notebook):
    root, _, _ = notebook
    answer = mt.read_answer(root / "study")
    assert isinstance(answer, mt.Answer) and answer.study == "api notebook"
    panel = answer.panel()                       # the study's only (task, arch)
    assert panel.task_kind == "binary" and panel.metric == "test AUROC" and panel.arch == "resnet18"
    best = panel.best_at_largest_n
    assert best.n_seeds == 2 and best.recipe.startswith("scratch / full / constant")
    assert 0.0 <= best.ci_low <= best.test_auroc <= best.ci_high <= 1.0
    assert best.recipe in best.within_noise
    table = mt.summary(root / "study")
    assert best.N == table.loc[table["recipe"] == best.recipe, "N"].max() and best.n_patients <= best.N
    assert answer.raw["panels"][0]["best_recipe_per_n"][-1]["recipe"] == best.recipe   # the raw dict is all there
    with pytest.raises(Exception):
        answer.study = "changed"                 # frozen


def test_summary_is_a_dataframe_of_the_recipes(notebook):
    root, _, _ = notebook
    table = mt.summary(root / "study")
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert {"recipe", "n_seeds", "test_auroc_mean", "test_auroc_ci_low", "test_auroc_ci_high"} <= set(table.columns)
    assert "4 done" in mt.study.status(root / "study")


def test_train_and_predict_from_python(notebook, tmp_path):
    root, _, _ = notebook
    (tmp_path / "one.yaml").write_text(RUN)
    cfg = mt.load_config(tmp_path / "one.yaml", overrides={"train.seed": 3, "train.lr": 0.001})
    assert cfg.train.seed == 3 and cfg.train.lr == 0.001
    metrics = mt.train(cfg, tmp_path / "run", data_root=root, echo=False)
    assert metrics.task_kind == "binary" and 0.0 <= metrics.auroc("test") <= 1.0
    prediction = mt.predict(tmp_path / "run", [root / "img" / "1.png", root / "img" / "missing.png"], threshold=0.5)
    assert prediction.frame.columns.tolist() == ["image", "score_finding", "predicted_finding", "threshold_finding",
                                                 "criterion"]
    assert [f.reason for f in prediction.failures] == ["file not found"]
    with pytest.raises(MedtransferError, match="not both"):
        mt.predict(tmp_path / "run", [root / "img" / "1.png"], threshold=0.5, sensitivity=0.9)


def test_overrides_are_a_list_of_key_value_strings_or_a_mapping(tmp_path):
    from medtransfer.api import override_pairs

    assert override_pairs(["train.lr=0.01"]) == ["train.lr=0.01"]
    assert override_pairs({"train.lr": 0.01, "model.init": "checkpoint:runs/a", "data.path": Path("x/y.csv")}) == \
        ["train.lr=0.01", 'model.init="checkpoint:runs/a"', 'data.path="x/y.csv"']
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    assert mt.load_spec(spec, overrides={"train.epochs": 2}).base["train"]["epochs"] == 2


def test_a_study_option_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(TypeError, match="'worker'"):
        mt.study.run(tmp_path / "s.yaml", tmp_path / "out", worker=2)


def test_read_answer_keeps_unknown_keys_and_names_a_missing_file(tmp_path):
    with pytest.raises(MedtransferError, match="answer.json not found"):
        mt.read_answer(tmp_path)
    (tmp_path / "answer.json").write_text(json.dumps({
        "study": "s", "panels": [{"task": "t:binary", "arch": "resnet18", "metric": "test AUROC", "new_block": [1],
                                  "best_recipe_per_n": [{"n_train": 50, "N": 50, "recipe": "r", "n_seeds": 3,
                                                         "test_auroc": 0.8, "added_later": True}]}],
        "a_key_from_the_future": {"x": 1}}))
    answer = mt.read_answer(tmp_path)
    assert answer.raw["a_key_from_the_future"] == {"x": 1} and answer.panels[0].raw["new_block"] == [1]
    best = answer.panel("t:binary").best[0]
    assert (best.N, best.test_auroc, best.ci_low, best.raw["added_later"]) == (50, 0.8, None, True)
    (tmp_path / "answer.json").write_text("{not json")
    with pytest.raises(MedtransferError, match="cannot read it as JSON"):
        mt.read_answer(tmp_path)


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_lists_the_entry_points():
    text = _python("import medtransfer as mt; help(mt)")
    missing = [name for name in ENTRY_POINTS if name not in text]
    assert not missing, missing
    assert "mt.study.run(" in text and "docs/python-api.md" in text


def test_importing_medtransfer_imports_nothing_heavy():
    """The API's names are there at ``import medtransfer``; torch, pandas, matplotlib and scikit-learn come
    only with the entry point that needs them (the CLI's ``--help`` stays fast too)."""
    loaded = _python("import sys, medtransfer as mt; mt.study.run; mt.train; "
                     "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'sklearn') if m in sys.modules))")
    assert loaded.strip() == "[]"


def test_api_names_that_are_also_subpackages_stay_the_api_and_still_reach_the_packages():
    """study, train, advise and report are subpackages too: importing one must not turn ``mt.train`` into a
    module (the next call would fail), and ``medtransfer.train.loop`` must still reach the package."""
    import medtransfer.advise.features as features
    import medtransfer.study.executors as executors
    import medtransfer.train.loop as loop

    assert callable(mt.train) and callable(mt.advise) and callable(mt.report) and callable(mt.study.run)
    assert mt.study.StudyOptions is sys.modules["medtransfer.study"].StudyOptions
    assert executors.__name__ == "medtransfer.study.executors" and mt.study.executors is executors
    assert mt.train.loop is loop and mt.advise.features is features
    assert mt.train.__doc__.startswith("Train and test one recipe") and mt.train.__name__ == "train"

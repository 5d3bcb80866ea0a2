"""The report's "CNN vs radiomics" section on a synthetic store with run folders and predictions_test.csv files."""
import math

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medtransfer.evaluate.crossover import crossover
from medtransfer.evaluate.delong import delong_paired, delong_paired_macro
from medtransfer.report import write_report
from medtransfer.report.paired import paired_delong, read_predictions
from medtransfer.runs.scoring import write_predictions
from test_report_study import _row, make_study, tables_under

TASK = "pneumoniamnist:binary"
NIH = "nih14-mini:multilabel"
NS = [50, 100, 200, 400, 800]
SEEDS = [0, 1, 2]
N_TEST = 240
IDS = [f"test/{i}" for i in range(N_TEST)]                 # medmnist-style ids: must never reach the page
NIH_IDS = [f"{i:08d}_000.png" for i in range(N_TEST)]
FINDINGS = ["Effusion", "Pneumonia", "Hernia"]
RNG_Y = np.random.default_rng(0)
Y = (RNG_Y.random(N_TEST) < 0.4).astype(int)
Y_NIH = (RNG_Y.random((N_TEST, 3)) < [0.3, 0.2, 0.05]).astype(int)
SHARED = RNG_Y.normal(size=N_TEST)                          # case difficulty shared by every method


def _strength(method: str, init: str, n: int) -> float:
    if method == "radiomics":
        return 1.1
    return {"scratch": 0.4, "imagenet": 0.8}[init] + 0.35 * math.log2(n / 50)


def _write_run(study, row, ids, y, scores, labels):
    """The predictions file exactly as a CNN or radiomics run writes it."""
    folder = study / row["run_dir"]
    folder.mkdir(parents=True)
    write_predictions(folder / "predictions_test.csv", ids, y, scores, labels, row["task"].split(":")[1])


def _binary_runs(study, seeds=SEEDS, inits=("scratch", "imagenet")):
    rows = []
    for method, init in [("cnn", i) for i in inits] + [("radiomics", None)]:
        for n in NS:
            for seed in seeds:
                rng = np.random.default_rng([n, seed, 0 if init is None else len(init)])
                scores = (Y * _strength(method, init, n) + 0.6 * SHARED + rng.normal(size=N_TEST))[:, None]
                kw = dict(task=TASK, n_train=n, seed=seed, n_train_images=n, test_auroc=roc_auc_score(Y, scores[:, 0]))
                if method == "cnn":
                    kw.update(arch="resnet18", init=init, strategy="full", lr_policy="one_cycle",
                              recipe=f"{init} / full / one_cycle")
                else:
                    kw.update(method="radiomics", recipe="radiomics + LR")
                row = _row(**kw)
                _write_run(study, row, IDS, Y[:, None], scores, ["pneumonia"])
                rows.append(row)
    return rows


def _nih_runs(study):
    rows = []
    for method in ("cnn", "radiomics"):
        for n in (50, 200):
            for seed in SEEDS:
                rng = np.random.default_rng([n, seed, len(method)])
                strength = 1.0 if method == "radiomics" else 0.5 + 0.4 * math.log2(n / 50)
                scores = Y_NIH * strength + 0.5 * SHARED[:, None] + rng.normal(size=(N_TEST, 3))
                macro = np.mean([roc_auc_score(Y_NIH[:, k], scores[:, k]) for k in range(3)])
                kw = dict(task=NIH, n_train=n, seed=seed, n_train_images=n, test_auroc=macro)
                if method == "cnn":
                    kw.update(arch="densenet121", init="imagenet", strategy="full", lr_policy="one_cycle",
                              recipe="imagenet / full / one_cycle")
                else:
                    kw.update(method="radiomics", recipe="radiomics + LR")
                row = _row(**kw)
                _write_run(study, row, NIH_IDS, Y_NIH, scores, FINDINGS)
                rows.append(row)
    return rows


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    study = tmp_path_factory.mktemp("versus")
    rows = _binary_runs(study) + _nih_runs(study)
    # one pair without predictions, one radiomics run that scored only part of the test set
    gone = next(r for r in rows if r["task"] == TASK and r["init"] == "scratch" and r["n_train"] == 50
                and r["seed"] == 0)
    (study / gone["run_dir"] / "predictions_test.csv").unlink()
    part = next(r for r in rows if r["task"] == TASK and r["method"] == "radiomics" and r["n_train"] == 800
                and r["seed"] == 2)
    path = study / part["run_dir"] / "predictions_test.csv"
    pd.read_csv(path).iloc[:200].to_csv(path, index=False)
    make_study(study, rows=rows, per_class=[])
    html = write_report(study).read_text()
    return study, rows, html


def _curve(rows, task, method, init=None):
    sel = [r for r in rows if r["task"] == task and r["method"] == method and (init is None or r["init"] == init)]
    return pd.DataFrame({"N": [float(r["n_train"]) for r in sel], "seed": [r["seed"] for r in sel],
                         "auroc": [r["test_auroc"] for r in sel]})


def _paired_expected(study, rows, init):
    """Per N, CNN minus radiomics by the paired two-level bootstrap, the draws rebuilt here from the prediction
    files (images are the clusters: these files carry no patient ids); an N where a run lacks predictions or
    scored other images is left out (the report keeps its t-interval there)."""
    from medtransfer.evaluate.bootstrap import bootstrap_auroc_samples
    from medtransfer.evaluate.uncertainty import paired_difference_interval

    out = []
    for n in NS:
        sides = []
        for method, want_init in (("cnn", init), ("radiomics", None)):
            runs = sorted((r for r in rows if r["task"] == TASK and r["method"] == method and r["n_train"] == n
                           and (want_init is None or r["init"] == want_init)), key=lambda r: r["seed"])
            sides.append(runs)
        draws = []
        for runs in sides:
            got = []
            for r in runs:
                path = study / r["run_dir"] / "predictions_test.csv"
                frame = pd.read_csv(path) if path.is_file() else None
                if frame is None or len(frame) != N_TEST:
                    break
                got.append(bootstrap_auroc_samples(frame[["true_pneumonia"]].to_numpy(),
                                                   frame[["score_pneumonia"]].to_numpy(), frame["image_id"], 1000, 0))
            draws.append(np.stack(got) if len(got) == len(runs) else None)
        if any(d is None for d in draws):
            continue
        points = [np.array([r["test_auroc"] for r in runs]) for runs in sides]
        d = paired_difference_interval(draws[0], points[0], draws[1], points[1], seed=0)
        out.append({"N": float(n), "diff": float(np.mean(points[0] - points[1])), "ci_low": d.low, "ci_high": d.high})
    return pd.DataFrame(out)


def _fmt(n):
    return f"{int(round(n)):,}"


def test_crossover_table_names_the_bracketing_studied_n_never_an_interpolated_one(built):
    study, rows, html = built
    [table] = tables_under(html, "CNN vs radiomics", "pneumoniamnist:binary — resnet18: crossover")
    assert table[0] == ["CNN initialisation / recipe", "comparable or better from N", "outperforms from N",
                        "seeds paired"]
    by_init = {r[0].split(" ")[0]: r for r in table[1:]}
    assert list(by_init) == ["scratch", "ImageNet"]
    assert "(best CNN recipe)" in by_init["ImageNet"][0] and "(best CNN recipe)" not in by_init["scratch"][0]
    studied = {_fmt(n) for n in NS}
    for cells in by_init.values():
        for col in (1, 2):
            assert "≈" not in cells[col]
            assert cells[col].startswith(("already", "not within", "N = "))
            if cells[col].startswith("N = "):
                first, before = re.findall(r"N = ([\d,]+)", cells[col])
                assert {first, before} <= studied and int(before.replace(",", "")) < int(first.replace(",", ""))
    # scratch is significantly below radiomics at N = 50 (the per-N table): what holds later is bracketed
    assert by_init["scratch"][1].startswith(("N = ", "not within")) and by_init["scratch"][2].startswith("N = ")
    assert "not at N = " in by_init["scratch"][2]
    assert "interpolated linearly in log N" not in html and "paired two-level bootstrap" in html
    assert "two one-sided tests" in html and "Holm" in html and "±0.02" in html


def test_per_n_table_differences_and_delong_p(built):
    study, rows, html = built
    [table] = tables_under(html, "CNN vs radiomics", "pneumoniamnist:binary — resnet18: paired")
    body = [r for r in table[1:] if r[0] == "scratch"]
    assert [r[1] for r in body] == [str(n) for n in NS]
    cnn, base = _curve(rows, TASK, "cnn", "scratch"), _curve(rows, TASK, "radiomics")
    d = cnn.merge(base, on=["N", "seed"]).eval("auroc_x - auroc_y")
    assert body[2][4] == f"{d[cnn.merge(base, on=['N', 'seed'])['N'] == 200].mean():+.3f}"
    # DeLong p of (N=200, seed 1) from the two prediction files, as the report shows it
    run = {(r["method"], r["n_train"], r["seed"]): r for r in rows
           if r["task"] == TASK and r["init"] in (None, "scratch")}
    a = pd.read_csv(study / run[("cnn", 200, 1)]["run_dir"] / "predictions_test.csv")
    b = pd.read_csv(study / run[("radiomics", 200, 1)]["run_dir"] / "predictions_test.csv")
    p = delong_paired(a["true_pneumonia"], a["score_pneumonia"], b["score_pneumonia"])["p_value"]
    cell = body[2][10]
    assert "seed 1: " + ("<0.001" if p < 0.001 else f"{p:.3f}") in cell
    assert body[0][10].startswith("seed 0: —")                       # the pair without predictions
    assert body[4][10].endswith("*")                                  # radiomics seed 2 scored 200 of 240 images
    assert "predictions_test.csv not found (1 run pair)" in html
    assert "only 200 of 240 test images scored by both runs (2 run pairs)" in html   # vs scratch and ImageNet
    verdicts = {r[1]: r[11] for r in body}
    assert verdicts["50"] == "CNN significantly below" and verdicts["800"] == "CNN significantly above"


def test_multilabel_uses_the_macro_delong(built):
    study, rows, html = built
    run = {(r["method"], r["n_train"], r["seed"]): r for r in rows if r["task"] == NIH}
    got = paired_delong(study, run[("cnn", 200, 0)]["run_dir"], run[("radiomics", 200, 0)]["run_dir"], "multilabel")
    a = pd.read_csv(study / run[("cnn", 200, 0)]["run_dir"] / "predictions_test.csv")
    b = pd.read_csv(study / run[("radiomics", 200, 0)]["run_dir"] / "predictions_test.csv")
    want = delong_paired_macro(a[[f"true_{f}" for f in FINDINGS]].to_numpy(),
                               a[[f"score_{f}" for f in FINDINGS]].to_numpy(), b[[f"score_{f}" for f in FINDINGS]])
    assert got["p_value"] == pytest.approx(want["p_value"], rel=1e-9) and got["n_labels"] == 3 and got["note"] is None
    assert got["diff"] == pytest.approx(run[("cnn", 200, 0)]["test_auroc"] - run[("radiomics", 200, 0)]["test_auroc"],
                                        abs=1e-5)
    [table] = tables_under(html, "CNN vs radiomics", "nih14-mini:multilabel — densenet121: paired")
    assert [r[1] for r in table[1:]] == ["50", "200"] and all(r[10].count("seed") == 3 for r in table[1:])


def test_key_result_and_no_identifiers_leak(built):
    _, _, html = built
    key = html.split("<h2>Key results</h2>", 1)[1].split("</ul>", 1)[0]
    assert "<b>ImageNet</b> vs radiomics on the studied N (paired bootstrap)" in key
    for token in ("test/1", "00000001_000.png", "00000012", "predictions_test.csv\"", "runs/"):
        assert token not in html


def test_predictions_readers_handle_multiclass_and_bad_files(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    pd.DataFrame({"image_id": ["x1", "x2", "x3", "x4"], "true": ["KL0", "KL1", "KL2", "KL0"],
                  "score_KL0": [0.7, 0.1, 0.1, 0.6], "score_KL1": [0.2, 0.8, 0.2, 0.3],
                  "score_KL2": [0.1, 0.1, 0.7, 0.1]}).to_csv(run / "predictions_test.csv", index=False)
    targets, scores = read_predictions(run / "predictions_test.csv", "multiclass")
    assert targets.to_numpy().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert list(scores.columns) == ["KL0", "KL1", "KL2"]
    assert paired_delong(tmp_path, "a", "missing", "multiclass") == {"p_value": None,
                                                                      "note": "predictions_test.csv not found"}
    assert paired_delong(tmp_path, None, "a", "multiclass")["note"] == "run folder not recorded"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "predictions_test.csv").write_text("image_id,score_x\n1,0.5\n1,0.2\n")
    assert "twice" in paired_delong(tmp_path, "a", "b", "binary")["note"]


def test_single_seed_study_is_still_tested_and_no_radiomics_means_no_section(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    rows = _binary_runs(one, seeds=[0], inits=("scratch",))
    make_study(one, rows=rows, per_class=[])
    html = write_report(one).read_text()
    # one seed: the paired bootstrap over the test images still gives each N an interval and a verdict
    assert "paired DeLong" in html and "paired two-level bootstrap" in html
    [table] = tables_under(html, "CNN vs radiomics", "pneumoniamnist:binary — resnet18: paired")
    assert all(r[11].startswith(("CNN significantly", "not shown comparable", "comparable")) for r in table[1:])
    none = tmp_path / "none"
    none.mkdir()
    make_study(none, rows=[r for r in _binary_runs(none) if r["method"] == "cnn"], per_class=[])
    assert "CNN vs radiomics" not in write_report(none).read_text()

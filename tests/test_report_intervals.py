"""The report's intervals: combined per recipe and N from the runs' draws, paired only on the same test set."""
import numpy as np
import pandas as pd

from medtransfer.evaluate.bootstrap import bootstrap_auroc_samples
from medtransfer.report.draws import RunDraws
from medtransfer.report.intervals import BOOTSTRAP, T_OVER_SEEDS, Intervals

RNG = np.random.default_rng(0)
Y = (RNG.random(400) < 0.4).astype(int)
IDS = np.array([f"img{i}" for i in range(400)])


def _scores(strength, seed):
    return Y * strength + np.random.default_rng(seed).normal(size=len(Y))


def _frames(recipes):
    """summary rows and run rows for recipes {name: [(seed, scores)]} at one N."""
    runs, draws, summary = [], {}, []
    for recipe, seeds in recipes.items():
        aurocs = []
        for seed, scores, test_set in seeds:
            run_id = f"{recipe}-{seed}"
            from sklearn.metrics import roc_auc_score
            auroc = roc_auc_score(Y, scores)
            aurocs.append(auroc)
            runs.append({"run_id": run_id, "role": "grid", "status": "done", "task": "t", "method": "cnn",
                         "recipe": recipe, "n_key": "50", "arch": "resnet18", "seed": seed, "test_auroc": auroc})
            draws[run_id] = RunDraws(bootstrap_auroc_samples(Y[:, None], scores[:, None], IDS, 500, 0), test_set)
        summary.append({"task": "t", "method": "cnn", "recipe": recipe, "n_train": "50", "arch": "resnet18",
                        "n_seeds": len(seeds), "test_auroc_mean": np.mean(aurocs),
                        "test_auroc_ci_low": np.nan, "test_auroc_ci_high": np.nan})
    return pd.DataFrame(summary), pd.DataFrame(runs), draws


def test_combined_interval_replaces_the_t_interval_and_pairing_needs_one_test_set():
    shared = RNG.normal(size=len(Y))
    a = [(s, _scores(1.0, s) + shared, "T1") for s in (0, 1, 2)]
    b = [(s, _scores(0.8, 10 + s) + shared, "T1") for s in (0, 1, 2)]
    c = [(s, _scores(0.8, 20 + s) + shared, "T2") for s in (0, 1, 2)]       # scored another test set
    summary, runs, draws = _frames({"a": a, "b": b, "c": c})
    intervals = Intervals(summary, runs, draws)
    out = intervals.attach()
    assert (out["ci_method"] == BOOTSTRAP).all()
    assert (out["test_auroc_ci_low"] < out["test_auroc_mean"]).all() and (out["test_auroc_mean"] < out["test_auroc_ci_high"]).all()
    assert all(len(v) == 500 for v in intervals.row_draws.values())
    paired = intervals.difference(0, 1)
    assert paired.method == BOOTSTRAP and paired.n_seeds == 3 and paired.low < paired.mean < paired.high
    other = intervals.difference(0, 2)                  # different test images: never paired
    assert other.method == T_OVER_SEEDS


def test_a_run_without_draws_keeps_the_t_interval():
    a = [(s, _scores(1.0, s), "T1") for s in (0, 1)]
    summary, runs, draws = _frames({"a": a})
    del draws["a-1"]
    out = Intervals(summary, runs, draws).attach()
    assert out.loc[0, "ci_method"] == T_OVER_SEEDS and np.isnan(out.loc[0, "test_auroc_ci_low"])

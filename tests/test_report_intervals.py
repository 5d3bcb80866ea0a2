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


def _rows_at(cells):
    """summary and run rows for {(recipe, n_key, N): [seed, ...]} with draws on one test set."""
    from sklearn.metrics import roc_auc_score
    runs, draws, summary = [], {}, []
    for (recipe, n_key, n), seeds in cells.items():
        aurocs = []
        for seed in seeds:
            scores = _scores(1.0 + 0.3 * seed, 100 * seed + n)
            auroc = roc_auc_score(Y, scores)
            aurocs.append(auroc)
            run_id = f"{recipe}-{n_key}-{seed}"
            runs.append({"run_id": run_id, "role": "grid", "status": "done", "task": "t", "method": "cnn",
                         "recipe": recipe, "n_key": n_key, "arch": "resnet18", "seed": seed, "test_auroc": auroc})
            draws[run_id] = RunDraws(bootstrap_auroc_samples(Y[:, None], scores[:, None], IDS, 300, 0), "T1")
        summary.append({"task": "t", "method": "cnn", "recipe": recipe, "n_train": n_key, "arch": "resnet18",
                        "N": float(n), "n_seeds": len(seeds), "test_auroc_mean": np.mean(aurocs),
                        "test_auroc_ci_low": np.nan, "test_auroc_ci_high": np.nan})
    return pd.DataFrame(summary), pd.DataFrame(runs), draws


def test_a_one_seed_row_borrows_the_nearest_n_of_its_recipe_and_says_so():
    from medtransfer.evaluate.uncertainty import NOT_COVERED
    summary, runs, draws = _rows_at({("a", "100", 100): [0, 1, 2], ("a", "800", 800): [0, 1],
                                     ("a", "2800", 2800): [0], ("b", "2800", 2800): [0, 1, 2],
                                     ("c", "2800", 2800): [0]})
    summary = pd.concat([summary, pd.DataFrame([{**summary.iloc[4].to_dict(), "method": "radiomics",
                                                 "recipe": "r", "n_seeds": 1}])], ignore_index=True)
    runs = pd.concat([runs, runs.iloc[[-1]].assign(run_id="r-0", method="radiomics", recipe="r")], ignore_index=True)
    draws["r-0"] = draws["c-2800-0"]
    intervals = Intervals(summary, runs, draws)
    out = intervals.attach()
    assert out.loc[0, "seed_variance"] == "from 3 seeds"
    assert out.loc[2, "seed_variance"] == "borrowed from N=800 of this recipe (2 seeds)"       # nearest, not N=100
    assert out.loc[4, "seed_variance"].startswith("borrowed from the other recipes at this N, pooled")
    assert out.loc[5, "seed_variance"] == NOT_COVERED                       # no radiomics row can lend
    alone = np.subtract(*np.quantile(intervals.row_draws[5], [0.975, 0.025]))
    lent = np.subtract(*np.quantile(intervals.row_draws[4], [0.975, 0.025]))
    assert lent > alone


def test_answer_json_and_the_page_name_each_one_seed_cells_seed_level():
    from medtransfer.evaluate.uncertainty import NOT_COVERED
    from medtransfer.report.answer import few_seed_items
    from medtransfer.report.answer_page import key_results_html
    summary, runs, draws = _rows_at({("a", "800", 800): [0, 1], ("a", "2800", 2800): [0], ("c", "50", 50): [0]})
    out = Intervals(summary, runs, draws).attach()
    thin = few_seed_items(out)
    assert [t["seed_variance"] for t in thin] == ["from 2 seeds", "borrowed from N=800 of this recipe (2 seeds)",
                                                  NOT_COVERED]
    best = {"N": 2800, "recipe": "a", "metric": "test AUROC", "test_auroc": 0.8, "ci_low": 0.7, "ci_high": 0.9,
            "n_seeds": 1, "seed_variance": thin[1]["seed_variance"]}
    panel = {"task": "t", "arch": "resnet18", "best_recipe_per_n": [best], "gains": [], "inits": [],
             "metric": "test AUROC", "crossover_vs_radiomics": {"measured": [], "from_learning_curves": []}}
    page = key_results_html({"skipped": [], "few_seeds": thin, "panels": [panel], "targets": [],
                             "methods": {"selection": "", "uncertainty": "", "learning_curve": ""}})
    assert "borrowed from N=800 of this recipe (2 seeds)" in page
    assert "1 with 1 seed and nothing to borrow from: " + NOT_COVERED in page

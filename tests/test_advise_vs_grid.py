"""benchmarks/advise_vs_grid.py reads a study store right: CNN grid runs only (not the radiomics baseline),
regret paired by seed against the recipe best on mean validation AUROC, time ratios per seed and over seeds."""
import importlib.util
import json
import sqlite3
import types
from pathlib import Path

import numpy as np
import pytest

from medtransfer.study.schema import RUN_COLUMNS, SCHEMA, STORE_FILE

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "advise_vs_grid.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("advise_vs_grid", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _study(tmp_path: Path) -> Path:
    con = sqlite3.connect(tmp_path / STORE_FILE)
    con.executescript(SCHEMA)
    ids, rng, k = [], np.random.default_rng(0), 0

    def add(**kw):
        row = {c: None for c in RUN_COLUMNS} | {"config_json": "{}", "task": "t", "status": "done"} | kw
        con.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                    [row[c] for c in RUN_COLUMNS])
        ids.append(row["run_id"])

    for seed in (0, 1, 2):
        for init in ("scratch", "source:chest", "source:knee"):
            for policy in ("constant", "one_cycle"):
                k += 1
                best = init == "source:chest" and policy == "one_cycle"
                add(run_id=f"r{k}", role="grid", method="cnn", init=init, strategy="full", lr_policy=policy,
                    recipe="x", n_train=200, seed=seed, val_auroc=0.9 if best else rng.uniform(0.6, 0.8),
                    test_auroc=0.85 + seed / 100 if best else 0.75 if init == "source:knee" else 0.7, seconds=10.0,
                    metrics_json=json.dumps({"torch_threads": 1}))
        # the radiomics baseline: better validation AUROC than any CNN, never the grid's best recipe
        add(run_id=f"rad{seed}", role="grid", method="radiomics", recipe="radiomics + LR", n_train=200, seed=seed,
            val_auroc=0.99, test_auroc=0.5, seconds=100.0)
    con.execute("INSERT INTO plans VALUES ('h', 'now', ?)", [json.dumps(ids)])
    con.execute("INSERT INTO meta VALUES ('current_plan', 'h')")
    con.commit()
    con.close()
    return tmp_path


def test_table_from_a_study_with_radiomics_runs_and_three_seeds(bench, tmp_path):
    grid = bench.grid_rows(_study(tmp_path))
    assert len(grid) == 18 and grid["init"].notna().all()
    rows = grid[grid["n_train"] == 200]
    best = rows.groupby("recipe")["val_auroc"].mean().idxmax()
    assert best == "source:chest / full / one_cycle"
    runs = []
    for seed in (0, 1, 2):
        best_test = float(rows[(rows["recipe"] == best) & (rows["seed"] == seed)]["test_auroc"].iloc[0])
        runs.append({"N": 200, "seed": seed, "advised": "scratch / full / constant", "regret": best_test - 0.8,
                     "grid_best": best, "advise_seconds": 12.0,
                     "logme": {"scratch": -0.6, "source:chest": -0.4, "source:knee": -0.5, "imagenet": None},
                     "probe": {"scratch": 0.6, "source:chest": 0.8, "source:knee": 0.7},
                     "sfda": {"scratch": 0.9, "source:chest": 0.5, "source:knee": 0.7}})      # the reverse order
    table = bench.summarise(types.SimpleNamespace(ns=[200]), grid, {}, runs).iloc[0]
    assert table["seeds"] == 3 and table["inits"] == 3
    assert table["regret_median"] == pytest.approx(0.06) and table["regret_mean"] == pytest.approx(0.06)
    assert table["grid_s_all_seeds"] == 180.0 and table["grid_s_per_seed"] == 60.0   # radiomics seconds left out
    assert table["advise_over_grid"] == pytest.approx(12 / 180)
    assert table["advise_over_grid_per_seed"] == pytest.approx(12 / 60)
    assert table["tau_logme"] == pytest.approx(1.0)
    assert table["tau_sfda"] == pytest.approx(-1.0) and table["wtau_sfda"] == pytest.approx(-1.0)
    # --ranking-only's table: every score's plain and weighted tau; a run from before SFDA existed has none of it
    ranking = bench.ranking_table(types.SimpleNamespace(ns=[200]), grid, runs + [{"N": 200, "seed": 3,
                                                                                  "logme": runs[0]["logme"]}]).iloc[0]
    assert ranking["tau_sfda"] == pytest.approx(-1.0) and ranking["tau_logme"] == pytest.approx(1.0)
    assert ranking["sfda_order"] == "scratch > source:knee > source:chest"
    assert bench.order({"a": 1.0, "b": 1.0, "c": 0.5}) == "a = b > c" and bench.order({}) == ""

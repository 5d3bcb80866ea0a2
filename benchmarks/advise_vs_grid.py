"""Is ``medtransfer advise`` a trustworthy shortcut for the full grid? (issue 11)

Target PneumoniaMNIST (32 px), sources chest = nih14-mini and knee = knee-oa-64, as in
examples/offline-chest.yaml. For every N (default 50, 200, 800) and seed (default 0, 1, 2):

  (a) Kendall tau, plain and weighted (scipy.stats.weightedtau: swaps at the top weigh more, which is
      what a user acting on the first-ranked source cares about), between the transferability ranking
      of the initialisations (LogME, the grouped probe, the leave-one-patient-out k-NN AUROC, SFDA; each
      the mean over seeds) and their fine-tuned ranking in the grid (each initialisation at its best recipe
      by mean validation AUROC over seeds, ranked by that recipe's mean test AUROC); advise ranks by the
      score with the highest weighted tau here (advise.rank.RANKED_BY);
  (b) regret = test AUROC of the grid's best recipe (chosen on mean validation AUROC over seeds, as
      ``medtransfer study best`` does) minus the test AUROC of the recipe advise picked, paired by
      seed (same N-subset, same test images), with a t-interval over seeds and the median;
  (c) wall time of advise (mean over seeds: one advise answers for one seed) vs the grid's compute at
      the same N, over all its seeds (advise_over_grid) and per seed (advise_over_grid_per_seed, like
      for like). The sources' pretraining is shared by both and counted in neither.

Grid results come from a finished offline-chest study (``--study DIR``: its results.sqlite and its
sources/), or the grid is run here first (``--out DIR/grid``, one process, train.threads=1). Advice
folders are kept in ``OUT/advise/N{n}-s{seed}``; a rerun reuses finished ones.

    python benchmarks/advise_vs_grid.py --data-root ../shared/data --out bench/advise      # runs the grid
    python benchmarks/advise_vs_grid.py --study studies/offline-chest --out bench/advise   # reuses a study
    python benchmarks/advise_vs_grid.py --quick --data-root ../shared/data --out /tmp/avg  # smoke test (minutes)
    python benchmarks/advise_vs_grid.py --study DIR --ranking-only --out bench/rank        # (a) only, no advise runs

Prints one table and writes it to OUT/advise_vs_grid.csv (plus OUT/advise_vs_grid_runs.csv, a row per
(N, seed)). Targets (issue 11): advise at N = 200 in under 1/5 of the grid's time; median regret <= 0.02.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "offline-chest.yaml"
INIT_OF_CANDIDATE = {"scratch": "scratch", "imagenet": "imagenet"}   # else "source:NAME"
QUICK = ["train.steps=3", "train.min_steps=0", "train.epochs=1"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"), help="where the offline data lives")
    p.add_argument("--study", type=Path, default=None, help="a finished offline-chest study to reuse (grid + sources)")
    p.add_argument("--out", type=Path, required=True, help="folder for the grid (when run here), advice folders, CSVs")
    p.add_argument("--ns", type=int, nargs="+", default=[50, 200, 800])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", default="auto",
                   help="advise --budget per (N, seed): a duration (10m, 90s) or 'auto' = 1/5 of the grid's "
                        "compute at that N over all its seeds, x 0.9 (default)")
    p.add_argument("--threads", type=int, default=1, help="train.threads of every run here (grid and advise)")
    p.add_argument("--ranking-only", action="store_true",
                   help="(a) only: score the candidates' frozen features at each (N, seed) as advise's first step "
                        "does, without running advise (no regret, no timing)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: N=50, seed 0, 3 optimiser steps per run, 1 validation round (numbers mean nothing)")
    args = p.parse_args(argv)
    if args.quick:
        args.ns, args.seeds = [50], [0]
    return args


# ------------------------------------------------------------------------------------------------ grid
def run_grid(args, extra: list[str]) -> Path:
    """Run examples/offline-chest.yaml with this benchmark's N and seeds into OUT/grid (resumable)."""
    from medtransfer.study import StudyOptions, run_study

    spec = yaml.safe_load(SPEC.read_text())
    spec["grid"]["train.n_train"] = list(args.ns)
    spec["grid"]["train.seed"] = list(args.seeds)
    spec["name"] = "advise-vs-grid"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "grid-spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.monotonic()
    print(run_study(path, args.out / "grid", StudyOptions(data_root=args.data_root, overrides=tuple(extra))))
    print(f"grid wall time {time.monotonic() - started:.0f} s")
    return args.out / "grid"


def grid_rows(study: Path) -> pd.DataFrame:
    """Done CNN grid runs of the study's current plan: init, recipe, N, seed, val / test AUROC, seconds, threads."""
    from medtransfer.study.schema import STORE_FILE
    from medtransfer.study.store import read_current_plan

    db = study / STORE_FILE
    current = read_current_plan(db)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        frame = pd.read_sql_query(
            "SELECT run_id, init, strategy, lr_policy, n_train, seed, val_auroc, test_auroc, seconds, metrics_json "
            "FROM runs WHERE role = 'grid' AND method = 'cnn' AND status = 'done'", con)
    if current is not None:
        frame = frame[frame["run_id"].isin(current[1])]
    frame["threads"] = [json.loads(m or "{}").get("torch_threads") for m in frame.pop("metrics_json")]
    frame["recipe"] = frame["init"] + " / " + frame["strategy"] + " / " + frame["lr_policy"]
    return frame


def study_base(study: Path) -> tuple[dict, list[str], dict[str, Path]]:
    """The study's base run config, its --set overrides and its source run folders."""
    from medtransfer.advise.candidates import study_sources
    from medtransfer.study.schema import SPEC_FILE
    from medtransfer.study.spec import load_spec, overrides_from_text

    text = (study / SPEC_FILE).read_text()
    overrides = overrides_from_text(text)
    spec = load_spec(study / SPEC_FILE)
    return spec.base, overrides, study_sources(study)


# ------------------------------------------------------------------------------------------------ advise
def run_advice(args, base: dict, overrides: list[str], sources: dict[str, Path], n: int, seed: int,
               budget_seconds: float) -> dict:
    from medtransfer.advise.command import advise

    out = args.out / "advise" / f"N{n}-s{seed}"
    if not (out / "advice.json").is_file():
        config = args.out / "target.yaml"
        config.write_text(yaml.safe_dump(base, sort_keys=False))
        sets = list(overrides) + [f"train.n_train={n}", f"train.seed={seed}", f"train.threads={args.threads}"]
        advise(config, out, Path(args.data_root).resolve(), sources, None, budget_seconds, sets, echo=False)
    return json.loads((out / "advice.json").read_text())


def ranking_scores(args, base: dict, overrides: list[str], sources: dict[str, Path], n: int, seed: int) -> list[dict]:
    """advise's step 1 alone at (N, seed): every available candidate's transferability scores on the N-subset."""
    import torch

    from medtransfer.advise.candidates import list_candidates
    from medtransfer.advise.features import candidate_features
    from medtransfer.advise.rank import rank_candidates
    from medtransfer.config import load_config
    from medtransfer.runs.data_split import prepare_run_data

    config = args.out / "target.yaml"
    config.write_text(yaml.safe_dump(base, sort_keys=False))
    cfg = load_config(config, list(overrides) + [f"train.n_train={n}", f"train.seed={seed}",
                                                 f"train.threads={args.threads}"])
    data, idx = prepare_run_data(cfg, Path(args.data_root).resolve(), lambda _line: None, progress=False)
    rows = idx["train"]
    candidates = [c for c in list_candidates(cfg, sources, None) if c.available]
    torch.set_num_threads(args.threads)
    features = candidate_features(candidates, data.images[rows], len(data.label_names), seed=seed,
                                  dropout=cfg.model.dropout, batch_size=64, device=torch.device("cpu"),
                                  log=lambda _line: None)
    groups = data.patient_ids[rows] if data.has_patient_ids else np.asarray(data.image_ids)[rows]
    scores = rank_candidates(features, np.asarray(data.labels[rows]), cfg.task.kind, len(data.label_names),
                             np.asarray(groups))
    return [s.to_json() for s in scores]


def grid_init(candidate: str) -> str:
    """The grid's init of an advise candidate; a study's source candidates are named NAME-<run id> (study_sources)."""
    name = re.sub(r"-[0-9a-f]{16}$", "", candidate)
    return INIT_OF_CANDIDATE.get(name, f"source:{name}")


def advised_recipe(advice: dict) -> str:
    rec = advice["recommendation"]
    return f"{grid_init(rec['init_name'])} / {rec['strategy']} / {rec['lr_policy']}"


# ------------------------------------------------------------------------------------------------ analysis
def finetuned_ranking(rows: pd.DataFrame) -> pd.Series:
    """Per init at this N: the mean test AUROC of its best recipe by mean validation AUROC over seeds."""
    per_recipe = rows.groupby(["init", "recipe"]).agg(val=("val_auroc", "mean"), test=("test_auroc", "mean"))
    best = per_recipe.sort_values("val", ascending=False).groupby(level="init").head(1)
    return best.reset_index().set_index("init")["test"]


def kendall(scores: dict[str, float], truth: pd.Series) -> float:
    from scipy.stats import kendalltau

    common = [i for i in truth.index if i in scores and scores[i] is not None]
    if len(common) < 2:
        return math.nan
    return float(kendalltau([scores[i] for i in common], [truth[i] for i in common]).statistic)


def weighted(scores: dict[str, float], truth: pd.Series) -> float:
    """scipy's weighted tau (hyperbolic weights on both rankings' ranks, averaged): a swap of the top two costs
    more than a swap of the last two."""
    from scipy.stats import weightedtau

    common = [i for i in truth.index if i in scores and scores[i] is not None]
    if len(common) < 2:
        return math.nan
    return float(weightedtau([scores[i] for i in common], [truth[i] for i in common]).statistic)


SCORES = {"logme": "logme", "probe": "probe_auroc", "knn": "knn_auroc", "sfda": "sfda"}   # per_run key -> json key


def mean_scores(runs: list[dict], key: str, inits) -> dict[str, float]:
    """Each init's score ``key`` averaged over the seeds that have it."""
    got = [r.get(key) or {} for r in runs]     # runs from before a score existed have none of it
    return {i: float(np.mean([g[i] for g in got if g.get(i) is not None])) for i in inits
            if any(g.get(i) is not None for g in got)}


def order(means: dict[str, float]) -> str:
    """Inits best first, ' = ' between exact ties (SFDA is 1.0 for every init when N < the feature count), so a
    tie does not read as an order."""
    ranked = sorted(means, key=lambda i: -means[i])
    return "".join([ranked[0]] + [(" = " if means[a] == means[b] else " > ") + b for a, b in zip(ranked, ranked[1:])]) \
        if ranked else ""


def ranking_table(args, grid: pd.DataFrame, per_run: list[dict]) -> pd.DataFrame:
    """Per N: plain and weighted tau of each score (means over seeds) against the fine-tuned ranking."""
    table = []
    for n in args.ns:
        rows, runs = grid[grid["n_train"] == n], [r for r in per_run if r["N"] == n]
        if rows.empty or not runs:
            continue
        truth = finetuned_ranking(rows)
        row = {"N": n, "seeds": len(runs), "inits": len(truth),
               "finetuned_order": " > ".join(truth.sort_values(ascending=False).index)}
        for key in SCORES:
            means = mean_scores(runs, key, truth.index)
            row[f"tau_{key}"], row[f"wtau_{key}"] = kendall(means, truth), weighted(means, truth)
            row[f"{key}_order"] = order(means)
        table.append(row)
    return pd.DataFrame(table)


def summarise(args, grid: pd.DataFrame, advices: dict[tuple[int, int], dict], per_run: list[dict]) -> pd.DataFrame:
    from medtransfer.evaluate.summary import mean_ci

    table = []
    for n in args.ns:
        rows = grid[grid["n_train"] == n]
        runs = [r for r in per_run if r["N"] == n]
        if rows.empty or not runs:
            continue
        truth = finetuned_ranking(rows)
        logme, probe = mean_scores(runs, "logme", truth.index), mean_scores(runs, "probe", truth.index)
        knn, sfda = mean_scores(runs, "knn", truth.index), mean_scores(runs, "sfda", truth.index)
        regrets = [r["regret"] for r in runs if r["regret"] is not None and math.isfinite(r["regret"])]
        ci = mean_ci(regrets)
        grid_seconds = float(rows["seconds"].sum())
        per_seed = grid_seconds / max(rows["seed"].nunique(), 1)
        advise_seconds = float(np.mean([r["advise_seconds"] for r in runs]))
        table.append({
            "N": n, "seeds": len(runs), "inits": len(truth),
            "tau_logme": kendall(logme, truth), "tau_probe": kendall(probe, truth), "tau_knn": kendall(knn, truth),
            "tau_sfda": kendall(sfda, truth),
            "wtau_logme": weighted(logme, truth), "wtau_probe": weighted(probe, truth), "wtau_knn": weighted(knn, truth),
            "wtau_sfda": weighted(sfda, truth),
            "tau_logme_per_seed": float(np.nanmean([kendall(r["logme"], truth) for r in runs])),
            "finetuned_order": " > ".join(truth.sort_values(ascending=False).index),
            "logme_order": order(logme),
            "grid_best": runs[0]["grid_best"],
            "advised": "; ".join(sorted({r["advised"] for r in runs})),
            "regret_median": float(np.median(regrets)) if regrets else math.nan,
            "regret_mean": ci.mean, "regret_low": ci.low, "regret_high": ci.high,
            "advise_s": advise_seconds, "grid_s_all_seeds": grid_seconds,
            "grid_s_per_seed": per_seed,
            "advise_over_grid": advise_seconds / grid_seconds if grid_seconds else math.nan,
            # one advise answers for one seed: like for like is the grid's time for one seed
            "advise_over_grid_per_seed": advise_seconds / per_seed if per_seed else math.nan,
        })
    return pd.DataFrame(table)


def main(argv=None) -> int:
    args = parse_args(argv)
    from medtransfer.advise.search import parse_budget

    extra = [f"train.threads={args.threads}"] + (QUICK if args.quick else [])
    study = args.study or run_grid(args, extra)
    base, overrides, sources = study_base(study)
    if args.quick:
        overrides = list(overrides) + QUICK
    sources = {name: path for name, path in sources.items() if name in ("chest", "knee")} or sources
    args.out.mkdir(parents=True, exist_ok=True)
    grid = grid_rows(study)
    threads = sorted({t for t in grid["threads"].dropna()})
    print(f"grid: {len(grid)} done CNN runs in {study} (torch threads {threads or 'not recorded'}); "
          f"sources {', '.join(sources)}")
    if args.ranking_only:
        return ranking_main(args, grid, (base, overrides, sources))
    per_run, advices = [], {}
    for n in args.ns:
        rows = grid[grid["n_train"] == n]
        if rows.empty:
            print(f"N={n}: no grid runs in {study}; skipped")
            continue
        grid_seconds = float(rows["seconds"].sum())
        budget = 0.9 * grid_seconds / 5 if args.budget == "auto" else parse_budget(args.budget)
        per_recipe = rows.groupby("recipe")["val_auroc"].mean().sort_values(ascending=False)
        grid_best = per_recipe.index[0]
        for seed in args.seeds:
            started = time.monotonic()
            advice = run_advice(args, base, overrides, sources, n, seed, budget)
            took = advice.get("seconds") or (time.monotonic() - started)
            advices[(n, seed)] = advice
            recipe = advised_recipe(advice)
            best_test = rows[(rows["recipe"] == grid_best) & (rows["seed"] == seed)]["test_auroc"]
            advised_test = advice["recommendation"]["test_auroc"]
            regret = (float(best_test.iloc[0]) - advised_test) if len(best_test) and advised_test is not None else None
            scores = advice["ranking"]["scores"]
            per_run.append({
                "N": n, "seed": seed, "advised": recipe, "advised_test": advised_test, "grid_best": grid_best,
                "grid_best_test": float(best_test.iloc[0]) if len(best_test) else None, "regret": regret,
                "advise_seconds": took, "budget_seconds": budget,
                **{key: {grid_init(s["name"]): s.get(field) for s in scores} for key, field in SCORES.items()}})
            shown = "undefined" if advised_test is None else f"{advised_test:.4f}"
            print(f"N={n} seed={seed}: advised {recipe} test {shown}; grid best {grid_best}"
                  f"{'' if regret is None else f' regret {regret:+.4f}'}; {took:.0f} s (budget {budget:.0f} s)")
    table = summarise(args, grid, advices, per_run)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "advise_vs_grid.csv", index=False)
    flat = pd.DataFrame([{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items()} for r in per_run])
    flat.to_csv(args.out / "advise_vs_grid_runs.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(table.drop(columns=["finetuned_order", "logme_order", "grid_best", "advised"]).to_string(index=False))
        print(table[["N", "finetuned_order", "logme_order", "grid_best", "advised"]].to_string(index=False))
    regrets = [r["regret"] for r in per_run if r["regret"] is not None]
    if regrets:
        print(f"median regret over all (N, seed): {np.median(regrets):+.4f} AUROC (target <= 0.02)")
    print(f"wrote {args.out / 'advise_vs_grid.csv'} and {args.out / 'advise_vs_grid_runs.csv'}")
    return 0


def ranking_main(args, grid: pd.DataFrame, target: tuple[dict, list[str], dict[str, Path]]) -> int:
    """--ranking-only: the candidates' scores at every (N, seed), and their taus against the grid."""
    base, overrides, sources = target
    per_run = []
    for n in args.ns:
        for seed in args.seeds:
            started = time.monotonic()
            scores = ranking_scores(args, base, overrides, sources, n, seed)
            per_run.append({"N": n, "seed": seed, **{key: {grid_init(s["name"]): s.get(field) for s in scores}
                                                      for key, field in SCORES.items()}})
            shown = "; ".join(f"{s['name']}: LogME {s['logme']}, probe {s['probe_auroc']}, k-NN {s['knn_auroc']}, "
                              f"SFDA {s.get('sfda')}" for s in scores)
            print(f"N={n} seed={seed} ({time.monotonic() - started:.0f} s): {shown}")
    table = ranking_table(args, grid, per_run)
    table.to_csv(args.out / "ranking_vs_grid.csv", index=False)
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.float_format", "{:.2f}".format):
        print(table.to_string(index=False))
    print(f"wrote {args.out / 'ranking_vs_grid.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Learning-curve backtest: fit each recipe's curve on N <= N_max / 4, predict N_max, compare with what was measured.

Issue 23 item 5 asks whether the power law the report extrapolates with can be leaned on. For every
(task, arch, recipe) curve of a finished study folder with at least 4 distinct N, this script fits the
report's curve (inverse-variance weights, refits on the joint bootstrap draws: ``learning_curve.holdout_check``,
the same check that gates the report's extrapolations) on the sizes at or below ``--fraction`` x N_max,
predicts the AUROC at N_max and reports

* the absolute error |predicted - measured| at N_max;
* whether the measured value lies in the 95% prediction interval (the curve's uncertainty and the held-out
  point's own noise, paired through the shared bootstrap): the interval's coverage over the curves.

A curve with fewer than 3 distinct N at or below N_max / 4 cannot be fitted there; it is listed with the
reason and left out of the summary, so a study that never spans a factor 16 in N says so instead of
printing a number. Nothing is trained: it reads the study's store the way ``medtransfer report`` does.

    PYTHONPATH=src .venv/bin/python benchmarks/learning_curve_backtest.py STUDY_DIR [--fraction 0.25]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medtransfer.evaluate import learning_curve as lc
from medtransfer.report.report import read_study, summarise


@dataclass(frozen=True)
class Curve:
    """One recipe's per-N mean test AUROC, its interval and (where every N has them) joint bootstrap draws."""
    name: str
    ns: np.ndarray
    aurocs: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    draws: np.ndarray | None


def study_curves(study_dir: str) -> list[Curve]:
    """Every (task, arch, recipe) curve of a study folder, from the report's own summary and draws."""
    summary, intervals = summarise(read_study(study_dir))
    summary = summary[summary["n_seeds"] > 0]
    curves = []
    for (task, arch, recipe), rows in summary.groupby(["task", "arch", "recipe"], dropna=False, sort=True):
        rows = rows.sort_values("N")
        draws = [intervals.row_draws.get(i) for i in rows.index]
        same = all(d is not None for d in draws) and len({len(d) for d in draws}) == 1
        curves.append(Curve(f"{task} / {arch if pd.notna(arch) else '—'} / {recipe}", rows["N"].to_numpy(float),
                            rows["test_auroc_mean"].to_numpy(float), rows["test_auroc_ci_low"].to_numpy(float),
                            rows["test_auroc_ci_high"].to_numpy(float), np.stack(draws) if same else None))
    return curves


def backtest(curves: list[Curve], fraction: float = 0.25) -> pd.DataFrame:
    """One row per curve: predicted and measured AUROC at N_max, |error|, the interval and whether it covers,
    or the reason the curve could not be backtested."""
    out = []
    for c in curves:
        row = {"curve": c.name, "N": " ".join(f"{n:g}" for n in c.ns), "N_max": float(c.ns.max())}
        if np.unique(c.ns).size < 4:
            out.append(row | {"reason": f"{np.unique(c.ns).size} distinct N: the backtest needs at least 4"})
            continue
        weights, how = lc.inverse_variance_weights(c.draws, c.ci_low, c.ci_high)
        check = lc.holdout_check(c.ns, c.aurocs, c.draws, weights, fit_up_to=fraction * c.ns.max())
        if not check.ok:
            out.append(row | {"reason": check.reason})
            continue
        out.append(row | {"predicted": check.predicted.estimate, "measured": check.measured,
                          "abs_error": abs(check.error), "pi_low": check.interval[0], "pi_high": check.interval[1],
                          "covered": check.covered, "weighting": how, "reason": None})
    return pd.DataFrame(out)


def summary_line(table: pd.DataFrame) -> str:
    """Mean / median |error| and coverage over the curves that were backtested, or why there are none."""
    done = table[table["reason"].isna()] if "reason" in table else table.iloc[:0]
    if done.empty:
        return f"no curve of the {len(table)} has enough N for the backtest (see the reasons above)"
    with_pi = done[done["covered"].notna()]
    cover = (f"{int(with_pi['covered'].sum())}/{len(with_pi)} covered by the 95% prediction interval"
             if len(with_pi) else "no prediction intervals (no bootstrap draws)")
    return (f"{len(done)} of {len(table)} curves backtested: |error| mean {done['abs_error'].mean():.3f}, "
            f"median {done['abs_error'].median():.3f}, max {done['abs_error'].max():.3f}; {cover}")


def markdown(table: pd.DataFrame) -> str:
    """The table as the README shows it."""
    lines = ["| curve | N | predicted at N_max | measured | abs error | 95% PI | covered |", "|---|---|---:|---:|---:|---|---|"]
    for r in table.to_dict("records"):
        if r.get("reason"):
            lines.append(f"| {r['curve']} | {r['N']} | — | — | — | — | not backtested: {r['reason']} |")
            continue
        pi = "—" if not math.isfinite(r["pi_low"]) else f"{r['pi_low']:.3f} to {r['pi_high']:.3f}"
        covered = "—" if r["covered"] is None else ("yes" if r["covered"] else "no")
        lines.append(f"| {r['curve']} | {r['N']} | {r['predicted']:.3f} | {r['measured']:.3f} | "
                     f"{r['abs_error']:.3f} | {pi} | {covered} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir")
    parser.add_argument("--fraction", type=float, default=0.25, help="fit N <= fraction x N_max (default 0.25)")
    args = parser.parse_args(argv)
    table = backtest(study_curves(args.study_dir), args.fraction)
    print(f"study: {args.study_dir}; load average {' / '.join(f'{v:.2f}' for v in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs")
    print(markdown(table))
    print(summary_line(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())

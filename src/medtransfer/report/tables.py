"""The numbers of a study report, as DataFrames: summary per recipe and N, best recipe, gains.

"Best" everywhere means the highest mean VALIDATION AUROC over seeds at that N; the
numbers shown are test AUROCs, so the split that judges a recipe never chose it. Every
init is represented by its own best recipe, so the comparison is symmetric (each
init gets the same benefit of the choice). Gains carry a paired 95% CI (Welch where runs have no bootstrap draws) so a reader
can tell a real gap from seed noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..evaluate.summary import diff_ci, t_interval
from ..evaluate.threshold import OPERATING_KEYS
from ..kinds import Init, InitKind, RunMethod, RunRole, RunStatus, Site, TaskKind
from ..xrv_weights import leak_note, pretraining_of
from .redact import redact, short_reason

RADIOMICS = RunMethod.RADIOMICS
RADIOMICS_LABEL = "radiomics + LR"
GROUP = ["task", "arch", "method", "recipe", "n_key"]


PRETRAINED_MARK = "†"   # on recipes whose public pretraining may have seen the test images (xrv:NAME)


def init_site(init, method: str, sites: dict[str, str]) -> str:
    """scratch | imagenet | xrv | pretrained | same | other | unlabelled | checkpoint | radiomics | other-init."""
    if method == RADIOMICS:
        return RADIOMICS
    parsed = _parsed_init(init)
    if parsed is None:
        return "other-init"
    match parsed.kind:
        case InitKind.SCRATCH | InitKind.IMAGENET | InitKind.PRETRAINED:
            return parsed.kind.value
        case InitKind.SOURCE:
            return sites.get(parsed.source_name, "unlabelled")
        case InitKind.XRV:
            return "xrv"
    return "checkpoint"


def _parsed_init(init) -> Init | None:
    """The store's init text as an Init (None for a missing or unparsable value)."""
    if init is None or (isinstance(init, float) and math.isnan(init)):
        return None
    try:
        return Init.parse(str(init))
    except ValueError:
        return None


@dataclass(frozen=True)
class InitName:
    """An initialisation as the report shows it: its site kind and its own name, formatted only by ``label``."""
    site: str     # one of SITE_ORDER
    name: str     # 'scratch', 'ImageNet', a source name, a checkpoint file name, ...

    @property
    def label(self) -> str:
        suffix = {Site.SAME: " (same-site)", Site.OTHER: " (other-site)", "unlabelled": " (site not given)",
                  "xrv": f" {PRETRAINED_MARK}"}.get(self.site, "")
        return ("checkpoint " if self.site == "checkpoint" else "") + self.name + suffix

    def __str__(self) -> str:
        return self.label


def init_name(init, method: str, sites: dict[str, str]) -> InitName:
    site = init_site(init, method, sites)
    parsed = _parsed_init(init)
    if site == RADIOMICS:
        name = RADIOMICS_LABEL
    elif site in ("scratch", "imagenet", "pretrained"):
        name = {"scratch": "scratch", "imagenet": "ImageNet", "pretrained": "pretrained"}[site]
    elif parsed is None:
        name = str(init)
    elif site == "checkpoint":
        name = parsed.path.name
    elif site == "xrv":
        name = str(parsed)
    else:
        name = parsed.source_name
    return InitName(site, name)


def init_display_label(init, method: str, sites: dict[str, str]) -> str:
    """How the report names an init to a reader, with its site: 'scratch', 'ImageNet', 'chest (same-site)', ...

    Not ``study.grid.init_label`` (the init's part of a recipe name, without the site).
    """
    return init_name(init, method, sites).label


SUMMARY_COLUMNS = ["task", "task_kind", "arch", "method", "recipe", "init", "strategy", "lr_policy", "dropout",
                   "n_train", "N", "n_patients", "n_seeds", "test_auroc_mean", "test_auroc_sd", "test_auroc_ci_low",
                   "test_auroc_ci_high", "val_auroc_mean", "seconds_mean", "n_runs", "n_done", "n_failed",
                   "n_skipped", "test_accuracy_mean", "test_sensitivity_mean", "test_specificity_mean"]



def study_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, arch, method, recipe, requested N) of the grid runs (vectorised: studies are big)."""
    grid = runs[runs["role"] == RunRole.GRID]
    if grid.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    done = grid["status"] == RunStatus.DONE
    frame = grid.assign(
        _seed=grid["seed"].where(done & grid["test_auroc"].notna()),   # seeds are distinct train.seed values, never rows
        _auroc=grid["test_auroc"].where(done), _val=grid["val_auroc"].where(done),
        _seconds=grid["seconds"].where(done), _images=grid["n_train_images"].where(done),
        _patients=(grid["n_train_patients"] if "n_train_patients" in grid else pd.Series(np.nan, index=grid.index)
                   ).where(done),
        _done=done, _failed=grid["status"] == RunStatus.FAILED, _skipped=grid["status"] == RunStatus.SKIPPED,
        **{f"_{k}": (grid[f"test_{k}"] if f"test_{k}" in grid else pd.Series(np.nan, index=grid.index)).where(done)
           for k in OPERATING_KEYS})
    g = frame.groupby(GROUP, dropna=False, sort=True)
    out = g.agg(task_kind=("task_kind", "first"), init=("init", "first"), strategy=("strategy", "first"),
                lr_policy=("lr_policy", "first"), dropout=("dropout", "first"), n_requested=("n_train", "first"),
                N=("_images", "median"), n_patients=("_patients", "median"), n_seeds=("_seed", "nunique"), test_auroc_mean=("_auroc", "mean"),
                test_auroc_sd=("_auroc", "std"), val_auroc_mean=("_val", "mean"), seconds_mean=("_seconds", "mean"),
                n_runs=("status", "size"), n_done=("_done", "sum"), n_failed=("_failed", "sum"),
                n_skipped=("_skipped", "sum"),
                **{f"test_{k}_mean": (f"_{k}", "mean") for k in OPERATING_KEYS}).reset_index()
    out = out.rename(columns={"n_key": "n_train"})
    out["N"] = out["N"].fillna(out["n_requested"]).astype(float)   # nothing finished: the requested N
    out["arch"] = out["arch"].astype(object).where(out["arch"].notna(), None)
    low, high = t_interval(out["test_auroc_mean"], out["test_auroc_sd"], out["n_seeds"])
    # an AUROC lies in [0, 1]; with 2-3 seeds the t-interval can overshoot it
    out["test_auroc_ci_low"], out["test_auroc_ci_high"] = np.maximum(low, 0.0), np.minimum(high, 1.0)
    out.loc[out["n_seeds"] < 2, "test_auroc_sd"] = math.nan
    out = out[SUMMARY_COLUMNS]
    return out.sort_values(["task", "arch", "method", "recipe", "N"], na_position="last", kind="stable",
                           ignore_index=True)


def panels(summary: pd.DataFrame) -> list[tuple[str, str | None]]:
    """(task, CNN arch) pairs; a task with no CNN rows (radiomics only) gets one panel (task, None)."""
    out = []
    for task, g in summary.groupby("task", sort=True):
        archs = sorted(a for a in g.loc[g["method"] != RADIOMICS, "arch"].dropna().unique())
        out.extend((task, a) for a in (archs or [None]))
    return out


def panel_rows(summary: pd.DataFrame, task: str, arch) -> pd.DataFrame:
    """Rows drawn in a panel: that arch's recipes plus the task's radiomics (and any arch-less) ones."""
    in_panel = summary["arch"].isna() | (summary["arch"] == arch) | (summary["method"] == RADIOMICS)
    return summary[(summary["task"] == task) & in_panel]


# cheapest first: radiomics trains no network; a probe runs the backbone once and fits a logistic regression; a
# frozen backbone trains its head only; gradual unfreezing trains fewer layers for part of the budget than a full
# fine-tune (ranking ties and report.selection's pick)
COST_ORDER = ("radiomics + LR", "probe", "frozen", "gradual", "full")
STRATEGY_COST = {name: rank for rank, name in enumerate(COST_ORDER)}


def ranked_recipes(rows: pd.DataFrame) -> pd.DataFrame:
    """Recipes best first by mean VALIDATION AUROC: the test split is read only for the numbers reported.

    Choosing on test and reporting on test flatters the winner (and every gain built on it);
    a recipe without a validation AUROC (no validation split) ranks after those with one. Ties go to more
    seeds, then the cheaper strategy (radiomics, probe, frozen, gradual, full), then fewer training seconds: never
    to the recipe's name (``report.selection`` says which recipes a tie leaves within noise).
    """
    rows = rows[rows["n_seeds"] > 0]
    cost = [0 if m == RADIOMICS else STRATEGY_COST.get(str(s), len(STRATEGY_COST))
            for m, s in zip(rows["method"], rows["strategy"], strict=True)]
    ranked = rows.assign(_cost=cost).sort_values(["val_auroc_mean", "n_seeds", "_cost", "seconds_mean"],
                                                 ascending=[False, False, True, True], na_position="last",
                                                 kind="stable")
    return ranked.drop(columns="_cost")


def json_num(x, digits: int = 4):
    """A number as answer.json holds it: rounded to ``digits``, None for NaN, infinite or missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x):
        return None
    return round(float(x), digits)


def display_recipe(row) -> str:
    return RADIOMICS_LABEL if row["method"] == RADIOMICS else str(row["recipe"])


def pretrained_elsewhere(init, arch=None) -> bool:
    """True for an init whose public pretraining may have seen the test images (``xrv:NAME``, or ``pretrained``
    on a backbone whose model card lists chest X-ray collections, e.g. RAD-DINO): marked †."""
    parsed = _parsed_init(init)
    return parsed is not None and pretraining_of(str(parsed), "" if arch is None else str(arch)) is not None


def marked_recipe(row) -> str:
    """:func:`display_recipe` plus † where :func:`pretrained_elsewhere` (the recipe text itself stays a key)."""
    shown = pretrained_elsewhere(row["init"], row.get("arch"))
    return display_recipe(row) + (f" {PRETRAINED_MARK}" if shown else "")


def pretraining_notes(runs: pd.DataFrame) -> list[str]:
    """One note per init in the grid with public pretraining on record (torchxrayvision's, a listed foundation
    backbone's own): what it was trained on, and where this study tests on it."""
    notes = []
    grid = runs[runs["role"] == RunRole.GRID]
    pairs = grid[["init", "arch"]].dropna(subset=["init"]).drop_duplicates()
    for text, arch in sorted((str(i), "" if pd.isna(a) else str(a)) for i, a in pairs.itertuples(index=False)):
        parsed = _parsed_init(text)
        weights = None if parsed is None else pretraining_of(str(parsed), arch)
        if weights is None:
            continue
        note = f"{PRETRAINED_MARK} {leak_note(weights)}."
        own = grid[(grid["init"] == text) & (grid["arch"].astype(str) == arch if arch else True)]
        seen = sorted({(t, i) for t, i in zip(own["task"], own["target_images"]) if weights.saw(i)})
        if seen:
            note += (" In this study " + ", ".join(f"{redact(t)} ({i})" for t, i in seen) + " tests on images these "
                     "weights were trained on: those AUROCs are optimistic.")
        notes.append(note)
    return notes


def n_keys_in_order(rows: pd.DataFrame) -> list[str]:
    """The requested-N keys (``n_train``: '50', 'all', ...) of summary ``rows``, fewest images trained on first.

    Ordered by the images trained on (the largest ``N`` among that key's rows; a key without one sorts last,
    ties by the key's text), so 'all' falls where its size puts it.
    """
    n = rows.groupby("n_train")["N"].max().fillna(np.inf)
    return sorted(n.index, key=lambda k: (n[k], k))


BEST_COLUMNS = ["task", "arch", "n_train", "N", "n_patients", "recipe", "shown", "n_seeds", "auroc", "val_auroc",
                "sensitivity", "specificity", "accuracy", "ci_low", "ci_high", "runner_up", "runner_up_shown",
                "runner_up_auroc", "n_recipes", "pick_rule", "within_noise", "n_within_noise", "test_difference",
                "selection_method"]


def _best_row(ranked: pd.DataFrame, choice) -> dict:
    """One best-recipe row: the choice's pick (``report.selection``), or the top of ``ranked`` without one."""
    best = ranked.loc[choice.pick] if choice is not None else ranked.iloc[0]
    second = (ranked.loc[choice.runner_up] if choice is not None and choice.runner_up is not None
              else None if choice is not None or len(ranked) < 2 else ranked.iloc[1])
    return {
        "recipe": display_recipe(best), "shown": marked_recipe(best), "N": best["N"], "n_patients": best["n_patients"],
        "n_seeds": best["n_seeds"], "auroc": best["test_auroc_mean"], "val_auroc": best["val_auroc_mean"],
        "sensitivity": best["test_sensitivity_mean"], "specificity": best["test_specificity_mean"],
        "accuracy": best["test_accuracy_mean"], "ci_low": best["test_auroc_ci_low"], "ci_high": best["test_auroc_ci_high"],
        "runner_up": None if second is None else display_recipe(second),
        "runner_up_shown": None if second is None else marked_recipe(second),
        "runner_up_auroc": math.nan if second is None else second["test_auroc_mean"],
        "n_recipes": len(ranked) if choice is None else choice.n_recipes,
        "pick_rule": "highest mean validation AUROC" if choice is None else choice.rule,
        "within_noise": None if choice is None else [display_recipe(ranked.loc[i]) for i in choice.within_noise],
        "n_within_noise": None if choice is None else len(choice.within_noise),
        "test_difference": None if choice is None else choice.test_difference,
        "selection_method": None if choice is None else "; ".join(choice.methods),
    }


def best_recipes(summary: pd.DataFrame, choose=None) -> pd.DataFrame:
    """Per (task, arch, N): the named recipe and the runner-up (test AUROCs shown).

    ``choose`` (``report.selection.choose`` bound to the intervals) gives the pick by the one-SE rule, the
    recipes within noise of the best and the paired test difference pick minus runner-up; without it the
    highest mean validation AUROC (:func:`ranked_recipes`). ``recipe`` / ``runner_up`` are the recipe names
    as stored; ``shown`` / ``runner_up_shown`` add the † mark.
    """
    rows = []
    for task, arch in panels(summary):
        panel = panel_rows(summary, task, arch)
        for nk in n_keys_in_order(panel):
            ranked = ranked_recipes(panel[panel["n_train"] == nk])
            if ranked.empty:
                continue
            choice = None if choose is None else choose(ranked)
            rows.append({"task": task, "arch": arch, "n_train": nk, **_best_row(ranked, choice)})
    return pd.DataFrame(rows, columns=BEST_COLUMNS)


SITE_ORDER = ("scratch", "imagenet", "xrv", "pretrained", Site.SAME, Site.OTHER, "unlabelled", "checkpoint", "other-init", RADIOMICS)


def best_per_init(rows: pd.DataFrame, sites: dict[str, str]) -> dict[str, pd.Series]:
    """init display label -> that init's recipe at this N (radiomics is one 'init'): the one the selection rule
    names where ``report.selection.mark_init_picks`` marked it, else the best by :func:`ranked_recipes`.

    ``rows`` are one panel's rows at one N. Ordered scratch, ImageNet, same-site, other-site, ..., radiomics,
    so tables read alike.
    """
    best = {}
    ranked = ranked_recipes(rows)
    if "init_pick" in ranked:     # report.selection.mark_init_picks: the recipe the selection rule names
        ranked = ranked.sort_values("init_pick", ascending=False, kind="stable")
    for _, row in ranked.iterrows():
        label = init_display_label(row["init"], row["method"], sites)
        best.setdefault(label, row)

    def order(label):
        row = best[label]
        return SITE_ORDER.index(init_site(row["init"], row["method"], sites)), label
    return {label: best[label] for label in sorted(best, key=order)}


def runs_behind(runs: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """The finished (done) grid runs behind one summary ``row`` of :func:`study_table`: its seeds' runs."""
    sel = ((runs["role"] == RunRole.GRID) & (runs["status"] == RunStatus.DONE) & (runs["task"] == row["task"])
           & (runs["method"] == row["method"]) & (runs["recipe"] == row["recipe"]) & (runs["n_key"] == row["n_train"]))
    sel &= runs["arch"].isna() if pd.isna(row["arch"]) else (runs["arch"] == row["arch"])
    return runs[sel]


def gains(summary: pd.DataFrame, runs: pd.DataFrame, sites: dict[str, str], intervals=None,
          every_init: bool = False) -> pd.DataFrame:
    """Gain of each same-site init over scratch, ImageNet, torchxrayvision, other-site inits (and radiomics) per N.

    A source with no site given is compared with scratch, ImageNet and radiomics only. ``every_init`` adds
    every other pretrained init (ImageNet, torchxrayvision, other-site sources) over scratch and over
    ImageNet: the answer's "what does each init buy me". With ``intervals``
    (``report.intervals.Intervals``) the gain's CI is the paired bootstrap (same test patients, same seeds);
    without, a Welch t-interval over seeds.
    """
    rows = []
    for task, arch in panels(summary):
        panel = panel_rows(summary, task, arch)
        for nk in n_keys_in_order(panel):
            best = best_per_init(panel[panel["n_train"] == nk], sites)
            kinds = {label: init_site(r["init"], r["method"], sites) for label, r in best.items()}
            for ref, ref_kind in kinds.items():
                if ref_kind in (Site.SAME, "unlabelled"):
                    allowed = ("scratch", "imagenet", "xrv", RADIOMICS) + ((Site.OTHER,) if ref_kind == Site.SAME else ())
                elif every_init and ref_kind in ("imagenet", "xrv", Site.OTHER):
                    allowed = ("scratch",) if ref_kind == "imagenet" else ("scratch", "imagenet")
                else:
                    continue
                order = {k: i for i, k in enumerate(("scratch", "imagenet", "xrv", Site.OTHER, RADIOMICS))}
                comps = sorted((c for c, k in kinds.items() if k in allowed), key=lambda c: (order[kinds[c]], c))
                r = best[ref]
                for comp in comps:
                    c = best[comp]
                    if intervals is not None:
                        d = intervals.difference(r.name, c.name)
                        how, p, low90, high90 = d.method, d.p_value, d.low90, d.high90
                    else:
                        d = diff_ci(runs_behind(runs, r)["test_auroc"], runs_behind(runs, c)["test_auroc"])
                        how, p, low90, high90 = "t over seeds", math.nan, math.nan, math.nan
                    rows.append({
                        "task": task, "arch": arch, "n_train": nk, "N": r["N"],
                        "init": ref, "recipe": str(r["recipe"]), "auroc": r["test_auroc_mean"],
                        "versus": comp, "versus_recipe": str(c["recipe"]), "versus_auroc": c["test_auroc_mean"],
                        "gain": d.mean, "gain_ci_low": d.low, "gain_ci_high": d.high,
                        "gain_percent": 100.0 * d.mean / c["test_auroc_mean"], "gain_ci_method": how,
                        "gain_p": p, "gain_ci90_low": low90, "gain_ci90_high": high90,
                        "init_kind": str(ref_kind), "versus_kind": str(kinds[comp]),
                    })
    return pd.DataFrame(rows, columns=["task", "arch", "n_train", "N", "init", "recipe", "auroc", "versus",
                                       "versus_recipe", "versus_auroc", "gain", "gain_ci_low", "gain_ci_high",
                                       "gain_percent", "gain_ci_method", "gain_p", "gain_ci90_low", "gain_ci90_high",
                                       "init_kind", "versus_kind"])


def per_class_at_largest_n(summary: pd.DataFrame, runs: pd.DataFrame, per_class: pd.DataFrame,
                           sites: dict[str, str]) -> list[dict]:
    """For each multi-label (task, arch): label x init table of mean test AUROC at the largest N.

    Each init column is that init's best recipe (by macro AUROC) at that N.
    """
    out = []
    for task, arch in panels(summary):
        panel = panel_rows(summary, task, arch)
        if not (panel["task_kind"] == TaskKind.MULTILABEL).any():
            continue
        done = panel[panel["n_seeds"] > 0]
        if done.empty:
            continue
        nk = n_keys_in_order(done)[-1]
        best = best_per_init(done[done["n_train"] == nk], sites)
        columns, headers = {}, {}
        for label, row in best.items():
            pc = per_class[per_class["run_id"].isin(runs_behind(runs, row)["run_id"])]
            if pc.empty:
                continue
            columns[label] = pc.groupby("label")["auroc"].agg(["mean", "count"])
            headers[label] = str(row["recipe"])
        if not columns:
            continue
        table = pd.concat({k: v["mean"] for k, v in columns.items()}, axis=1)
        counts = pd.concat({k: v["count"] for k, v in columns.items()}, axis=1)
        out.append({"task": task, "arch": arch, "n_train": nk, "N": done.loc[done["n_train"] == nk, "N"].max(),
                    "table": table.sort_index(), "counts": counts.reindex(table.index).sort_index(),
                    "recipes": headers})
    return out


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Failed and skipped runs (and done runs without a test AUROC), grouped by reason."""
    bad = runs[runs["status"] != RunStatus.DONE].copy()
    undefined = runs[(runs["status"] == RunStatus.DONE) & runs["test_auroc"].isna()].copy()
    undefined["status"] = "done, no test AUROC"
    undefined["reason"] = "test AUROC undefined (e.g. no positive or no negative case in the test split)"
    rows = pd.concat([bad, undefined], ignore_index=True)
    if rows.empty:
        return pd.DataFrame(columns=["status", "role", "reason", "runs", "recipes", "n_train"])
    rows["reason_short"] = [short_reason(r) for r in rows["reason"]]
    out = []
    for (status, role, reason), g in rows.groupby(["status", "role", "reason_short"], sort=True):
        recipes = sorted(str(r) for r in g["recipe"].dropna().unique())
        ns = sorted(g["n_key"].unique(), key=lambda k: (k == "all", int(k) if k != "all" else 0))
        out.append({"status": status, "role": role, "reason": reason, "runs": len(g),
                    "recipes": ", ".join(recipes[:4]) + (f" (+{len(recipes) - 4} more)" if len(recipes) > 4 else ""),
                    "n_train": ", ".join(ns)})
    order = {RunStatus.FAILED: 0, RunStatus.SKIPPED: 1}
    out = pd.DataFrame(out)
    out["_order"] = [order.get(s, 2) for s in out["status"]]
    return out.sort_values(["_order", "runs"], ascending=[True, False], ignore_index=True).drop(columns="_order")


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:g}"
    return str(v)


def grid_axes(runs: pd.DataFrame, sites: dict[str, str]) -> dict[str, list[str]]:
    """The values each grid axis took in the store, in a readable order."""
    grid = runs[runs["role"] == RunRole.GRID]
    cnn = grid[grid["method"] != RADIOMICS]

    def uniq(values, key=None):
        found = sorted({v for v in values if not pd.isna(v)}, key=key)
        return [_fmt_value(v) for v in found]

    ns = sorted(grid["n_key"].unique(), key=lambda k: (k == "all", int(k) if k != "all" else 0))
    return {
        "task": uniq(grid["task"]),
        "method": [RADIOMICS_LABEL if m == RADIOMICS else ("CNN" if m == RunMethod.CNN else str(m))
                   for m in uniq(grid["method"])],
        "architecture": uniq(cnn["arch"]),
        "initialisation": [init_name(i, RunMethod.CNN, sites) for i in sorted(
            cnn["init"].dropna().unique(), key=lambda i: (SITE_ORDER.index(init_site(i, RunMethod.CNN, sites)), i))],
        "strategy": uniq(cnn["strategy"]),
        "LR policy": uniq(cnn["lr_policy"]),
        "dropout": uniq(cnn["dropout"], key=float),
        "N (requested training images)": list(ns),
        "seeds": uniq(grid["seed"], key=float),
    }

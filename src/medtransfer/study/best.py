"""``medtransfer study best``: the study's best recipe at one N, as a run folder ``predict`` can use.

The recipe is chosen by its mean VALIDATION AUROC over seeds, never by test: test is what
the study reports, and choosing on it would make the reported number optimistic. Candidates
are the done CNN grid runs of the current plan (rows of an earlier version of the spec, the
radiomics baseline and the sources are left out). Within the recipe, the seed with the best
validation AUROC is the model handed over.

A study deletes grid runs' weights unless the spec says ``keep_weights: true``. When they are
gone (or with ``--retrain``) the run is trained again from its stored config (same seed, same
data; a ``source:NAME`` init points at the study's own pretrained source); when they were
kept, its folder is copied.

``select_best`` is the choice (rows in, a value out); ``export_best`` reads the store and
writes the run folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import config_from_dict
from ..errors import MedtransferError
from ..kinds import Init, RunMethod, RunRole, RunStatus
from ..run_folder import RunFolder, disk_error, write_bytes_atomic
from .schema import STORE_FILE
from .store import Store

ALL = "all"


@dataclass(frozen=True)
class SeedRun:
    """One seed of a recipe: what the study recorded for it."""
    run_id: str
    seed: int
    val_auroc: float
    test_auroc: float | None
    run_dir: str            # relative to STUDY_DIR
    config_json: str


@dataclass(frozen=True)
class BestRecipe:
    task: str
    arch: str
    recipe: str
    n_train: int | str       # an int, or 'all'
    mean_val_auroc: float
    seeds: tuple[SeedRun, ...]
    n_candidates: int        # recipes compared at this N

    @property
    def best_seed(self) -> SeedRun:
        return max(self.seeds, key=lambda s: (s.val_auroc, -s.seed))

    def describe(self) -> str:
        return (f"best recipe at N={self.n_train} ({self.task}, {self.arch}): {self.recipe}: mean validation AUROC "
                f"{self.mean_val_auroc:.4f} over {len(self.seeds)} seed(s), best of {self.n_candidates} recipe(s) "
                "(test AUROC not used to choose)")


def parse_n(text: str | None) -> int | str | None:
    """``--n``: a positive integer, 'all', or None (the largest N the study ran)."""
    if text is None or str(text).strip().lower() == ALL:
        return None if text is None else ALL
    try:
        value = int(text)
    except ValueError:
        raise MedtransferError(f"--n must be a positive integer or 'all', got {text!r}") from None
    if value < 1:
        raise MedtransferError(f"--n must be a positive integer or 'all', got {text!r}")
    return value


def _n_of(row: dict) -> int | str:
    return ALL if row["n_train"] is None else int(row["n_train"])


def _n_order(n: int | str) -> float:
    return float("inf") if n == ALL else float(n)


def candidate_rows(rows: list[dict[str, Any]], plan_ids: set[str] | None) -> list[dict[str, Any]]:
    """Done CNN grid runs of the current plan with a defined validation AUROC."""
    return [r for r in rows
            if r["role"] == RunRole.GRID and r["method"] == RunMethod.CNN and r["status"] == RunStatus.DONE
            and r["val_auroc"] is not None and (plan_ids is None or r["run_id"] in plan_ids)]


def select_best(rows: list[dict[str, Any]], plan_ids: set[str] | None = None, n: int | str | None = None,
                task: str | None = None, where: str = "the study") -> BestRecipe:
    """The (task, arch, recipe) with the highest mean validation AUROC over seeds at N (default: the largest N)."""
    done = candidate_rows(rows, plan_ids)
    if not done:
        raise MedtransferError(f"{where} has no done CNN grid run with a validation AUROC: run `medtransfer study run` first")
    tasks = sorted({r["task"] for r in done})
    if task is None and len(tasks) > 1:
        raise MedtransferError(f"{where} has runs on {len(tasks)} tasks ({', '.join(tasks)}): pass --task to pick one")
    if task is not None:
        if task not in tasks:
            raise MedtransferError(f"--task {task}: no done run on that task in {where} (tasks: {', '.join(tasks)})")
        done = [r for r in done if r["task"] == task]
    ns = sorted({_n_of(r) for r in done}, key=_n_order)
    chosen_n = ns[-1] if n is None else n
    if chosen_n not in ns:
        raise MedtransferError(f"--n {n}: no done CNN run at that N in {where} (N with done runs: "
                               f"{', '.join(map(str, ns))})")
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in done:
        if _n_of(r) == chosen_n:
            groups.setdefault((r["task"], r["arch"], r["recipe"]), []).append(r)

    def mean_val(key):
        vals = [float(r["val_auroc"]) for r in groups[key]]
        return sum(vals) / len(vals)

    key = max(sorted(groups), key=mean_val)   # sorted first: a tie goes to the first recipe by name
    seeds = tuple(SeedRun(r["run_id"], int(r["seed"]), float(r["val_auroc"]),
                          None if r["test_auroc"] is None else float(r["test_auroc"]), r["run_dir"], r["config_json"])
                  for r in sorted(groups[key], key=lambda r: r["seed"]))
    return BestRecipe(task=key[0], arch=key[1], recipe=key[2], n_train=chosen_n, mean_val_auroc=mean_val(key),
                      seeds=seeds, n_candidates=len(groups))


@dataclass(frozen=True)
class ExportResult:
    best: BestRecipe
    seed: SeedRun
    action: str               # 'copied' | 'retrained'
    out: Path
    val_auroc: float | None   # of the run folder handed over (retrained: measured again)

    def __str__(self) -> str:
        lines = [self.best.describe()]
        s = self.seed
        if self.action == "copied":
            lines.append(f"seed {s.seed} (validation AUROC {s.val_auroc:.4f}): weights were kept; copied {s.run_dir} to {self.out}")
        else:
            now = "undefined" if self.val_auroc is None else f"{self.val_auroc:.4f}"
            lines.append(f"seed {s.seed}: retrained {s.run_dir} into {self.out} (validation AUROC {now}; "
                         f"the study recorded {s.val_auroc:.4f})")
        lines.append(f"use it: medtransfer predict --run {self.out} IMAGES... [--cam DIR]")
        return "\n".join(lines)


@dataclass(frozen=True)
class BestChoice:
    """Where to choose the best recipe: at training-set size ``n`` (None: the largest the study ran), within
    ``task`` (None: the study's only task)."""
    n: int | str | None = None
    task: str | None = None


def export_best(study_dir: Path, out: Path, choice: BestChoice = BestChoice(), retrain: bool = False,
                data_root: Path | None = None, overwrite: bool = False, echo: bool = True,
                train: Callable | None = None) -> ExportResult:
    """Choose the best recipe of ``study_dir`` and leave its best seed as a run folder in ``out``:
    copied when its weights were kept (and not ``retrain``), else trained again (``train``: runs.cnn.train_run)."""
    study_dir, out = Path(study_dir), Path(out)
    store_path = study_dir / STORE_FILE
    if not store_path.is_file():
        raise MedtransferError(f"{store_path} not found: {study_dir} is not a study folder "
                               "(written by `medtransfer study run --out STUDY_DIR`)")
    store = Store(store_path, read_only=True)   # choosing a recipe never writes the study's store
    plan = store.current_plan()
    rows = store.rows()
    best = select_best(rows, None if plan is None else plan[1], choice.n, choice.task, where=str(study_dir))
    seed = best.best_seed
    source = RunFolder(study_dir / seed.run_dir)
    if out.resolve() == source.path.resolve():
        raise MedtransferError(f"--out {out} is the study's own run folder: choose a folder outside {study_dir}")
    if source.has_weights and source.is_finished and not retrain:
        copy_run_folder(source, RunFolder(out), overwrite)
        return ExportResult(best, seed, "copied", out, seed.val_auroc)
    cfg = retrain_config(seed, rows, None if plan is None else plan[1], study_dir)
    if train is None:   # imported here: torch (seconds), which choosing and copying never need
        from ..runs.cnn import train_run as train
    metrics = train(cfg, out, data_root, overwrite=overwrite, echo=echo)
    return ExportResult(best, seed, "retrained", out, metrics.auroc("val"))


def copy_run_folder(source: RunFolder, target: RunFolder, overwrite: bool) -> None:
    """Every file of ``source`` into ``target``, metrics.json last (its presence means a complete folder)."""
    target.prepare(overwrite)
    files = sorted((p for p in source.path.iterdir() if p.is_file()), key=lambda p: p.name == RunFolder.METRICS)
    try:
        for path in files:   # the run folder's own atomic write: a failed copy leaves no temp file behind
            write_bytes_atomic(target / path.name, path.read_bytes())
    except OSError as err:
        raise disk_error(target.path, err) from None


def retrain_config(seed: SeedRun, rows: list[dict[str, Any]], plan_ids: set[str] | None, study_dir: Path):
    """The run's config as the study planned it, with a ``source:NAME`` init pointed at the study's source weights."""
    cfg = config_from_dict(json.loads(seed.config_json), origin=f"{study_dir} run {seed.run_id}")
    init = cfg.model.init
    if not init.is_source:
        return cfg
    name = init.source_name
    found = [r for r in rows if r["role"] == RunRole.SOURCE and r["recipe"] == f"source {name}"
             and r["arch"] == cfg.model.arch and (plan_ids is None or r["run_id"] in plan_ids)]
    done = [r for r in found if r["status"] == RunStatus.DONE]
    if not done:
        state = found[0]["status"] if found else "not in the store"
        raise MedtransferError(f"{study_dir}: source {name} ({cfg.model.arch}) is {state}: run `medtransfer study run` "
                               "to pretrain it before retraining a recipe that starts from it")
    weights = RunFolder(study_dir / done[-1]["run_dir"]).weights_path.resolve()   # config.yaml records where it started
    if not weights.is_file():
        raise MedtransferError(f"{weights} not found: the source {name} lost its weights; "
                               "run `medtransfer study run` again to pretrain it")
    cfg = cfg.model_copy(deep=True)
    cfg.model.init = Init.checkpoint(weights)
    return cfg

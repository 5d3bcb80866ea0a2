"""The Python API: what ``import medtransfer as mt`` offers a notebook, and what the command line calls.

    cfg = mt.load_config("examples/pneumoniamnist.yaml", overrides={"train.n_train": 200})
    metrics = mt.train(cfg, "runs/one")                              # -> RunMetrics (metrics.json)
    summary = mt.study.run("examples/quickstart.yaml", "studies/qs") # runs the grid, then writes the report
    answer = mt.read_answer("studies/qs")                            # answer.json as a typed Answer
    table = mt.summary("studies/qs")                                 # summary.csv's rows as a DataFrame
    advice = mt.advise("mydata.yaml", "advice", budget="10m")        # -> advice.json's path
    prediction = mt.predict("advice/best", ["a.png"], cam="cams")    # -> Prediction (.frame, .failures, ...)

Each entry point is what the matching CLI command runs (``cli.py`` only parses arguments), so a notebook and
the command line run the same code and write the same files. Everything works offline. A user's mistake is a
``MedtransferError`` with a one-line message (the CLI prints it and exits 2).

Importing this module imports the configs only (no torch, pandas, matplotlib or scikit-learn, nor the study
package, whose imports may grow): ``import medtransfer`` imports it, and each entry point imports what it
runs when it runs.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import TypedDict, Unpack   # typing.Unpack is Python 3.11+

from .config import RunConfig, resolve_data_root
from .config import load_config as load_config_file
from .errors import DataError, MedtransferError
from .kinds import ThresholdCriterion
from .tracking import DEFAULT_FOLDER

if TYPE_CHECKING:   # for the annotations only: importing them can cost seconds (torch, pandas)
    import pandas as pd

    from .inference import Prediction
    from .run_folder import RunMetrics
    from .study import StudySpec, StudySummary
    from .study.best import ExportResult


PathLike = str | os.PathLike
Overrides = Iterable[str] | Mapping[str, Any] | None

__all__ = ["Answer", "AnswerPanel", "BestRecipe", "EntryPoint", "Studies", "advise", "load_config", "load_spec",
           "predict", "read_answer", "report", "study", "summary", "train"]


class SubpackageNames:
    """For an API name that is also a subpackage's (``study``, ``train``, ``advise``, ``report``): a name the API
    object lacks is looked up in that subpackage, imported on first use, so ``medtransfer.train.loop`` and
    ``import medtransfer.advise.features as f`` still reach the package behind ``mt.train``. Private names are
    not handed on: tools probing ``_x`` / ``__x__`` (pydoc, copy, inspect) must not import torch."""
    package = ""

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(importlib.import_module(self.package), name)


class EntryPoint(SubpackageNames):
    """An API function under a subpackage's name (``mt.train``, ``mt.advise``, ``mt.report``): calling it calls
    the function, ``help()`` shows the function's signature and docstring, and any other name is the
    subpackage's (``SubpackageNames``)."""

    def __init__(self, function, package: str):
        functools.update_wrapper(self, function)
        self.package = package

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __get__(self, obj, objtype=None):   # a non-data descriptor, so pydoc and inspect list it as a routine
        return self

    def __repr__(self) -> str:
        return f"<medtransfer entry point {self.__name__}{inspect.signature(self.__wrapped__)}>"


# ------------------------------------------------------------------------------------------------ configs

def override_pairs(overrides: Overrides) -> list[str]:
    """``KEY=VALUE`` strings, as ``--set`` takes them, from a list of them or a mapping {dotted key: value}.
    A mapping's values are written as JSON (which YAML reads back as the same value), so ``{"model.init":
    "checkpoint:runs/a"}`` stays a string and ``{"train.lr": 1e-3}`` a number."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(str(v) if isinstance(v, os.PathLike) else v)}" for key, v in overrides.items()]
    return [str(pair) for pair in overrides]


def load_config(path: PathLike, overrides: Overrides = None) -> RunConfig:
    """A run config (the YAML ``medtransfer train`` takes), checked, with ``overrides`` applied: a list of
    ``"KEY=VALUE"`` strings (``--set``) or a mapping such as ``{"train.n_train": 200}``."""
    return load_config_file(path, override_pairs(overrides))


def load_spec(path: PathLike, overrides: Overrides = None) -> StudySpec:
    """A study spec (the YAML ``medtransfer study run`` takes), checked; ``overrides`` apply to the base and,
    except ``data.*`` / ``task.*`` keys, to every source. ``mt.study.run`` takes the spec's path."""
    from .study.spec import load_spec as load_spec_file

    return load_spec_file(path, override_pairs(overrides))


def _root(data_root: PathLike | None) -> Path:
    """The folder relative data paths start from: ``data_root``, else $MEDTRANSFER_DATA, else the default."""
    return resolve_data_root(None if data_root is None else str(data_root))


def mlflow_target(mlflow: str | bool | None, default: Path | None) -> str | None:
    """A tracking URI / folder from ``mlflow``: True means the default store (``default``), False / None none."""
    if mlflow is True:
        return None if default is None else str(default)
    return mlflow or None


# ------------------------------------------------------------------------------------------------- runs

def train(cfg: RunConfig | PathLike, out: PathLike, *, data_root: PathLike | None = None, overwrite: bool = False,
          echo: bool = True, mlflow: str | bool | None = None, check_leaks: bool = True) -> RunMetrics:
    """Train and test one recipe into the run folder ``out`` (``medtransfer train`` / ``pretrain``); returns
    its metrics (``.auroc("test")``, ``.task_kind``, ...), also written to ``out/metrics.json``.

    A test split with fewer than 30 patients of a class (``train.test_estimate: auto``) also gets an outer
    cross-validation estimate over the whole labelled set: ``metrics.details["test_estimate"]`` (read it typed
    with ``medtransfer.runs.outer_cv.TestEstimate.from_json``); the returned model and ``test`` block are the split's.

    ``cfg``: a ``RunConfig`` (``mt.load_config``) or a config path. ``echo``: print the log as well as writing
    ``train.log``. ``mlflow``: a tracking URI or folder, or True for ``./mlruns``. ``check_leaks``: refuse a
    ``checkpoint:`` init whose run was trained on this run's patients or images.
    """
    from .runs.cnn import train_run

    cfg = cfg if isinstance(cfg, RunConfig) else load_config(cfg)
    return train_run(cfg, Path(out), _root(data_root), overwrite=overwrite, echo=echo,
                     mlflow=mlflow_target(mlflow, Path(DEFAULT_FOLDER)), check_leaks=check_leaks)


def predict(run: PathLike, images: Iterable[PathLike], *, threshold: float | None = None,
            sensitivity: float | None = None, cam: PathLike | None = None, truth: Mapping[str, Any] | None = None,
            device: str = "auto") -> Prediction:
    """Score ``images`` with a finished run folder (``medtransfer predict``); nothing is printed or written
    but the Grad-CAM PNGs. Returns a ``Prediction``: ``.frame`` (one row per readable image: ``score_<label>``,
    ``predicted_<label>``, ``threshold_<label>``), ``.failures`` (unreadable images and why), ``.warnings``.

    The label uses the run's validation threshold unless ``threshold`` (a given value) or ``sensitivity``
    (chosen again on validation for at least that sensitivity). ``cam``: a folder for one Grad-CAM overlay
    per image (the frame's ``cam_mass_outside_centre`` says how much of each map lies outside the image centre,
    ``.cam_warning`` when most maps lie there: suspect a shortcut); ``truth``: {image path or file name: true
    label}, shown in the overlays' titles.
    """
    from .evaluate.threshold import Criterion
    from .inference import predict_files

    if threshold is not None and sensitivity is not None:
        raise MedtransferError("predict: give a threshold or a sensitivity, not both")
    criterion = (Criterion(ThresholdCriterion.GIVEN, threshold) if threshold is not None
                 else Criterion(ThresholdCriterion.SENSITIVITY, sensitivity) if sensitivity is not None else None)
    return predict_files(Path(run), [Path(p) for p in images], device=device, criterion=criterion,
                         cam_dir=None if cam is None else Path(cam), truth=truth)


class AdviseExtras(TypedDict, total=False):
    """:func:`advise`'s remaining keyword options."""
    echo: bool                                  # print the log as well as writing out/advise.log (default True)
    backbones: Iterable[str] | str | None       # published foundation backbones to compare (--backbone)


def advise(config: PathLike, out: PathLike, *, sources: Mapping[str, PathLike] | Iterable[str] | None = None,
           study: PathLike | None = None, budget: str | float = "10m", overrides: Overrides = None,
           data_root: PathLike | None = None, **extras: Unpack[AdviseExtras]) -> Path:
    """The recipe for your own data within a time budget (``medtransfer advise``): ranks the initialisations,
    searches recipes on train / validation, trains the pick into ``out/best`` and writes ``out/advice.json``
    and ``out/advice.html``; returns the path of advice.json.

    ``sources``: pretrained run folders to compare, {name: run folder} (or ``"NAME=RUN_DIR"`` strings);
    ``study``: a finished study whose pretrained sources join them. ``backbones``: published foundation backbones
    (``hf:microsoft/rad-dino``, ``timm:hf-hub:ORG/NAME``, ...) with their own weights. ``budget``: ``"10m"``,
    ``"90s"`` or seconds.
    """
    from .advise.candidates import parse_backbones, parse_sources
    from .advise.command import advise as advise_workflow
    from .advise.search import parse_budget

    pairs = ([f"{name}={path}" for name, path in sources.items()] if isinstance(sources, Mapping)
             else [sources] if isinstance(sources, str) else list(sources or []))
    unknown = sorted(set(extras) - AdviseExtras.__optional_keys__)
    if unknown:
        raise TypeError(f"advise() got an unexpected keyword argument {unknown[0]!r}")
    backbones = extras.get("backbones")
    archs = parse_backbones([backbones] if isinstance(backbones, str) else list(backbones or []))
    return advise_workflow(config, out, _root(data_root), parse_sources(pairs), None if study is None else Path(study),
                           parse_budget(budget), override_pairs(overrides), echo=extras.get("echo", True),
                           backbones=archs)


# ------------------------------------------------------------------------------------------------ studies

class Studies(SubpackageNames):
    """``mt.study``: run a study and write its report (``run``), its progress (``status``), its best recipe
    as a run folder (``best``). Any other attribute is the ``medtransfer.study`` package's (``mt.study.
    StudyOptions``), so code that reaches the package as ``medtransfer.study.X`` keeps working."""
    package = "medtransfer.study"

    def __repr__(self) -> str:
        return "<mt.study: run, status, best (and the medtransfer.study package's names)>"

    def run(self, spec: PathLike, out: PathLike | None = None, *, overrides: Overrides = None,
            data_root: PathLike | None = None, report: bool = True, **options: Any) -> StudySummary:
        """Run (or resume) every run of the study ``spec`` (a study YAML's path) into ``out``, then write its
        report as ``medtransfer study run`` does: ``out/report.html``, ``answer.json``, ``summary.csv`` and the
        figures (``report=False`` skips it). Returns the ``StudySummary`` (``.counts``, ``.report``).

        ``overrides`` apply as in ``mt.load_spec``. ``options`` are ``StudyOptions`` fields: ``executor``
        ("local" or "ray"), ``workers``, ``ray_address``, ``retry_failed``, ``pack``, ``dry_run`` (plan and
        time estimate only, in ``.text``; no ``out`` needed), ``mlflow`` (a URI / folder, or True for
        ``out/mlruns``) and ``console`` (a rich Console for progress, default stderr). A report that cannot be
        written is one line on the console and ``.report`` stays None: the results are safe in the store, and
        ``mt.report(out)`` writes it later.
        """
        from .study import StudyOptions, run_study

        known = {f.name for f in fields(StudyOptions)} - {"data_root", "overrides"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"study.run() got an unexpected keyword argument {unknown[0]!r} "
                            f"(options: {', '.join(sorted(known))})")
        options["mlflow"] = mlflow_target(options.get("mlflow"), None if out is None else Path(out) / DEFAULT_FOLDER)
        opts = StudyOptions(data_root=None if data_root is None else str(data_root),
                            overrides=tuple(override_pairs(overrides)), **options)
        summary = run_study(spec, out, opts)
        if report and not opts.dry_run:
            summary.report = _report_after_study(summary.study_dir, opts.console)
        return summary

    def status(self, study_dir: PathLike) -> str:
        """Counts by status, progress per axis and failure reasons (``medtransfer study status``), as text."""
        from .study import study_status

        return study_status(study_dir)

    def best(self, study_dir: PathLike, out: PathLike, *, n: int | str | None = None, task: str | None = None,
             retrain: bool = False, data_root: PathLike | None = None, overwrite: bool = False,
             echo: bool = True) -> ExportResult:
        """The best recipe at ``n`` (default: the largest N; ``"all"``) by mean validation AUROC over seeds, as
        a run folder ``out`` that ``mt.predict`` can use (``medtransfer study best``): its best seed copied
        when the weights were kept, else trained again (``retrain`` forces that)."""
        from .study.best import BestChoice, export_best, parse_n

        choice = BestChoice(parse_n(None if n is None else str(n)), task)
        return export_best(Path(study_dir), Path(out), choice, retrain=retrain, data_root=_root(data_root),
                           overwrite=overwrite, echo=echo)


study = Studies()


def _report_after_study(study_dir: Path, console) -> Path | None:
    """report.html for the runs just recorded. A report error is one line: the results are safe in the
    store (and ``report`` writes it later), so the study still succeeds."""
    from rich.console import Console

    try:
        return report(study_dir)
    except MedtransferError as err:
        (console or Console(stderr=True)).print(f"report: not written: {err}", markup=False, highlight=False)
        return None


def report(study_dir: PathLike, *, all_versions: bool = False, force: bool = False) -> Path:
    """(Re)write a study's report.html, answer.json, summary.csv and figures (``medtransfer report``); returns
    report.html's path. ``all_versions``: include the runs of earlier versions of the spec; ``force``: replace a
    report made from more done runs than the store now holds."""
    from .report import write_report

    return Path(write_report(study_dir, all_versions=all_versions, force=force))


def summary(study_dir: PathLike) -> pd.DataFrame:
    """summary.csv's table, computed from the study's store: one row per (task, arch, method, recipe, N) with
    the seeds' mean test AUROC and its 95% interval (``ci_method`` says which)."""
    from .report import study_summary

    return study_summary(study_dir)


# ------------------------------------------------------------------------------------------------ answer

def _count(value) -> int | None:
    return None if value is None else int(value)


def _num(value) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class BestRecipe:
    """The best recipe of a panel at one N (answer.json ``best_recipe_per_n``): chosen on validation, its test
    AUROC over the seeds with the 95% interval, and every recipe within noise of it."""
    n_train: int | str | None          # the requested N ('all' for the whole training split)
    N: int | None                      # images actually trained on (median over seeds)
    recipe: str
    n_seeds: int | None
    val_auroc: float | None
    test_auroc: float | None
    ci_low: float | None
    ci_high: float | None
    n_patients: int | None = None
    within_noise: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> BestRecipe:
        return cls(n_train=row.get("n_train"), N=_count(row.get("N")), recipe=str(row.get("recipe")),
                   n_seeds=_count(row.get("n_seeds")), val_auroc=_num(row.get("val_auroc")),
                   test_auroc=_num(row.get("test_auroc")), ci_low=_num(row.get("ci_low")),
                   ci_high=_num(row.get("ci_high")), n_patients=_count(row.get("n_patients")),
                   within_noise=tuple(row.get("within_noise") or ()), raw=dict(row))


@dataclass(frozen=True)
class AnswerPanel:
    """One (task, arch) of the answer: its metric's name ("test AUROC" for a binary task, "test macro AUROC"
    otherwise), the best recipe at each N, and the rest of the panel (gains, inits, crossover) as answer.json
    holds it."""
    task: str
    arch: str | None
    task_kind: str | None
    metric: str
    best: tuple[BestRecipe, ...]
    gains: tuple[Mapping[str, Any], ...] = ()
    inits: tuple[Mapping[str, Any], ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def best_at_largest_n(self) -> BestRecipe | None:
        """The best recipe at the largest N studied (the last row), or None when nothing finished."""
        return self.best[-1] if self.best else None

    @classmethod
    def from_json(cls, panel: Mapping[str, Any]) -> AnswerPanel:
        return cls(task=str(panel.get("task")), arch=panel.get("arch"), task_kind=panel.get("task_kind"),
                   metric=str(panel.get("metric", "test AUROC")),
                   best=tuple(BestRecipe.from_json(r) for r in panel.get("best_recipe_per_n") or ()),
                   gains=tuple(panel.get("gains") or ()), inits=tuple(panel.get("inits") or ()), raw=dict(panel))


@dataclass(frozen=True)
class Answer:
    """A study's answer.json, typed: the study's name, one ``AnswerPanel`` per (task, arch), what was skipped
    and the cells with few seeds. Keys it does not name are kept in ``raw`` (answer.json grows; reading an
    older or newer one never fails on a key)."""
    study: str | None
    generated_at: str | None
    panels: tuple[AnswerPanel, ...]
    skipped: tuple[Mapping[str, Any], ...] = ()
    few_seeds: tuple[Mapping[str, Any], ...] = ()
    targets: tuple[float, ...] = ()
    methods: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def panel(self, task: str | None = None, arch: str | None = None) -> AnswerPanel:
        """The panel of ``task`` (and ``arch``), or the only one; a one-line error naming the panels otherwise."""
        found = [p for p in self.panels if (task is None or p.task == task) and (arch is None or p.arch == arch)]
        if len(found) != 1:
            names = ", ".join(f"{p.task} / {p.arch}" for p in self.panels) or "none"
            raise MedtransferError(f"answer: {len(found)} panels match task={task!r} arch={arch!r} (panels: {names})")
        return found[0]

    @classmethod
    def from_json(cls, answer: Mapping[str, Any]) -> Answer:
        return cls(study=answer.get("study"), generated_at=answer.get("generated_at"),
                   panels=tuple(AnswerPanel.from_json(p) for p in answer.get("panels") or ()),
                   skipped=tuple(answer.get("skipped") or ()), few_seeds=tuple(answer.get("few_seeds") or ()),
                   targets=tuple(float(t) for t in answer.get("targets") or ()),
                   methods=dict(answer.get("methods") or {}), raw=dict(answer))


def read_answer(study_dir: PathLike) -> Answer:
    """The study's answer.json (written with its report) as an ``Answer``; a one-line error when it is missing
    or unreadable."""
    path = Path(study_dir) / "answer.json"
    if not path.is_file():
        raise MedtransferError(f"{path} not found: write the report first (`medtransfer report {study_dir}` or "
                               "mt.report)")
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read it as JSON ({err})") from None
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(payload).__name__}")
    return Answer.from_json(payload)

"""Expand a study spec into the runs it stands for, each with a deterministic id.

A run's id is the first 16 hex digits of the sha256 of the canonical JSON (sorted keys)
of the part of its resolved config that can change its result. ``model.init: source:NAME``
stays symbolic in what is hashed, together with the source's own run id, so the ids do not
change when STUDY_DIR moves, and do change when the source they start from changes.
A CNN run's id leaves out the ``radiomics`` section; a radiomics baseline run's id holds only
data, task, train.n_train, train.seed and radiomics. So tuning the baseline never
invalidates a finished CNN run, and a new CNN recipe never reruns the baseline.

``baselines: [radiomics]`` adds one baseline run per distinct (data, task, N, seed,
radiomics settings) among the CNN grid runs left after the excludes: one per (task, N, seed)
for an ordinary grid, not one per CNN recipe.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import PROBE_UNUSED, ModelConfig, RunConfig, TrainConfig, canonical_json, config_from_dict, hashed_view
from ..errors import ConfigError
from ..kinds import SCRATCH, Init, InitKind, RunMethod, RunRole, Strategy
from .spec import StudySpec, get_dotted, matches, set_dotted, source_config_tree

RADIOMICS_RECIPE = "radiomics + LR"   # the report's label for the baseline curve
# Grid axes a baseline run follows (any other axis is a CNN-only key and collapses onto one baseline run)
_BASELINE_AXIS_PREFIXES = ("data", "task", "radiomics")
_BASELINE_TRAIN_KEYS = ("n_train", "seed", "selection", "cv_folds")
# Axes that the report already shows as their own dimension; any other varying axis joins the recipe label.
_DIMENSION_AXES = ("model.arch", "model.init", "train.strategy", "train.lr_policy", "model.dropout",
                   "train.n_train", "train.seed")


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    role: RunRole
    config: RunConfig                  # model.init kept symbolic (source:NAME)
    task: str                          # e.g. 'nih14-mini:binary:Pneumonia'
    recipe: str                        # e.g. 'chest / gradual / one_cycle'
    run_dir: str                       # relative to STUDY_DIR
    axes: dict[str, Any] = field(default_factory=dict)   # this run's value on each grid axis
    source: str | None = None          # grid: run_id of the source it starts from; source: its name
    method: RunMethod = RunMethod.CNN

    @property
    def config_json(self) -> str:
        return canonical_json(self.config.model_dump(mode="json"))

    @property
    def is_baseline(self) -> bool:
        return self.method is not RunMethod.CNN


@dataclass
class Plan:
    spec: StudySpec
    sources: list[PlannedRun]
    runs: list[PlannedRun]

    @property
    def all_runs(self) -> list[PlannedRun]:
        return self.sources + self.runs

    def source_by_id(self) -> dict[str, PlannedRun]:
        return {s.run_id: s for s in self.sources}


def run_id_of(payload: dict) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def hashed_config(cfg: RunConfig, method: RunMethod = RunMethod.CNN) -> dict:
    """The part of a config that goes into the run id: what can change the run's result."""
    tree = hashed_view(cfg)
    if method is RunMethod.CNN:
        tree.pop("radiomics", None)
        return tree
    return {"data": tree["data"], "task": tree["task"], "radiomics": tree["radiomics"],
            "train": {k: tree["train"][k] for k in _BASELINE_TRAIN_KEYS if k in tree["train"]}}


def radiomics_config(cnn: RunConfig) -> RunConfig:
    """The baseline run paired with a CNN grid run: its data, task, N, seed and radiomics settings.

    ``image_size`` is kept only so the run reuses the CNN runs' image cache to draw the splits (the
    features are computed at ``radiomics.image_size``); model (scratch: nothing to download) and the
    other train keys are defaults, unused and not hashed.
    """
    return RunConfig(data=cnn.data.model_copy(deep=True), task=cnn.task.model_copy(deep=True),
                     image_size=cnn.image_size, model=ModelConfig(init=SCRATCH),
                     train=TrainConfig(n_train=cnn.train.n_train, seed=cnn.train.seed,
                                       selection=cnn.train.selection, cv_folds=cnn.train.cv_folds),
                     radiomics=cnn.radiomics.model_copy(deep=True))


def dataset_name(cfg: RunConfig) -> str:
    """A short dataset label: the medmnist flag, or the folder the data path names."""
    if cfg.data.source == "medmnist":
        return cfg.data.name or "medmnist"
    path = Path(cfg.data.path or "data")
    return (path.parent.name or path.stem) if path.suffix else path.name


def task_label(cfg: RunConfig) -> str:
    parts = [dataset_name(cfg), cfg.task.kind]
    if cfg.task.positive:
        parts.append(cfg.task.positive)
    return ":".join(parts)


def init_label(init: Init) -> str:
    match init.kind:
        case InitKind.SOURCE:
            return init.source_name
        case InitKind.CHECKPOINT:
            return "checkpoint " + init.path.name
    return str(init)


def recipe_label(cfg: RunConfig, axes: dict[str, Any], varying: list[str]) -> str:
    """'chest / gradual / one_cycle', plus dropout and any other axis that varies in the grid. A probe is
    'chest / probe': it has no LR policy, no dropout and no other key it does not read (``PROBE_UNUSED``)."""
    probe = cfg.train.strategy == Strategy.PROBE
    parts = [init_label(cfg.model.init), cfg.train.strategy] + ([] if probe else [cfg.train.lr_policy])
    if "model.dropout" in varying and not probe:
        parts.append(f"dropout {cfg.model.dropout:g}")
    for axis in varying:
        if axis in _DIMENSION_AXES or axis == "task" or axis.startswith(("task.", "data", "radiomics")):
            continue
        if probe and axis in {f"train.{k}" for k in PROBE_UNUSED}:
            continue
        value = axes[axis]
        parts.append(f"{axis.rsplit('.', 1)[-1]} {value if not isinstance(value, dict) else canonical_json(value)}")
    return " / ".join(parts)


def expand(spec: StudySpec, origin: str = "study", pack: int = 1) -> Plan:
    """The cartesian product of the grid over ``base``, minus excluded combinations, sources first.

    ``pack`` > 1 (``study run --pack K``) is written into every CNN grid run's ``train.pack``: a fused
    pack's results differ from unpacked ones by rounding, so, like ``train.threads``, it must be part
    of the run id, and a study resumed with another ``--pack`` runs new ids instead of mixing the two.
    Sources and baselines are never packed and keep their ids.
    """
    axes = list(spec.grid)
    varying = [a for a in axes if len(spec.grid[a]) > 1]
    _check_base(spec, origin)
    sources: dict[tuple[str, str | None], PlannedRun] = {}
    runs: list[PlannedRun] = []
    combos: list[tuple[RunConfig, dict]] = []   # every combination kept, also those a CNN run shares
    seen: set[str] = set()
    for values in itertools.product(*(spec.grid[a] for a in axes)):
        combo = dict(zip(axes, values))
        if any(matches(rule, combo) for rule in spec.exclude):
            continue
        tree = copy.deepcopy(spec.base)
        for axis, value in combo.items():
            set_dotted(tree, axis, value)
        if pack > 1:
            set_dotted(tree, "train.pack", pack)
        where = ", ".join(f"{a}={_short(v)}" for a, v in combo.items()) or "base"
        shared_test_split(tree, f"{origin}: grid run ({where})")
        cfg = config_from_dict(tree, origin=f"{origin}: grid run ({where})")
        combos.append((cfg, combo))
        payload = {"method": RunMethod.CNN.value, "role": RunRole.GRID.value, "config": hashed_config(cfg)}
        source_id = None
        if cfg.model.init.is_source:
            src = _source_for(spec, cfg, sources, origin)
            source_id = src.run_id
            payload["source_run_id"] = source_id
        run_id = run_id_of(payload)
        if run_id in seen:  # two combos resolving to the same config, e.g. an axis equal to the base value
            continue
        seen.add(run_id)
        runs.append(PlannedRun(run_id=run_id, role=RunRole.GRID, config=cfg, task=task_label(cfg),
                               recipe=recipe_label(cfg, combo, varying), run_dir=f"runs/{run_id}",
                               axes=combo, source=source_id))
    if not runs:
        raise ConfigError(f"{origin}: exclude: the rules drop every run of the grid")
    if RunMethod.RADIOMICS in spec.baselines:
        runs.extend(_baseline_runs(combos, varying))
    return Plan(spec=spec, sources=list(sources.values()), runs=runs)


def _baseline_runs(combos: list[tuple[RunConfig, dict]], varying: list[str]) -> list[PlannedRun]:
    """One radiomics run per distinct (data, task, N, seed, radiomics settings) of the grid."""
    out: dict[str, PlannedRun] = {}
    for grid_cfg, combo in combos:
        cfg = radiomics_config(grid_cfg)
        run_id = run_id_of({"method": RunMethod.RADIOMICS.value, "role": RunRole.GRID.value,
                            "config": hashed_config(cfg, RunMethod.RADIOMICS)})
        if run_id in out:
            continue
        axes = {a: v for a, v in combo.items() if is_baseline_axis(a)}
        extra = [f"{a.rsplit('.', 1)[-1]} {_short(axes[a])}" for a in varying if a.startswith("radiomics")]
        out[run_id] = PlannedRun(run_id=run_id, role=RunRole.GRID, config=cfg, task=task_label(cfg),
                                 recipe=" / ".join([RADIOMICS_RECIPE] + extra), run_dir=f"runs/{run_id}",
                                 axes=axes, method=RunMethod.RADIOMICS)
    return list(out.values())


def is_baseline_axis(axis: str) -> bool:
    """True for the grid axes a baseline run follows: data, task, radiomics, train.n_train, train.seed."""
    head = axis.split(".", 1)[0]
    return head in _BASELINE_AXIS_PREFIXES or axis in tuple(f"train.{k}" for k in _BASELINE_TRAIN_KEYS)


def _short(value: Any) -> str:
    return canonical_json(value) if isinstance(value, (dict, list)) else str(value)


def shared_test_split(tree: dict, origin: str) -> None:
    """Set ``train.test_estimate: split`` on a study's run: every grid run is tested on one shared test split,
    because nesting each in outer cross-validation (``runs.outer_cv``) would cost train.outer_folds times the
    grid; the report says when that split is small. The key is not part of a run id, so no id changes. A spec
    asking for ``outer_cv`` is refused with the way to get it for the recipe the study chooses."""
    asked = get_dotted(tree, "train.test_estimate")
    if asked not in (None, "auto", "split"):
        raise ConfigError(f"{origin}: train.test_estimate={asked}: a study tests every run on one shared test split "
                          "(outer cross-validation of every grid run would cost train.outer_folds times the grid); "
                          "leave the key out and estimate the recipe it chooses with `medtransfer train` "
                          "(train.test_estimate=outer_cv)")
    set_dotted(tree, "train.test_estimate", "split")


def _check_base(spec: StudySpec, origin: str) -> None:
    """Blame ``base`` for a problem no axis touches (e.g. a missing data section)."""
    tree = copy.deepcopy(spec.base)
    for axis, values in spec.grid.items():
        set_dotted(tree, axis, values[0])
    try:
        RunConfig.model_validate(tree)
    except ValidationError as err:
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            touched = not loc or any(loc == a or loc.startswith(a + ".") or a.startswith(loc + ".") for a in spec.grid)
            if not touched:
                config_from_dict(spec.base, origin=f"{origin}: base")  # raises with the usual one-line message
                raise ConfigError(f"{origin}: base: '{loc}': {e['msg']}") from None


def _source_for(spec: StudySpec, run_cfg: RunConfig, planned: dict, origin: str) -> PlannedRun:
    """The source instance this run starts from: one per arch when the source follows the grid's arch."""
    name = run_cfg.model.init.source_name
    given = spec.sources[name]
    follows_grid = get_dotted(given, "model.arch") is None and "model.arch" in spec.grid
    key = (name, run_cfg.model.arch if follows_grid else None)
    if key not in planned:
        tree = copy.deepcopy(source_config_tree(given))
        if "image_size" not in tree and "image_size" in spec.base:
            tree["image_size"] = spec.base["image_size"]
        if get_dotted(tree, "train.selection") is None:
            # a source is pretraining, not a recipe to choose: it keeps its holdout selection (and its run id)
            # unless its entry asks for cv
            set_dotted(tree, "train.selection", "holdout")
        shared_test_split(tree, f"{origin}: sources.{name}")
        if get_dotted(tree, "model.arch") is None:
            arch = run_cfg.model.arch if follows_grid else get_dotted(spec.base, "model.arch")
            if arch is not None:
                set_dotted(tree, "model.arch", arch)
        cfg = config_from_dict(tree, origin=f"{origin}: sources.{name}")
        if cfg.train.strategy == Strategy.PROBE:
            raise ConfigError(f"{origin}: sources.{name}: train.strategy=probe trains no backbone, and a source is "
                              "pretrained to give its backbone to the grid runs: use full, gradual or frozen there "
                              "(probe belongs on the grid's train.strategy axis)")
        run_id = run_id_of({"method": RunMethod.CNN.value, "role": RunRole.SOURCE.value, "name": name,
                            "config": hashed_config(cfg)})
        # named by run id as well as name: two specs (or an edited and reverted one) defining a source of
        # the same name in one STUDY_DIR never share a folder, so a grid run loads the weights of the
        # config its own id was hashed from, never those of another source that happened to be trained last
        # an arch naming a repository (hf:ORG/NAME) keeps its slash out of the path: one folder per source
        arch = cfg.model.arch.replace("/", "--")
        folder = f"sources/{name}-{arch}-{run_id}" if follows_grid else f"sources/{name}-{run_id}"
        planned[key] = PlannedRun(run_id=run_id, role=RunRole.SOURCE, config=cfg, task=task_label(cfg),
                                  recipe=f"source {name}", run_dir=folder, source=name)
    src = planned[key]
    if src.config.model.arch != run_cfg.model.arch:
        raise ConfigError(f"{origin}: model.init source:{name} is a {src.config.model.arch} but a grid run uses "
                          f"model.arch={run_cfg.model.arch}: drop model.arch from sources.{name} (it is then "
                          "pretrained per arch) or exclude the combination")
    return src


def per_axis_counts(runs: list[PlannedRun], spec: StudySpec) -> dict[str, list[tuple[Any, int]]]:
    """For each axis, how many runs take each of its values (after excludes); see ``runs_on_axis``."""
    out = {}
    for axis, values in spec.grid.items():
        on_axis = runs_on_axis(runs, axis)
        out[axis] = [(v, sum(1 for r in on_axis if canonical_json(r.axes[axis]) == canonical_json(v))) for v in values]
    return out


def runs_on_axis(runs: list[PlannedRun], axis: str) -> list[PlannedRun]:
    """The runs an axis is counted over: baseline runs for a ``radiomics.*`` axis (the CNN runs
    collapse over it), CNN runs for every other axis (baselines are counted apart)."""
    baseline_axis = axis.split(".", 1)[0] == RunMethod.RADIOMICS
    return [r for r in runs if r.is_baseline == baseline_axis]


def baseline_counts(runs: list[PlannedRun]) -> dict[str, dict[str, int]]:
    """Per baseline method: runs per requested N (in grid order)."""
    out: dict[str, dict[str, int]] = {}
    for r in runs:
        if r.is_baseline:
            per_n = out.setdefault(r.method, {})
            per_n[str(r.config.train.n_train)] = per_n.get(str(r.config.train.n_train), 0) + 1
    return out

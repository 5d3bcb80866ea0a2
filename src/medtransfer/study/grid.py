"""Expand a study spec into the runs it stands for, each with a deterministic id.

A run's id is the first 16 hex digits of the sha256 of the canonical JSON (sorted keys)
of its resolved config. ``model.init: source:NAME`` stays symbolic in what is hashed,
together with the source's own run id, so the ids do not change when STUDY_DIR moves,
and do change when the source they start from changes.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import RunConfig, config_from_dict
from ..errors import ConfigError
from .spec import StudySpec, get_dotted, matches, set_dotted, source_config_tree

METHOD = "cnn"
# Axes that the report already shows as their own dimension; any other varying axis joins the recipe label.
_DIMENSION_AXES = ("model.arch", "model.init", "train.strategy", "train.lr_policy", "model.dropout",
                   "train.n_train", "train.seed")


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    role: str                          # 'source' | 'grid'
    config: RunConfig                  # model.init kept symbolic (source:NAME)
    task: str                          # e.g. 'nih14-mini:binary:Pneumonia'
    recipe: str                        # e.g. 'chest / gradual / one_cycle'
    run_dir: str                       # relative to STUDY_DIR
    axes: dict[str, Any] = field(default_factory=dict)   # this run's value on each grid axis
    source: str | None = None          # grid: run_id of the source it starts from; source: its name
    method: str = METHOD

    @property
    def config_json(self) -> str:
        return canonical_json(self.config.model_dump(mode="json"))


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


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def run_id_of(payload: dict) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


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


def init_label(init: str) -> str:
    if init.startswith("source:"):
        return init.split(":", 1)[1]
    if init.startswith("checkpoint:"):
        return "checkpoint " + Path(init.split(":", 1)[1]).name
    return init


def recipe_label(cfg: RunConfig, axes: dict[str, Any], varying: list[str]) -> str:
    """'chest / gradual / one_cycle', plus dropout and any other axis that varies in the grid."""
    parts = [init_label(cfg.model.init), cfg.train.strategy, cfg.train.lr_policy]
    if "model.dropout" in varying:
        parts.append(f"dropout {cfg.model.dropout:g}")
    for axis in varying:
        if axis in _DIMENSION_AXES or axis == "task" or axis.startswith(("task.", "data")):
            continue
        value = axes[axis]
        parts.append(f"{axis.rsplit('.', 1)[-1]} {value if not isinstance(value, dict) else canonical_json(value)}")
    return " / ".join(parts)


def expand(spec: StudySpec, origin: str = "study") -> Plan:
    """The cartesian product of the grid over ``base``, minus excluded combinations, sources first."""
    axes = list(spec.grid)
    varying = [a for a in axes if len(spec.grid[a]) > 1]
    _check_base(spec, origin)
    sources: dict[tuple[str, str | None], PlannedRun] = {}
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for values in itertools.product(*(spec.grid[a] for a in axes)):
        combo = dict(zip(axes, values))
        if any(matches(rule, combo) for rule in spec.exclude):
            continue
        tree = copy.deepcopy(spec.base)
        for axis, value in combo.items():
            set_dotted(tree, axis, value)
        where = ", ".join(f"{a}={_short(v)}" for a, v in combo.items()) or "base"
        cfg = config_from_dict(tree, origin=f"{origin}: grid run ({where})")
        payload = {"method": METHOD, "role": "grid", "config": cfg.model_dump(mode="json")}
        source_id = None
        if cfg.model.init.startswith("source:"):
            src = _source_for(spec, cfg, sources, origin)
            source_id = src.run_id
            payload["source_run_id"] = source_id
        run_id = run_id_of(payload)
        if run_id in seen:  # two combos resolving to the same config, e.g. an axis equal to the base value
            continue
        seen.add(run_id)
        runs.append(PlannedRun(run_id=run_id, role="grid", config=cfg, task=task_label(cfg),
                               recipe=recipe_label(cfg, combo, varying), run_dir=f"runs/{run_id}",
                               axes=combo, source=source_id))
    if not runs:
        raise ConfigError(f"{origin}: exclude: the rules drop every run of the grid")
    return Plan(spec=spec, sources=list(sources.values()), runs=runs)


def _short(value: Any) -> str:
    return canonical_json(value) if isinstance(value, (dict, list)) else str(value)


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
    name = run_cfg.model.init.split(":", 1)[1]
    given = spec.sources[name]
    follows_grid = get_dotted(given, "model.arch") is None and "model.arch" in spec.grid
    key = (name, run_cfg.model.arch if follows_grid else None)
    if key not in planned:
        tree = copy.deepcopy(source_config_tree(given))
        if "image_size" not in tree and "image_size" in spec.base:
            tree["image_size"] = spec.base["image_size"]
        if get_dotted(tree, "model.arch") is None:
            arch = run_cfg.model.arch if follows_grid else get_dotted(spec.base, "model.arch")
            if arch is not None:
                set_dotted(tree, "model.arch", arch)
        cfg = config_from_dict(tree, origin=f"{origin}: sources.{name}")
        folder = f"sources/{name}-{cfg.model.arch}" if follows_grid else f"sources/{name}"
        run_id = run_id_of({"method": METHOD, "role": "source", "name": name, "config": cfg.model_dump(mode="json")})
        planned[key] = PlannedRun(run_id=run_id, role="source", config=cfg, task=task_label(cfg),
                                  recipe=f"source {name}", run_dir=folder, source=name)
    src = planned[key]
    if src.config.model.arch != run_cfg.model.arch:
        raise ConfigError(f"{origin}: model.init source:{name} is a {src.config.model.arch} but a grid run uses "
                          f"model.arch={run_cfg.model.arch}: drop model.arch from sources.{name} (it is then "
                          "pretrained per arch) or exclude the combination")
    return src


def per_axis_counts(runs: list[PlannedRun], spec: StudySpec) -> dict[str, list[tuple[Any, int]]]:
    """For each axis, how many runs take each of its values (after excludes)."""
    out = {}
    for axis, values in spec.grid.items():
        out[axis] = [(v, sum(1 for r in runs if canonical_json(r.axes[axis]) == canonical_json(v))) for v in values]
    return out
